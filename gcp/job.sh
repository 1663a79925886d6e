#!/usr/bin/env bash
# The training job on the GCP VM, run from the repository copy (~/backpack) that run_on_gcp_gpu.sh made:
#
#   job.sh setup                             wait for the GPU driver; .venv with the image's torch + requirements.txt
#   job.sh start JOB GCS_DIR COMMIT STOP_VM  record the job in gcp_job.env and run it detached (log: gcp_job.log)
#   job.sh resume                            at boot (gcp/startup.sh): rerun a recorded job that did not finish
#   job.sh status                            running | done | failed | interrupted | none
#   job.sh command JOB [first|resume]        print the job's training command
#   job.sh out_dir JOB                       print the job's out_dir
#   job.sh run                               the job itself, what start and resume detach:
#       prepare the data if the data dir has no meta.json; restore out_dir from GCS_DIR/out when it has no
#       ckpt.pt but the bucket has one; train with the seed's command (--init_from resume when ckpt.pt
#       exists); copy out_dir to GCS_DIR/out whenever ckpt.pt changes and at the end; write the state
#       (running/done/failed) to gcp_job.state and GCS_DIR/job_state; when done or failed, stop the VM
#       (STOP_VM=1) so that it costs nothing more than its disk.
# A preemption or shutdown (SIGTERM) leaves the state "running": train.py saves ckpt.pt and exits, and at
# the next boot gcp/startup.sh calls `job.sh resume`.
#
# JOB is backpack_full, transformer_full or finetune. Only `run` talks to the bucket (gsutil).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_DIR=$PWD
ENV_FILE=$REPO_DIR/gcp_job.env
STATE_FILE=$REPO_DIR/gcp_job.state
LOG=$REPO_DIR/gcp_job.log
LOCK=$REPO_DIR/gcp_job.lock
PYTHON=${BACKPACK_PYTHON:-$REPO_DIR/.venv/bin/python}
SYNC_EVERY_S=${BACKPACK_SYNC_EVERY_S:-60}   # how often the checkpoint watcher looks at ckpt.pt

die() { echo "job.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date -u '+%F %T')] $*"; }

# job_spec JOB first|resume: OUT_DIR, DATA_META, PREPARE_ARGS and TRAIN_ARGS of the job. The training
# commands are the seed README's (the finetune one on GPT-2-tokenized data, which backpack-gpt2 needs).
job_spec() {
    local first=$2
    case $1 in
        backpack_full)
            [ "$first" = resume ] || first=scratch
            OUT_DIR=out/backpack_full
            DATA_META=data/europarl/meta.json
            PREPARE_ARGS=(data/europarl/prepare.py --language_pair en-fr)
            TRAIN_ARGS=(train.py --model_type backpack --config train_europarl_scratch --out_dir out/backpack_full
                --data_dir europarl --init_from "$first" --device cuda --dtype float16 --compile) ;;
        transformer_full)
            [ "$first" = resume ] || first=scratch
            OUT_DIR=out/transformer_full
            DATA_META=data/europarl/meta.json
            PREPARE_ARGS=(data/europarl/prepare.py --language_pair en-fr)
            TRAIN_ARGS=(train.py --model_type transformer --config train_europarl_transformer_baseline
                --out_dir out/transformer_full --data_dir europarl --init_from "$first" --device cuda --dtype float16
                --compile) ;;
        finetune)
            [ "$first" = resume ] || first=backpack-small
            OUT_DIR=out-europarl-finetune
            DATA_META=data/europarl_gpt2/meta.json
            PREPARE_ARGS=(data/europarl/prepare.py --language_pair en-fr --tokenizer gpt2 --out_dir data/europarl_gpt2)
            TRAIN_ARGS=(train.py --config train_europarl_finetune --out_dir out-europarl-finetune
                --data_dir europarl_gpt2 --init_from "$first") ;;
        *) die "unknown job ${1:-(none)}: backpack_full, transformer_full or finetune" ;;
    esac
}

setup() {
    # The image installs the driver at first boot (metadata install-nvidia-driver=True): wait for it.
    local i py
    for i in $(seq 60); do
        nvidia-smi >/dev/null 2>&1 && break
        [ "$i" = 1 ] && log "waiting for the NVIDIA driver (first boot installs it)…"
        sleep 10
    done
    nvidia-smi -L || die "no working GPU driver after 10 minutes (nvidia-smi fails)"
    # .venv sees the image's torch (system site packages) and gets the rest of requirements.txt
    if [ ! -x .venv/bin/python ]; then
        for py in /opt/conda/bin/python3 python3; do
            command -v "$py" >/dev/null 2>&1 && "$py" -c 'import torch' 2>/dev/null && break
        done
        command -v "$py" >/dev/null 2>&1 || die "no python3 on the VM"
        if ! "$py" -m venv --system-site-packages .venv; then  # Debian/Ubuntu python3 without its venv module
            sudo apt-get install -y -q python3-venv || die "could not install python3-venv"
            "$py" -m venv --system-site-packages .venv || die "could not create .venv with $py"
        fi
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    .venv/bin/python -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
}

# status: running (a run holds the lock) | done | failed | interrupted (recorded as running, no process) | none
status() {
    [ -f "$ENV_FILE" ] || { echo none; return; }
    # a shared lock for the probe: status checks polled at the same time (run_on_gcp_gpu.sh --wait over ssh,
    # startup.sh's resume) must not take each other for a run
    if ! flock -n -s "$LOCK" true; then echo running; return; fi
    local state
    state=$(cut -d' ' -f1 "$STATE_FILE" 2>/dev/null || true)
    case $state in
        running) echo interrupted ;;
        done|failed) echo "$state" ;;
        *) echo none ;;
    esac
}

launch() {
    setsid nohup bash "$REPO_DIR/gcp/job.sh" run </dev/null >>"$LOG" 2>&1 &
    echo "job started (pid $!); log: $LOG"
}

start() {
    [ $# -eq 4 ] || die "usage: job.sh start JOB GCS_DIR COMMIT STOP_VM"
    job_spec "$1" first
    [[ $2 == gs://* ]] || die "GCS_DIR $2: expected gs://BUCKET/PATH"
    if [ "$(status)" = running ]; then
        echo "the job is already running (log: $LOG)"
        return 0
    fi
    printf 'JOB=%q\nGCS_DIR=%q\nCOMMIT=%q\nSTOP_VM=%q\n' "$1" "$2" "$3" "$4" >"$ENV_FILE"
    launch
}

resume() {
    local state
    state=$(status)
    if [ "$state" = interrupted ]; then
        log "resuming the interrupted job ($ENV_FILE)"
        launch
    else
        log "nothing to resume (job: $state)"
    fi
}

set_state() {
    printf '%s %s %s\n' "$1" "$COMMIT" "$(date -u +%FT%TZ)" >"$STATE_FILE"
    gsutil -q cp "$STATE_FILE" "$GCS_DIR/job_state" || log "warning: could not write $GCS_DIR/job_state"
}

sync_out() {
    if ! gsutil -m -q rsync -r "$OUT_DIR" "$GCS_DIR/out" || ! gsutil -q cp "$LOG" "$GCS_DIR/gcp_job.log"; then
        log "warning: copying $OUT_DIR to $GCS_DIR/out failed (the next checkpoint retries)"
        return 1
    fi
}

# the checkpoint watcher: copies out_dir to the bucket each time ckpt.pt is replaced
watch_checkpoints() {
    local last="" now
    while sleep "$SYNC_EVERY_S"; do
        now=$(stat -c '%Y %s %i' "$OUT_DIR/ckpt.pt" 2>/dev/null) || continue
        [ "$now" != "$last" ] || continue
        sync_out && last=$now && log "checkpoint copied to $GCS_DIR/out"
    done
}

# step CMD...: run CMD in the background and wait for it, so that a SIGTERM reaches this script's trap
# at once while CMD (which gets the signal too) finishes saving; returns CMD's status.
step() {
    log "+ $*"
    "$@" 9>&- &   # fd 9 holds the job's lock: only this script keeps it
    local pid=$! rc=0
    while :; do
        wait "$pid" && rc=0 || rc=$?
        kill -0 "$pid" 2>/dev/null || break   # wait was interrupted by a signal, CMD still running
    done
    wait "$pid" 2>/dev/null && rc=0 || rc=$?  # CMD's own status (bash keeps it)
    return "$rc"
}

run() {
    exec 9>>"$LOCK"
    # wait a little: a status check holds the lock for a moment, and a run that gave up then would
    # leave the job silently not running
    flock -w 10 9 || { log "another run holds $LOCK: nothing to do"; return 0; }
    # JOB GCS_DIR COMMIT STOP_VM, written by start
    # shellcheck source=/dev/null
    . "$ENV_FILE"
    job_spec "$JOB" first
    export PYTHONUNBUFFERED=1
    STOPPING=0
    trap 'STOPPING=1; log "signal received (preemption or shutdown): letting the step save and stop"' TERM INT HUP
    log "job $JOB, commit $COMMIT, on $(hostname); out_dir $OUT_DIR, copies in $GCS_DIR/out"
    set_state running
    local rc=0 mark
    if [ ! -f "$DATA_META" ]; then
        step "$PYTHON" "${PREPARE_ARGS[@]}" || rc=$?
    fi
    if [ "$rc" = 0 ] && [ "$STOPPING" = 0 ]; then
        if [ ! -f "$OUT_DIR/ckpt.pt" ] && gsutil -q stat "$GCS_DIR/out/ckpt.pt"; then
            log "no local ckpt.pt: restoring $OUT_DIR from $GCS_DIR/out"
            mkdir -p "$OUT_DIR"
            gsutil -m -q rsync -r "$GCS_DIR/out" "$OUT_DIR" || rc=$?
        fi
    fi
    if [ "$rc" = 0 ] && [ "$STOPPING" = 0 ]; then
        [ -f "$OUT_DIR/ckpt.pt" ] && job_spec "$JOB" resume
        mark=$(wc -c <"$LOG")
        watch_checkpoints 9>&- &
        local watcher=$!
        step "$PYTHON" "${TRAIN_ARGS[@]}" || rc=$?
        kill "$watcher" 2>/dev/null || true
        wait "$watcher" 2>/dev/null || true
        # train.py exits 0 after saving when it gets SIGTERM: that is a stop, not the end
        tail -c +"$((mark + 1))" "$LOG" | grep -q '^stopped by signal' && STOPPING=1
        sync_out || true
    fi
    if [ "$STOPPING" = 1 ]; then
        log "stopped before the end: state stays 'running'; training resumes from ckpt.pt at the next boot"
        return 0
    fi
    if [ "$rc" = 0 ]; then set_state "done"; else set_state failed; fi
    log "job $JOB finished: $(cut -d' ' -f1 "$STATE_FILE") (exit status $rc)"
    gsutil -q cp "$LOG" "$GCS_DIR/gcp_job.log" || true
    if [ "$STOP_VM" = 1 ]; then
        log "stopping the VM (its disk is kept; delete it when the results are fetched)"
        if [ -n "${BACKPACK_POWEROFF:-}" ]; then
            $BACKPACK_POWEROFF
        elif grep -qs 'Google Compute Engine' /sys/class/dmi/id/product_name; then
            sudo poweroff
        fi
    fi
}

case ${1:-} in
    setup) setup ;;
    start) shift; start "$@" ;;
    resume) resume ;;
    status) status ;;
    run) run ;;
    command) job_spec "${2:-}" "${3:-first}"; echo python "${TRAIN_ARGS[@]}" ;;
    out_dir) job_spec "${2:-}" first; echo "$OUT_DIR" ;;
    *) die "usage: job.sh setup | start JOB GCS_DIR COMMIT STOP_VM | resume | status | command JOB [first|resume] | out_dir JOB | run" ;;
esac
