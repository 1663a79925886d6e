#!/usr/bin/env bash
# Create a GPU VM on Google Cloud from a Deep Learning VM PyTorch image (driver, CUDA and torch installed):
#
#   ./create_gpu_instance.sh [--instance NAME] [--project ID] [--zone Z] [--gpu-type T] [--gpu-count N]
#                            [--machine-type M] [--spot | --on-demand] [--disk-size GB] [--image-family F] [--dry-run]
#
# Defaults: one NVIDIA L4 (g2-standard-8) in us-central1-a, spot, a 200 GB disk; each setting can also come
# from the environment (GCP_PROJECT, GCP_ZONE, ... : see gcp/common.sh). An instance that exists already is
# left as it is. Then: ./connect_gcp_gpu.sh --instance NAME, and train as in the README. The VM gets
# gcp/startup.sh as its startup script, which does nothing unless run_on_gcp_gpu.sh started a job on it.
set -euo pipefail
. "$(dirname "$0")/gcp/common.sh"

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; }  # the comment above

while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
    esac
    parse_common_flag "$@"
    [ "$SHIFT" != 0 ] || die "unknown argument $1 (see --help)"
    shift "$SHIFT"
done
GCP_INSTANCE=${GCP_INSTANCE:-backpack-gpu}

check_gcloud
create_flags
print_settings

vm_status
if [ -n "$VM_STATUS" ]; then
    echo "instance $GCP_INSTANCE exists already ($VM_STATUS): nothing created"
    [ "$VM_STATUS" = RUNNING ] ||
        echo "start it with: gcloud compute instances start $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE"
    exit 0
fi
# a family that no longer exists is the usual failure of an old script: say so before creating anything
cloud "image family $GCP_IMAGE_FAMILY" gcloud compute images describe-from-family "$GCP_IMAGE_FAMILY" \
    --project="$GCP_IMAGE_PROJECT" --format='value(name)'
cloud "gcloud compute instances create" gcloud compute instances create "$GCP_INSTANCE" "${CREATE_FLAGS[@]}"
echo "created $GCP_INSTANCE; connect with: ./connect_gcp_gpu.sh --instance $GCP_INSTANCE --zone $GCP_ZONE --project $GCP_PROJECT"
echo "(the first boot installs the GPU driver: nvidia-smi answers after a few minutes)"
echo "stop it when idle (the disk is still billed): gcloud compute instances stop $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE"
