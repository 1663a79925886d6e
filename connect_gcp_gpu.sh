#!/usr/bin/env bash
# Open a shell on the GPU VM (gcloud compute ssh), optionally forwarding ports to it:
#
#   ./connect_gcp_gpu.sh [JOB] [--instance NAME] [--project ID] [--zone Z] [--port N | --port LOCAL:REMOTE]...
#                        [--dry-run] [-- SSH ARGS OR A COMMAND]
#
# JOB (backpack_full, transformer_full, finetune) names the VM run_on_gcp_gpu.sh made for it (<job>-gpu);
# without it the VM is backpack-gpu (create_gpu_instance.sh's default). --port 6006 forwards localhost:6006
# to the VM's port 6006 (TensorBoard, Jupyter, ...). On the VM, a job started by run_on_gcp_gpu.sh logs to
# ~/backpack/gcp_job.log.
set -euo pipefail
. "$(dirname "$0")/gcp/common.sh"

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; }  # the comment above

PORTS=()
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        backpack_full|transformer_full|finetune) GCP_INSTANCE=${1//_/-}-gpu; shift; continue ;;
        --port) [ $# -ge 2 ] || die "--port needs a value"; PORTS+=("$2"); shift 2; continue ;;
        --port=*) PORTS+=("${1#--port=}"); shift; continue ;;
        --) shift; EXTRA=("$@"); break ;;
    esac
    parse_common_flag "$@"
    [ "$SHIFT" != 0 ] || die "unknown argument $1 (see --help)"
    shift "$SHIFT"
done
GCP_INSTANCE=${GCP_INSTANCE:-backpack-gpu}

SSH_ARGS=()
for port in ${PORTS[@]+"${PORTS[@]}"}; do
    [[ $port =~ ^[0-9]+(:[0-9]+)?$ ]] || die "--port $port: expected N or LOCAL:REMOTE"
    SSH_ARGS+=(-L "${port%%:*}:localhost:${port##*:}")
done
SSH_ARGS+=(${EXTRA[@]+"${EXTRA[@]}"})

check_gcloud
vm_status
if [ "$GCP_DRY_RUN" != 1 ]; then
    [ -n "$VM_STATUS" ] || die "no instance $GCP_INSTANCE in zone $GCP_ZONE of project $GCP_PROJECT: create it with ./create_gpu_instance.sh (or ./run_on_gcp_gpu.sh JOB)"
    [ "$VM_STATUS" = RUNNING ] || die "instance $GCP_INSTANCE is $VM_STATUS: start it with gcloud compute instances start $GCP_INSTANCE --project=$GCP_PROJECT --zone=$GCP_ZONE"
fi
if [ ${#SSH_ARGS[@]} -gt 0 ]; then
    run gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" -- "${SSH_ARGS[@]}"
else
    run gcloud compute ssh "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE"
fi
