#!/usr/bin/env bash
# Train one of the README's models on a Google Cloud GPU, from this checkout, start to finish:
#
#   ./run_on_gcp_gpu.sh backpack_full|transformer_full|finetune [--dry-run] [--detach | --fetch]
#       [--bucket gs://NAME] [--keep-vm] [--results-dir DIR] [--project ID] [--zone Z] [--instance NAME]
#       [--gpu-type T] [--gpu-count N] [--machine-type M] [--spot | --on-demand] [--disk-size GB] [--image-family F]
#
#  1. creates the VM <job>-gpu (spot L4 by default, Deep Learning VM PyTorch image; create_gpu_instance.sh's
#     settings and defaults), or starts/reuses the one that exists;
#  2. copies the repository at its current commit (git archive HEAD; uncommitted changes are not copied);
#  3. installs requirements.txt on the image's torch (gcp/job.sh setup);
#  4. in a detached session on the VM (gcp/job.sh run): prepares the data, runs the seed's training command
#     (python train.py --model_type backpack --config train_europarl_scratch --out_dir out/backpack_full
#     --data_dir europarl --init_from scratch --device cuda --dtype float16 --compile, and the twins for
#     transformer_full and finetune), copies out_dir to gs://BUCKET/<job>/out at every checkpoint, and stops
#     the VM when training ends (--keep-vm: leave it running);
#  5. waits: a spot preemption stops the VM; this script starts it again and the VM's startup script
#     (gcp/startup.sh) resumes training with --init_from resume from the last checkpoint;
#  6. fetches gs://BUCKET/<job>/out into out_dir here (--results-dir DIR: there instead).
# --detach returns after step 4 (rerun the same command later to wait and fetch; a running job is never
# restarted); --fetch only does step 6. --dry-run prints every gcloud/gsutil command instead of running it.
# The bucket defaults to gs://PROJECT-backpack-runs (created in the zone's region if missing).
# Settings also come from the environment: GCP_PROJECT, GCP_ZONE, ... (gcp/common.sh), GCP_BUCKET.
set -euo pipefail
. "$(dirname "$0")/gcp/common.sh"

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; }  # the comment above

JOB=
MODE="wait"
GCP_BUCKET=${GCP_BUCKET:-}
STOP_VM=1
RESULTS_DIR=${GCP_RESULTS_DIR:-}
POLL_S=${GCP_POLL_S:-300}        # how often the wait checks the job and the VM
SSH_TRIES=${GCP_SSH_TRIES:-30}   # ssh attempts while the VM boots, SSH_WAIT_S apart
SSH_WAIT_S=${GCP_SSH_WAIT_S:-10}
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        backpack_full|transformer_full|finetune)
            [ -z "$JOB" ] || die "one job at a time (got $JOB and $1)"
            JOB=$1; shift; continue ;;
        --detach) MODE=detach; shift; continue ;;
        --fetch) MODE=fetch; shift; continue ;;
        --keep-vm) STOP_VM=0; shift; continue ;;
        --bucket|--results-dir)
            [ $# -ge 2 ] || die "$1 needs a value"
            [ "$1" = --bucket ] && GCP_BUCKET=$2 || RESULTS_DIR=$2
            shift 2; continue ;;
        --bucket=*) GCP_BUCKET=${1#*=}; shift; continue ;;
        --results-dir=*) RESULTS_DIR=${1#*=}; shift; continue ;;
    esac
    parse_common_flag "$@"
    [ "$SHIFT" != 0 ] || die "unknown argument $1 (see --help)"
    shift "$SHIFT"
done
[ -n "$JOB" ] || die "which job? ./run_on_gcp_gpu.sh backpack_full|transformer_full|finetune [--dry-run] (see --help)"
GCP_INSTANCE=${GCP_INSTANCE:-${JOB//_/-}-gpu}

check_gcloud gsutil
create_flags
if [ -z "$GCP_BUCKET" ]; then
    GCP_BUCKET=gs://$(tr ':.' '--' <<<"$GCP_PROJECT")-backpack-runs
fi
GCP_BUCKET=${GCP_BUCKET%/}
[[ $GCP_BUCKET == gs://* ]] || GCP_BUCKET=gs://$GCP_BUCKET
GCS_DIR=$GCP_BUCKET/$JOB
OUT_DIR=$(bash "$REPO_ROOT/gcp/job.sh" out_dir "$JOB")
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/$OUT_DIR}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ "$GCP_DRY_RUN" != 1 ] || echo "dry run: the commands are printed, none is run"
print_settings
cat <<EOF
  bucket        $GCS_DIR (checkpoints and logs; storage billed per GB-month)
  when done     $([ "$STOP_VM" = 1 ] && echo "the VM stops itself (disk still billed)" || echo "the VM keeps running (--keep-vm): stop it yourself")
  delete        gcloud compute instances delete $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE
  training      $(bash "$REPO_ROOT/gcp/job.sh" command "$JOB" first)
  on resume     $(bash "$REPO_ROOT/gcp/job.sh" command "$JOB" resume)
EOF
[ "$GPU_COUNT" = 1 ] || echo "note: train.py uses one GPU per process; for $GPU_COUNT, run torchrun on the VM (README)"
echo

# bucket_state: STATE = the job's state in the bucket (running, done, failed) or none
bucket_state() {
    local quiet=${1-}
    [ -n "$quiet" ] || echo "+ $(shell_join gsutil cat "$GCS_DIR/job_state")"
    STATE=none
    [ "$GCP_DRY_RUN" = 1 ] && return 0
    STATE=$(gsutil cat "$GCS_DIR/job_state" 2>/dev/null | cut -d' ' -f1) || STATE=none
    [ -n "$STATE" ] || STATE=none
}

ensure_bucket() {
    local err
    if [ "$GCP_DRY_RUN" = 1 ]; then
        echo "+ $(shell_join gsutil ls -b "$GCP_BUCKET")"
        echo "+ $(shell_join gsutil mb -p "$GCP_PROJECT" -l "${GCP_ZONE%-*}" -b on "$GCP_BUCKET")   (if it does not exist)"
        return 0
    fi
    err=$TMP/ls.err
    echo "+ $(shell_join gsutil ls -b "$GCP_BUCKET")"
    if ! gsutil ls -b "$GCP_BUCKET" >/dev/null 2>"$err"; then
        grep -qE 'BucketNotFoundException|bucket does not exist|404' "$err" || die "$(explain_failure "$err" "gsutil ls")"
        cloud "gsutil mb" gsutil mb -p "$GCP_PROJECT" -l "${GCP_ZONE%-*}" -b on "$GCP_BUCKET"
    fi
}

# on_vm CMD: run CMD on the VM (in the home directory); its output on stdout
on_vm() {
    cloud "gcloud compute ssh" gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet \
        --command="$1"
}

start_vm() {
    cloud "gcloud compute instances start" gcloud compute instances start "$GCP_INSTANCE" --project="$GCP_PROJECT" \
        --zone="$GCP_ZONE"
}

ensure_vm() {
    vm_status
    case $VM_STATUS in
        "")
            cloud "image family $GCP_IMAGE_FAMILY" gcloud compute images describe-from-family "$GCP_IMAGE_FAMILY" \
                --project="$GCP_IMAGE_PROJECT" --format='value(name)'
            cloud "gcloud compute instances create" gcloud compute instances create "$GCP_INSTANCE" "${CREATE_FLAGS[@]}" ;;
        RUNNING) echo "reusing the running instance $GCP_INSTANCE" ;;
        TERMINATED|STOPPED) start_vm ;;
        SUSPENDED) cloud "gcloud compute instances resume" gcloud compute instances resume "$GCP_INSTANCE" \
                       --project="$GCP_PROJECT" --zone="$GCP_ZONE" ;;
        *) echo "instance $GCP_INSTANCE is $VM_STATUS: waiting for ssh" ;;
    esac
}

# wait_ssh: the VM answers ssh (it takes a minute or two after create/start)
wait_ssh() {
    local err=$TMP/ssh.err
    echo "+ $(shell_join gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet --command=true)   (until it answers)"
    [ "$GCP_DRY_RUN" = 1 ] && return 0
    for _ in $(seq "$SSH_TRIES"); do
        if gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet --command=true \
            >/dev/null 2>"$err"; then
            return 0
        fi
        sleep "$SSH_WAIT_S"
    done
    die "$(explain_failure "$err" "ssh to $GCP_INSTANCE (after $SSH_TRIES tries)")"
}

# launch: VM up, repository copied at HEAD, requirements installed, job started (unless it runs already)
launch() {
    local remote commit short tgz
    ensure_vm
    wait_ssh
    # is the job running there already (a rerun of this script, or the startup script after a restart)?
    remote=$(on_vm 'cd backpack 2>/dev/null && bash gcp/job.sh status || echo none')
    echo "${remote%%$'\n'*}"   # the command line on_vm printed
    remote=${remote##*$'\n'}
    [ "$GCP_DRY_RUN" != 1 ] || remote=none
    if [ "$remote" = running ]; then
        echo "the job is already running on $GCP_INSTANCE: left as it is"
        return 0
    fi
    git -C "$REPO_ROOT" rev-parse --verify -q HEAD >/dev/null ||
        die "copying the repository needs a git checkout with a commit ($REPO_ROOT)"
    commit=$(git -C "$REPO_ROOT" rev-parse HEAD)
    short=${commit:0:12}
    [ -z "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no)" ] ||
        echo "note: uncommitted changes are not copied: the VM gets commit $short"
    tgz=$TMP/backpack-$short.tgz
    run git -C "$REPO_ROOT" archive --format=tar.gz -o "$tgz" HEAD
    cloud "gcloud compute scp" gcloud compute scp "$tgz" "$GCP_INSTANCE:backpack-$short.tgz" --project="$GCP_PROJECT" \
        --zone="$GCP_ZONE" --quiet
    on_vm "mkdir -p backpack && tar -xzf backpack-$short.tgz -C backpack && rm backpack-$short.tgz && bash backpack/gcp/job.sh setup"
    on_vm "bash backpack/gcp/job.sh start $JOB $GCS_DIR $commit $STOP_VM"
}

# wait_job: until the bucket says done; a stopped VM (spot preemption) is started again, a deleted one
# recreated, and the job resumes from its last checkpoint
wait_job() {
    local polls=0 err=$TMP/start.err remote
    echo "waiting for $JOB (every ${POLL_S}s; Ctrl-C stops the waiting, not the job: rerun this command to wait again)"
    while :; do
        bucket_state "$([ $polls = 0 ] || echo quiet)"
        case $STATE in
            done) echo "$JOB finished"; return 0 ;;
            failed) die "$JOB failed on $GCP_INSTANCE: see gsutil cat $GCS_DIR/gcp_job.log (rerun this command to resume it from its last checkpoint)" ;;
        esac
        if [ "$GCP_DRY_RUN" = 1 ]; then
            vm_status
            echo "(if the VM was preempted) + $(shell_join gcloud compute instances start "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE")"
            echo "(then every ${POLL_S}s until $GCS_DIR/job_state says done)"
            return 0
        fi
        if [ "$polls" = 0 ]; then vm_status; else vm_status >/dev/null; fi
        case $VM_STATUS in
            TERMINATED|STOPPED)
                echo "$(date '+%F %T') $GCP_INSTANCE is $VM_STATUS while the job is $STATE (spot preemption): starting it; gcp/startup.sh resumes training from the last checkpoint"
                echo "+ $(shell_join gcloud compute instances start "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE")"
                if ! gcloud compute instances start "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" 2>"$err"; then
                    echo "could not start it now ($(explain_failure "$err" "gcloud compute instances start")); retrying in ${POLL_S}s"
                fi ;;
            "")
                echo "$(date '+%F %T') $GCP_INSTANCE no longer exists: recreating it; the job resumes from $GCS_DIR/out"
                launch ;;
            RUNNING)
                # the job may have stopped without the VM stopping (its process killed, a reboot whose
                # startup script failed): resume it, from its last checkpoint
                remote=$(gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet \
                    --command='bash backpack/gcp/job.sh status' 2>/dev/null | tail -n 1) || remote=unknown
                if [ "$remote" = interrupted ]; then
                    echo "$(date '+%F %T') the job is not running on $GCP_INSTANCE (interrupted): resuming it"
                    echo "+ $(shell_join gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet --command='bash backpack/gcp/job.sh resume')"
                    gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --quiet \
                        --command='bash backpack/gcp/job.sh resume' || true
                else
                    echo "$(date '+%F %T') job: $STATE ($remote on the VM); $GCP_INSTANCE: $VM_STATUS"
                fi ;;
            *) echo "$(date '+%F %T') job: $STATE; $GCP_INSTANCE: $VM_STATUS" ;;
        esac
        polls=$((polls + 1))
        sleep "$POLL_S"
    done
}

fetch() {
    run mkdir -p "$RESULTS_DIR"
    cloud "gsutil rsync" gsutil -m rsync -r "$GCS_DIR/out" "$RESULTS_DIR"
    cloud "gsutil cp" gsutil cp "$GCS_DIR/gcp_job.log" "$RESULTS_DIR/gcp_job.log"
    echo "results of $JOB in $RESULTS_DIR; evaluate them with: python run_full_evaluation.py --out_dir $RESULTS_DIR --device cpu"
    if [ "$STOP_VM" = 1 ]; then
        echo "the VM stops itself when the job ends; its disk is billed until you delete it: gcloud compute instances delete $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE"
    else
        echo "the VM is still running (--keep-vm): gcloud compute instances stop (or delete) $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE"
    fi
}

if [ "$MODE" = fetch ]; then
    fetch
    exit 0
fi
bucket_state
if [ "$STATE" = "done" ]; then
    echo "$JOB finished already ($GCS_DIR/job_state): fetching its results"
    fetch
    exit 0
fi
ensure_bucket
launch
if [ "$MODE" = detach ]; then
    echo "detached. Follow it: ./connect_gcp_gpu.sh $JOB --zone $GCP_ZONE --project $GCP_PROJECT -- tail -f backpack/gcp_job.log"
    echo "wait and fetch the results later: ./run_on_gcp_gpu.sh $JOB --zone $GCP_ZONE --project $GCP_PROJECT --bucket $GCP_BUCKET"
    exit 0
fi
wait_job
fetch
