#!/usr/bin/env bash
# The VM's startup script (metadata startup-script, set by create_gpu_instance.sh / run_on_gcp_gpu.sh): runs
# as root at every boot. After a spot preemption stopped the VM, starting it again lands here: each job that
# run_on_gcp_gpu.sh recorded (~USER/backpack/gcp_job.env) and that did not finish is rerun as its user by
# `gcp/job.sh resume`, which restores out_dir from the bucket if needed and trains with --init_from resume.
# On a VM where no job was started (create_gpu_instance.sh alone) it does nothing.
set -euo pipefail
shopt -s nullglob
for env_file in ${BACKPACK_JOB_GLOB:-/home/*/backpack/gcp_job.env}; do
    repo=$(dirname "$env_file")
    owner=$(stat -c %U "$env_file")
    echo "backpack startup: job recorded in $env_file (user $owner)"
    if [ "$(id -un)" = "$owner" ]; then
        bash "$repo/gcp/job.sh" resume
    else
        runuser -l "$owner" -c "bash '$repo/gcp/job.sh' resume"
    fi
done
