# shellcheck disable=SC2034
# (the variables set here are read by the scripts that source this file)
# Shared by create_gpu_instance.sh, connect_gcp_gpu.sh and run_on_gcp_gpu.sh (sourced, not run).
#
# Every setting is an environment variable (GCP_*) that a flag of the scripts overrides:
#   --project ID        GCP_PROJECT        default: gcloud config get-value project
#   --zone Z            GCP_ZONE           us-central1-a
#   --instance NAME     GCP_INSTANCE       backpack-gpu (run_on_gcp_gpu.sh: <job>-gpu, e.g. backpack-full-gpu)
#   --gpu-type T        GCP_GPU_TYPE       nvidia-l4 (also nvidia-tesla-t4, nvidia-tesla-v100, nvidia-tesla-a100, ...)
#   --gpu-count N       GCP_GPU_COUNT      1
#   --machine-type M    GCP_MACHINE_TYPE   derived from the GPU: g2-standard-8 (L4), n1-standard-8 (T4/V100), a2-highgpu-1g (A100)
#   --spot | --on-demand GCP_SPOT=1|0      spot (default): 60-90 % cheaper, may be preempted (training resumes)
#   --disk-size GB      GCP_DISK_SIZE      200
#   --disk-type T       GCP_DISK_TYPE      pd-balanced
#   --image-family F    GCP_IMAGE_FAMILY   pytorch-2-9-cu129-ubuntu-2204-nvidia-580 (a Deep Learning VM PyTorch image)
#   --dry-run           GCP_DRY_RUN=1      print every gcloud/gsutil command instead of running it
# The Deep Learning VM families change with PyTorch releases; the current ones:
#   gcloud compute images list --project=deeplearning-platform-release --no-standard-images \
#       --filter="family~pytorch" --format="value(family)" | sort -u

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

GCP_PROJECT=${GCP_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}
GCP_ZONE=${GCP_ZONE:-us-central1-a}
GCP_INSTANCE=${GCP_INSTANCE:-}
GCP_GPU_TYPE=${GCP_GPU_TYPE:-nvidia-l4}
GCP_GPU_COUNT=${GCP_GPU_COUNT:-1}
GCP_MACHINE_TYPE=${GCP_MACHINE_TYPE:-}
GCP_SPOT=${GCP_SPOT:-1}
GCP_DISK_SIZE=${GCP_DISK_SIZE:-200}
GCP_DISK_TYPE=${GCP_DISK_TYPE:-pd-balanced}
GCP_IMAGE_FAMILY=${GCP_IMAGE_FAMILY:-pytorch-2-9-cu129-ubuntu-2204-nvidia-580}
GCP_IMAGE_PROJECT=deeplearning-platform-release
GCP_DRY_RUN=${GCP_DRY_RUN:-0}
STARTUP_SCRIPT=$REPO_ROOT/gcp/startup.sh

die() { echo "error: $*" >&2; exit 1; }

# parse_common_flag "$@": handles one setting flag at the front of the arguments; sets SHIFT to the number
# of arguments it used (0 when the flag is not a common one).
parse_common_flag() {
    local flag=$1 value=${2-} key
    SHIFT=2
    case $flag in
        --*=*) key=${flag%%=*}; value=${flag#*=}; SHIFT=1 ;;
        --spot) GCP_SPOT=1; SHIFT=1; return ;;
        --on-demand) GCP_SPOT=0; SHIFT=1; return ;;
        --dry-run) GCP_DRY_RUN=1; SHIFT=1; return ;;
        *) key=$flag ;;
    esac
    case $key in
        --project|--zone|--instance|--gpu-type|--gpu-count|--machine-type|--disk-size|--disk-type|--image-family)
            [ "$SHIFT" = 1 ] || [ $# -ge 2 ] || die "$key needs a value" ;;
        *) SHIFT=0; return ;;
    esac
    case $key in
        --project) GCP_PROJECT=$value ;;
        --zone) GCP_ZONE=$value ;;
        --instance) GCP_INSTANCE=$value ;;
        --gpu-type) GCP_GPU_TYPE=$value ;;
        --gpu-count) GCP_GPU_COUNT=$value ;;
        --machine-type) GCP_MACHINE_TYPE=$value ;;
        --disk-size) GCP_DISK_SIZE=${value%GB} ;;
        --disk-type) GCP_DISK_TYPE=$value ;;
        --image-family) GCP_IMAGE_FAMILY=$value ;;
    esac
}

# The command as a user would type it: words that need it are single-quoted.
shell_join() {
    local out="" word
    for word in "$@"; do
        if [[ -n $word && $word =~ ^[A-Za-z0-9_./:=,@%+~-]+$ ]]; then
            out+="$word "
        else
            out+="'${word//\'/\'\\\'\'}' "
        fi
    done
    printf '%s' "${out% }"
}

# run CMD...: print it ("+ CMD"), then run it unless --dry-run.
run() {
    echo "+ $(shell_join "$@")"
    [ "$GCP_DRY_RUN" = 1 ] && return 0
    "$@"
}

# cloud WHAT CMD...: like run, but a failing gcloud/gsutil ends the script with one error line saying what
# its message means. gcloud's own messages are kept and shown once the command succeeds.
cloud() {
    local what=$1 err rc=0
    shift
    echo "+ $(shell_join "$@")"
    [ "$GCP_DRY_RUN" = 1 ] && return 0
    err=$(mktemp)
    "$@" 2>"$err" || rc=$?
    if [ "$rc" != 0 ]; then
        local line
        line=$(explain_failure "$err" "$what")
        rm -f "$err"
        die "$line"
    fi
    cat "$err" >&2
    rm -f "$err"
}

# explain_failure FILE WHAT: one line from gcloud's error message in FILE (refused quota, zone, auth, ...).
explain_failure() {
    local msg region=${GCP_ZONE%-*} quota gpu=${GPU_TYPE:-$GCP_GPU_TYPE}
    msg=$(tr '\n' ' ' <"$1" | tr -s ' ')
    case $msg in
        *"Quota '"*"' exceeded"*|*QUOTA_EXCEEDED*)
            quota=$(sed -nE "s/.*(Quota '[A-Z0-9_]*' exceeded)\. +(Limit: [0-9.]+( in region [a-z0-9-]+| globally)?).*/\1 (\2)/p" <<<"$msg")
            echo "$2: GPU quota refused: ${quota:-quota exceeded in $region}; request more at https://console.cloud.google.com/iam-admin/quotas (GPUS_ALL_REGIONS and the $gpu quota of $region; PREEMPTIBLE_ ones for spot) or try another --zone/--gpu-type" ;;
        *ZONE_RESOURCE_POOL_EXHAUSTED*|*"does not have enough resources available"*|*"currently unavailable in the"*)
            echo "$2: zone $GCP_ZONE has no free $gpu capacity now (ZONE_RESOURCE_POOL_EXHAUSTED): retry later or pick another --zone (gcloud compute accelerator-types list --filter=name=$gpu)" ;;
        *"does not exist in zone"*|*"acceleratorTypes/"*"was not found"*|*"machineTypes/"*"was not found"*)
            echo "$2: zone $GCP_ZONE does not offer ${MACHINE_TYPE:-$GCP_MACHINE_TYPE} / $gpu: zones that do: gcloud compute accelerator-types list --filter=name=$gpu" ;;
        *"Unknown zone"*|*"field 'zone'"*|*"zones/$GCP_ZONE' was not found"*)
            echo "$2: zone $GCP_ZONE does not exist (gcloud compute zones list)" ;;
        *"do not currently have an active account"*|*"gcloud auth login"*|*"Reauthentication"*|*"refreshing your current auth tokens"*|*"invalid_grant"*|*"ServiceException: 401"*)
            echo "$2: gcloud is not authenticated: run gcloud auth login" ;;
        *"API has not been used"*|*SERVICE_DISABLED*|*"API is not enabled"*|*"accessNotConfigured"*)
            echo "$2: the Compute Engine API is not enabled in project $GCP_PROJECT: gcloud services enable compute.googleapis.com --project=$GCP_PROJECT" ;;
        *"images/family/"*|*"image family"*)
            echo "$2: no image family $GCP_IMAGE_FAMILY in $GCP_IMAGE_PROJECT: list them with gcloud compute images list --project=$GCP_IMAGE_PROJECT --no-standard-images --filter=family~pytorch --format='value(family)' and pass --image-family" ;;
        *"409"*"already exists"*|*"bucket name is not available"*)
            echo "$2: that bucket name belongs to someone else: choose another with --bucket gs://NAME" ;;
        *"projects/$GCP_PROJECT' was not found"*|*"project $GCP_PROJECT"*"not found"*|*"Unknown project"*)
            echo "$2: project $GCP_PROJECT not found (gcloud projects list)" ;;
        *PERMISSION_DENIED*|*"Required '"*"' permission"*|*"AccessDeniedException: 403"*|*"does not have permission"*)
            echo "$2: permission denied in project $GCP_PROJECT: $(last_error_line "$1")" ;;
        *)
            echo "$2 failed: $(last_error_line "$1")" ;;
    esac
}

last_error_line() {
    local line
    line=$(grep -E 'ERROR|Exception|error' "$1" | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1)
    printf '%s' "${line:-no message}" | sed 's/^[[:space:]]*-* *//'
}

# check_gcloud [gsutil]: gcloud (and gsutil) on PATH, an active account, a project. In --dry-run nothing is
# run: a project not given is shown as PROJECT_ID.
check_gcloud() {
    if [ "$GCP_DRY_RUN" = 1 ]; then
        [ -n "$GCP_PROJECT" ] || { GCP_PROJECT=PROJECT_ID; echo "(dry run: no --project given, shown as PROJECT_ID)"; }
        return 0
    fi
    command -v gcloud >/dev/null 2>&1 ||
        die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run gcloud auth login"
    if [ "${1-}" = gsutil ]; then
        command -v gsutil >/dev/null 2>&1 ||
            die "gsutil not found on PATH: it comes with the Google Cloud CLI (gcloud components install gsutil)"
    fi
    local account
    account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null || true)
    [ -n "$account" ] || die "gcloud is not authenticated (no active account): run gcloud auth login"
    if [ -z "$GCP_PROJECT" ]; then
        GCP_PROJECT=$(gcloud config get-value project 2>/dev/null || true)
        [ -n "$GCP_PROJECT" ] ||
            die "no GCP project: pass --project ID, set GCP_PROJECT, or run gcloud config set project ID"
    fi
}

# machine_flags: MACHINE_TYPE, GPU_TYPE, GPU_COUNT and the create flags that attach the GPUs (ACCEL_FLAGS).
# N1 machines take GPUs with --accelerator; A2/A3/G2 machine types come with theirs (the type fixes model and count).
machine_flags() {
    GPU_TYPE=$GCP_GPU_TYPE
    GPU_COUNT=$GCP_GPU_COUNT
    [[ $GPU_COUNT =~ ^[1-9][0-9]*$ ]] || die "--gpu-count $GPU_COUNT: expected a positive number"
    MACHINE_TYPE=$GCP_MACHINE_TYPE
    if [ -z "$MACHINE_TYPE" ]; then
        case $GPU_TYPE:$GPU_COUNT in
            nvidia-l4:1) MACHINE_TYPE=g2-standard-8 ;;
            nvidia-l4:2) MACHINE_TYPE=g2-standard-24 ;;
            nvidia-l4:4) MACHINE_TYPE=g2-standard-48 ;;
            nvidia-l4:8) MACHINE_TYPE=g2-standard-96 ;;
            nvidia-tesla-a100:1|nvidia-tesla-a100:2|nvidia-tesla-a100:4|nvidia-tesla-a100:8)
                MACHINE_TYPE=a2-highgpu-${GPU_COUNT}g ;;
            nvidia-a100-80gb:1|nvidia-a100-80gb:2|nvidia-a100-80gb:4|nvidia-a100-80gb:8)
                MACHINE_TYPE=a2-ultragpu-${GPU_COUNT}g ;;
            nvidia-h100-80gb:1|nvidia-h100-80gb:2|nvidia-h100-80gb:4|nvidia-h100-80gb:8)
                MACHINE_TYPE=a3-highgpu-${GPU_COUNT}g ;;
            nvidia-tesla-t4:1|nvidia-tesla-v100:1|nvidia-tesla-p100:1|nvidia-tesla-p4:1) MACHINE_TYPE=n1-standard-8 ;;
            nvidia-tesla-t4:2|nvidia-tesla-v100:2|nvidia-tesla-p100:2|nvidia-tesla-p4:2) MACHINE_TYPE=n1-standard-16 ;;
            nvidia-tesla-t4:4|nvidia-tesla-v100:4|nvidia-tesla-p100:4|nvidia-tesla-p4:4) MACHINE_TYPE=n1-standard-32 ;;
            nvidia-tesla-v100:8) MACHINE_TYPE=n1-standard-64 ;;
            *) die "--gpu-type $GPU_TYPE --gpu-count $GPU_COUNT: no default machine type (GPU types: nvidia-l4, nvidia-tesla-t4, nvidia-tesla-v100, nvidia-tesla-p100, nvidia-tesla-p4, nvidia-tesla-a100, nvidia-a100-80gb, nvidia-h100-80gb; counts 1, 2, 4, 8); or pass --machine-type" ;;
        esac
    fi
    ACCEL_FLAGS=()
    case $MACHINE_TYPE in
        n1-*) ACCEL_FLAGS=("--accelerator=type=$GPU_TYPE,count=$GPU_COUNT")
              GPU_NOTE="$GPU_COUNT x $GPU_TYPE, attached with --accelerator" ;;
        g2-*) GPU_TYPE=nvidia-l4; GPU_NOTE="nvidia-l4, attached by the machine type" ;;
        a2-highgpu-*|a2-megagpu-*) GPU_TYPE=nvidia-tesla-a100; GPU_NOTE="nvidia-tesla-a100, attached by the machine type" ;;
        a2-ultragpu-*) GPU_TYPE=nvidia-a100-80gb; GPU_NOTE="nvidia-a100-80gb, attached by the machine type" ;;
        a3-*) GPU_TYPE=nvidia-h100-80gb; GPU_NOTE="nvidia-h100-80gb, attached by the machine type" ;;
        *) die "--machine-type $MACHINE_TYPE takes no GPU: use an n1-* type with --gpu-type, or a g2-/a2-/a3- type" ;;
    esac
}

# create_flags: the arguments of `gcloud compute instances create NAME ...` (CREATE_FLAGS).
create_flags() {
    machine_flags
    CREATE_FLAGS=(--project="$GCP_PROJECT" --zone="$GCP_ZONE" --machine-type="$MACHINE_TYPE" ${ACCEL_FLAGS[@]+"${ACCEL_FLAGS[@]}"}
        --maintenance-policy=TERMINATE)  # GPU VMs cannot live-migrate
    if [ "$GCP_SPOT" = 1 ]; then
        # a preempted spot VM is stopped, not deleted: its disk (data, out_dir) survives, and the startup
        # script resumes training when it is started again
        CREATE_FLAGS+=(--provisioning-model=SPOT --instance-termination-action=STOP)
    else
        CREATE_FLAGS+=(--provisioning-model=STANDARD)
    fi
    CREATE_FLAGS+=(--image-family="$GCP_IMAGE_FAMILY" --image-project="$GCP_IMAGE_PROJECT"
        --boot-disk-size="${GCP_DISK_SIZE}GB" --boot-disk-type="$GCP_DISK_TYPE"
        --scopes=cloud-platform  # the VM writes checkpoints to the bucket (the default scopes read only)
        --metadata=install-nvidia-driver=True
        --metadata-from-file=startup-script="$STARTUP_SCRIPT"
        --labels=app=backpack-lm)
}

# print_settings: what is billed, before anything is created.
print_settings() {
    local model
    [ "$GCP_SPOT" = 1 ] && model="SPOT (preemptible, 60-90 % cheaper; stopped on preemption, then resumed)" ||
        model="STANDARD (on-demand)"
    cat <<EOF
== GCP settings (what is billed) ==
  project       $GCP_PROJECT
  zone          $GCP_ZONE
  instance      $GCP_INSTANCE
  machine type  $MACHINE_TYPE
  GPUs          $GPU_NOTE
  provisioning  $model
  boot disk     ${GCP_DISK_SIZE} GB $GCP_DISK_TYPE (billed while the VM exists, even stopped)
  image         $GCP_IMAGE_FAMILY ($GCP_IMAGE_PROJECT)
  prices        https://cloud.google.com/compute/gpus-pricing, https://cloud.google.com/compute/vm-instance-pricing
EOF
}

# vm_status: sets VM_STATUS to the instance's status (RUNNING, TERMINATED, ...), empty when it does not
# exist. In --dry-run it prints the command and takes the instance as absent.
vm_status() {
    local err rc=0
    VM_STATUS=
    echo "+ $(shell_join gcloud compute instances describe "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" --format='value(status)')"
    [ "$GCP_DRY_RUN" = 1 ] && return 0
    err=$(mktemp)
    VM_STATUS=$(gcloud compute instances describe "$GCP_INSTANCE" --project="$GCP_PROJECT" --zone="$GCP_ZONE" \
        --format='value(status)' 2>"$err") || rc=$?
    if [ "$rc" != 0 ]; then
        VM_STATUS=
        if ! grep -q "instances/$GCP_INSTANCE' was not found" "$err"; then
            local line
            line=$(explain_failure "$err" "gcloud compute instances describe")
            rm -f "$err"
            die "$line"
        fi
    fi
    rm -f "$err"
}
