"""run_on_gcp_gpu.sh, create_gpu_instance.sh, connect_gcp_gpu.sh and the VM side (gcp/job.sh, gcp/startup.sh),
run as a user would, against stub `gcloud`/`gsutil` (and, on the VM side, a stub `python`) that record their argv.

The stubs fake just enough of Compute Engine and Cloud Storage: instances with a status, a bucket that is a
directory, ssh/scp that record what they were asked. A file fail/<call> makes a call fail with the real
gcloud message it holds (fail/<call>.once: the first time only); on/<call> is a bash snippet run on that call
(how the tests simulate a preemption). What the stubs cannot show is whether Google's side accepts the
commands: the flags were checked against the real gcloud parser (see the note of issue 12)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "run_on_gcp_gpu.sh"
CREATE = REPO / "create_gpu_instance.sh"
CONNECT = REPO / "connect_gcp_gpu.sh"
JOB_SH = REPO / "gcp" / "job.sh"

# The seed README's training commands (the finetune one with the GPT-2-tokenized data dir that
# backpack-gpt2 needs, as the README says; the seed's `--data_dir europarl` is refused by train.py).
SEED = {
    "backpack_full": "python train.py --model_type backpack --config train_europarl_scratch --out_dir out/backpack_full "
                     "--data_dir europarl --init_from scratch --device cuda --dtype float16 --compile",
    "transformer_full": "python train.py --model_type transformer --config train_europarl_transformer_baseline "
                        "--out_dir out/transformer_full --data_dir europarl --init_from scratch --device cuda "
                        "--dtype float16 --compile",
    "finetune": "python train.py --config train_europarl_finetune --out_dir out-europarl-finetune "
                "--data_dir europarl_gpt2 --init_from backpack-small",
}
SEED_RESUME = {job: cmd.replace("--init_from scratch", "--init_from resume").replace(
    "--init_from backpack-small", "--init_from resume") for job, cmd in SEED.items()}

# Messages as gcloud prints them (Compute Engine API errors).
QUOTA_ERROR = ("ERROR: (gcloud.compute.instances.create) Could not fetch resource:\n"
               " - Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 0.0 in region us-central1.\n")
QUOTA_LINE = ("error: gcloud compute instances create: GPU quota refused: Quota 'NVIDIA_L4_GPUS' exceeded "
              "(Limit: 0.0 in region us-central1); request more at https://console.cloud.google.com/iam-admin/"
              "quotas (GPUS_ALL_REGIONS and the nvidia-l4 quota of us-central1; PREEMPTIBLE_ ones for spot) or "
              "try another --zone/--gpu-type")
EXHAUSTED_ERROR = ("ERROR: (gcloud.compute.instances.create) Could not fetch resource:\n"
                   " - The zone 'projects/p/zones/us-central1-a' does not have enough resources available to "
                   "fulfill the request.  Try a different zone, or try again later.\n")
NOT_OFFERED_ERROR = ("ERROR: (gcloud.compute.instances.create) Could not fetch resource:\n"
                     " - Invalid value for field 'resource.machineType': 'zones/us-central1-a/machineTypes/"
                     "g2-standard-8'. Machine type with name 'g2-standard-8' does not exist in zone 'us-central1-a'.\n")
UNKNOWN_ZONE_ERROR = ("ERROR: (gcloud.compute.instances.describe) Could not fetch resource:\n"
                      " - Invalid value for field 'zone': 'us-central1-z'. Unknown zone.\n")

STUB = r'''#!PYTHON
"""Stub gcloud/gsutil: records argv in $STUB_DIR/calls.jsonl and fakes instances and a bucket."""
import json, os, shutil, subprocess, sys
from pathlib import Path

STUB = Path(os.environ["STUB_DIR"])
prog, argv = Path(sys.argv[0]).name, sys.argv[1:]
with open(STUB / "calls.jsonl", "a") as f:
    f.write(json.dumps([prog] + argv) + "\n")


def fail(message, rc=1):
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.exit(rc)


def injected(key):
    for name in (key, key + ".once"):
        path = STUB / "fail" / name
        if path.exists():
            message = path.read_text()
            if name.endswith(".once"):
                path.unlink()
            fail(message)


def hook(key, *args):
    path = STUB / "on" / key
    if not path.exists():
        return 0
    result = subprocess.run(["bash", str(path), *args], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def opt(name):
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), "")


def gcs(url):
    assert url.startswith("gs://"), url
    return STUB / "gcs" / url[5:]


if prog == "gcloud":
    words = [a for a in argv if not a.startswith("-")]
    if words[:2] in (["compute", "ssh"], ["compute", "scp"]):
        key = " ".join(words[:2])
    elif words[:1] == ["compute"]:
        key = " ".join(words[:3])
    else:
        key = " ".join(words[:2])
    injected(key.replace(" ", "_"))
    if key == "auth list":
        print("" if (STUB / "noauth").exists() else "me@example.com")
    elif key == "config get-value":
        print((STUB / "project").read_text().strip() if (STUB / "project").exists() else "")
    elif key == "compute images describe-from-family":
        print(words[3] + "-v20250101")
    elif key.startswith("compute instances"):
        action, name = words[2], words[3]
        vm = STUB / "vm" / name
        vm.parent.mkdir(exist_ok=True)
        if action == "describe":
            if not vm.exists():
                fail("ERROR: (gcloud.compute.instances.describe) Could not fetch resource:\n - The resource "
                     f"'projects/{opt('project')}/zones/{opt('zone')}/instances/{name}' was not found")
            print(vm.read_text().strip())
        elif action == "create":
            vm.write_text("RUNNING")
            sys.stderr.write(f"Created [https://www.googleapis.com/compute/v1/projects/{opt('project')}/zones/"
                             f"{opt('zone')}/instances/{name}].\n")
        elif action in ("start", "resume"):
            vm.write_text("RUNNING")
        sys.exit(hook(action, name))
    elif key == "compute ssh":
        sys.exit(hook("ssh", opt("command")))
    elif key == "compute scp":
        src, dst = words[2], words[3]
        (STUB / "scp").mkdir(exist_ok=True)
        shutil.copy(src, STUB / "scp" / dst.split(":", 1)[1])
elif prog == "gsutil":
    args = [a for a in argv if a not in ("-m", "-q")]
    cmd, rest = args[0], args[1:]
    injected("gsutil_" + cmd)
    if cmd == "ls":
        if not gcs(rest[-1]).is_dir():
            fail(f"BucketNotFoundException: 404 {rest[-1]} bucket does not exist.")
    elif cmd == "mb":
        gcs(rest[-1]).mkdir(parents=True)
    elif cmd == "cat":
        if not gcs(rest[0]).is_file():
            fail(f"CommandException: No URLs matched: {rest[0]}")
        sys.stdout.write(gcs(rest[0]).read_text())
    elif cmd == "stat":
        sys.exit(0 if gcs(rest[0]).is_file() else 1)
    elif cmd in ("cp", "rsync"):
        src, dst = [gcs(p) if p.startswith("gs://") else Path(p) for p in rest[-2:]]
        if not src.exists():
            fail(f"CommandException: No URLs matched: {rest[-2]}")
        if cmd == "cp":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
        else:
            shutil.copytree(src, dst, dirs_exist_ok=True)
'''

# The VM side's `python`: prepare.py writes meta.json; train.py counts iterations to 4 in ckpt.pt (one
# checkpoint per iteration), stops like train.py on SIGTERM (saves, says so, exits 0), and with
# STUB_PAUSE_AT=N waits at iteration N for that signal.
STUB_PYTHON = r'''#!PYTHON
import json, os, signal, sys, time
from pathlib import Path

STUB = Path(os.environ["STUB_DIR"])
args = sys.argv[1:]
with open(STUB / "python_calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\n")
opt = lambda name, default=None: args[args.index("--" + name) + 1] if "--" + name in args else default
if args[0].endswith("prepare.py"):
    out = Path(opt("out_dir", "data/europarl"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text("{}")
    sys.exit(0)
out = Path(opt("out_dir"))
ckpt = out / "ckpt.pt"
if opt("init_from") == "resume":
    it = int(ckpt.read_text())
else:
    assert not ckpt.exists(), "scratch into an out_dir with ckpt.pt"
    out.mkdir(parents=True, exist_ok=True)
    it = 0
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while it < 4:
    it += 1
    (out / "ckpt.tmp").write_text(str(it))
    os.replace(out / "ckpt.tmp", ckpt)
    print(f"iter {it}", flush=True)
    if it == int(os.environ.get("STUB_PAUSE_AT", "-1")):
        (STUB / "paused").write_text(str(it))
        while not stop:
            time.sleep(0.02)
    if stop:
        print(f"stopped by signal at iter {it}; continue with --init_from resume --out_dir {out}")
        sys.exit(0)
    time.sleep(0.3)
(out / "best.pt").write_text(str(it))
(out / "training_log.json").write_text(json.dumps({"iter": it}))
'''


@pytest.fixture
def stub(tmp_path):
    """A stub directory and the environment that puts stub gcloud/gsutil first on PATH."""
    stub_dir = tmp_path / "stub"
    (stub_dir / "bin").mkdir(parents=True)
    for sub in ("fail", "on", "gcs", "vm"):
        (stub_dir / sub).mkdir()
    for prog in ("gcloud", "gsutil"):
        path = stub_dir / "bin" / prog
        path.write_text(STUB.replace("PYTHON", sys.executable, 1))
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "CLOUDSDK_", "BACKPACK_", "STUB_"))}
    env.update(PATH=f"{stub_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", STUB_DIR=str(stub_dir),
               GCP_POLL_S="0", GCP_SSH_WAIT_S="0")
    return stub_dir, env


def run(script, *args, env, timeout=120):
    return subprocess.run(["bash", str(script), *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def calls(stub_dir):
    path = stub_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def find(call_list, *prefix):
    """The calls whose argv starts with prefix (program first)."""
    return [c for c in call_list if c[:len(prefix)] == list(prefix)]


def create_line(output):
    lines = [line for line in output.splitlines() if line.startswith("+ gcloud compute instances create ")]
    assert len(lines) == 1, output
    return lines[0][2:].split()


def one_error_line(result):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_job_training_commands_are_the_seeds():
    for job in SEED:
        first = subprocess.run(["bash", JOB_SH, "command", job], capture_output=True, text=True, check=True).stdout
        resume = subprocess.run(["bash", JOB_SH, "command", job, "resume"], capture_output=True, text=True,
                                check=True).stdout
        assert first.strip() == SEED[job]
        assert resume.strip() == SEED_RESUME[job]


def test_dry_run_prints_the_whole_job_and_runs_nothing(stub):
    stub_dir, env = stub
    result = run(RUN, "backpack_full", "--dry-run", "--project", "proj", env=env)
    assert result.returncode == 0, result.stderr
    assert calls(stub_dir) == []  # not one gcloud/gsutil call
    out = result.stdout
    assert create_line(out) == [
        "gcloud", "compute", "instances", "create", "backpack-full-gpu", "--project=proj", "--zone=us-central1-a",
        "--machine-type=g2-standard-8", "--maintenance-policy=TERMINATE", "--provisioning-model=SPOT",
        "--instance-termination-action=STOP", "--image-family=pytorch-2-9-cu129-ubuntu-2204-nvidia-580",
        "--image-project=deeplearning-platform-release", "--boot-disk-size=200GB", "--boot-disk-type=pd-balanced",
        "--scopes=cloud-platform", "--metadata=install-nvidia-driver=True",
        f"--metadata-from-file=startup-script={REPO}/gcp/startup.sh", "--labels=app=backpack-lm"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for expected in (
            f"  training      {SEED['backpack_full']}",
            f"  on resume     {SEED_RESUME['backpack_full']}",
            "+ gsutil mb -p proj -l us-central1 -b on gs://proj-backpack-runs   (if it does not exist)",
            f"+ gcloud compute ssh backpack-full-gpu --project=proj --zone=us-central1-a --quiet "
            f"'--command=bash backpack/gcp/job.sh start backpack_full gs://proj-backpack-runs/backpack_full {commit} 1'",
            "(if the VM was preempted) + gcloud compute instances start backpack-full-gpu --project=proj "
            "--zone=us-central1-a",
            f"+ gsutil -m rsync -r gs://proj-backpack-runs/backpack_full/out {REPO}/out/backpack_full"):
        assert expected in out.splitlines(), expected
    assert "provisioning  SPOT" in out and "machine type  g2-standard-8" in out


@pytest.mark.parametrize("flags, machine, accelerator", [
    ([], "g2-standard-8", None),
    (["--gpu-type", "nvidia-l4", "--gpu-count", "2"], "g2-standard-24", None),
    (["--gpu-type", "nvidia-tesla-t4"], "n1-standard-8", "--accelerator=type=nvidia-tesla-t4,count=1"),
    (["--gpu-type=nvidia-tesla-v100", "--gpu-count=2", "--machine-type=n1-highmem-16"], "n1-highmem-16",
     "--accelerator=type=nvidia-tesla-v100,count=2"),
    (["--gpu-type", "nvidia-tesla-a100"], "a2-highgpu-1g", None),
])
def test_create_accelerator_flags(stub, flags, machine, accelerator):
    _, env = stub
    result = run(CREATE, "--dry-run", "--project", "p", *flags, env=env)
    assert result.returncode == 0, result.stderr
    argv = create_line(result.stdout)
    assert argv[4] == "backpack-gpu"
    assert f"--machine-type={machine}" in argv
    assert [a for a in argv if a.startswith("--accelerator")] == ([accelerator] if accelerator else [])
    assert "--maintenance-policy=TERMINATE" in argv


def test_create_settings_from_env_and_flags_on_demand(stub):
    _, env = stub
    env = {**env, "GCP_PROJECT": "envproj", "GCP_ZONE": "europe-west4-a", "GCP_DISK_SIZE": "80",
           "GCP_IMAGE_FAMILY": "pytorch-2-7-cu128-ubuntu-2204-nvidia-570"}
    result = run(CREATE, "--dry-run", "--on-demand", "--instance", "mine", "--disk-size", "120", env=env)
    argv = create_line(result.stdout)
    assert argv[4:8] == ["mine", "--project=envproj", "--zone=europe-west4-a", "--machine-type=g2-standard-8"]
    assert "--provisioning-model=STANDARD" in argv and not [a for a in argv if "termination-action" in a]
    assert "--boot-disk-size=120GB" in argv  # the flag wins over GCP_DISK_SIZE
    assert "--image-family=pytorch-2-7-cu128-ubuntu-2204-nvidia-570" in argv


def test_create_refuses_unknown_settings(stub):
    _, env = stub
    assert "no default machine type" in one_error_line(run(CREATE, "--dry-run", "--gpu-type", "nvidia-l4",
                                                             "--gpu-count", "3", env=env))
    assert "takes no GPU" in one_error_line(run(CREATE, "--dry-run", "--machine-type", "e2-standard-4", env=env))
    assert "unknown argument --bogus" in one_error_line(run(CREATE, "--bogus", env=env))


def test_full_run_resumes_after_a_preemption_and_fetches(stub, tmp_path):
    """The whole job against the stubs: bucket made, VM created, repository copied at HEAD, setup, detached
    start; then the VM is preempted (stopped), a first restart is refused for lack of capacity, the second
    works and the (stub) startup script finishes the job; the results are fetched."""
    stub_dir, env = stub
    gcs_job = stub_dir / "gcs" / "proj-backpack-runs" / "backpack_full"
    (stub_dir / "on" / "ssh").write_text(f"""
case "$1" in
  *"job.sh status"*) echo none ;;
  *"job.sh start"*)  # the job starts, writes its state, and the spot VM is preempted
     mkdir -p {gcs_job}/out; echo "running abc" > {gcs_job}/job_state
     echo TERMINATED > {stub_dir}/vm/backpack-full-gpu ;;
esac
""")
    (stub_dir / "on" / "start").write_text(f"""  # the startup script resumes, the job ends
echo 4 > {gcs_job}/out/ckpt.pt; echo 4 > {gcs_job}/out/best.pt; echo '{{}}' > {gcs_job}/out/training_log.json
echo "the log" > {gcs_job}/gcp_job.log; echo "done abc" > {gcs_job}/job_state
""")
    (stub_dir / "fail" / "compute_instances_start.once").write_text(EXHAUSTED_ERROR)
    results = tmp_path / "results"
    result = run(RUN, "backpack_full", "--project", "proj", "--results-dir", results, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    seen = calls(stub_dir)
    kinds = []
    for c in seen:
        if c[0] == "gsutil":
            kinds.append("gsutil " + next(a for a in c[1:] if not a.startswith("-")))
        elif c[1:3] == ["compute", "ssh"]:
            cmd = next(a for a in c if a.startswith("--command="))
            kinds.append("ssh " + ("status" if "status" in cmd else "setup" if "setup" in cmd else
                                   "start" if "start" in cmd else cmd.split("=", 1)[1]))
        elif c[1:3] == ["compute", "scp"]:
            kinds.append("compute scp")
        else:
            kinds.append(" ".join(a for a in c[1:4] if not a.startswith("-")))
    assert kinds == [
        "auth list", "gsutil cat", "gsutil ls", "gsutil mb",
        "compute instances describe", "compute images describe-from-family", "compute instances create",
        "ssh true", "ssh status", "compute scp", "ssh setup", "ssh start",
        "gsutil cat", "compute instances describe", "compute instances start",   # preempted; no capacity
        "gsutil cat", "compute instances describe", "compute instances start",   # restarted
        "gsutil cat", "gsutil rsync", "gsutil cp"], kinds
    create = find(seen, "gcloud", "compute", "instances", "create")[0]
    assert "--provisioning-model=SPOT" in create and "--instance-termination-action=STOP" in create
    assert f"--metadata-from-file=startup-script={REPO}/gcp/startup.sh" in create
    assert find(seen, "gsutil", "mb") == [["gsutil", "mb", "-p", "proj", "-l", "us-central1", "-b", "on",
                                            "gs://proj-backpack-runs"]]

    # the repository went over at HEAD, and the job was started with that commit
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    archive = stub_dir / "scp" / f"backpack-{commit[:12]}.tgz"
    with tarfile.open(archive) as tar:
        train_py = tar.extractfile("train.py").read()
    assert train_py == subprocess.run(["git", "show", "HEAD:train.py"], cwd=REPO, capture_output=True).stdout
    start = [c for c in seen if any("job.sh start" in a for a in c)][0]
    assert start[-1] == f"--command=bash backpack/gcp/job.sh start backpack_full gs://proj-backpack-runs/backpack_full {commit} 1"

    assert "no free nvidia-l4 capacity now (ZONE_RESOURCE_POOL_EXHAUSTED)" in result.stdout  # said, not fatal
    assert "(spot preemption)" in result.stdout
    assert sorted(p.name for p in results.iterdir()) == ["best.pt", "ckpt.pt", "gcp_job.log", "training_log.json"]
    assert (results / "ckpt.pt").read_text().strip() == "4"


def test_rerun_leaves_a_running_job_alone_and_a_finished_one_is_only_fetched(stub, tmp_path):
    stub_dir, env = stub
    (stub_dir / "vm" / "transformer-full-gpu").write_text("RUNNING")
    (stub_dir / "gcs" / "proj-backpack-runs").mkdir()
    (stub_dir / "on" / "ssh").write_text('case "$1" in *"job.sh status"*) echo running ;; esac\n')
    result = run(RUN, "transformer_full", "--project", "proj", "--detach", env=env)
    assert result.returncode == 0, result.stderr
    seen = calls(stub_dir)
    assert not find(seen, "gcloud", "compute", "instances", "create") and not find(seen, "gcloud", "compute", "scp")
    assert not [c for c in seen if any("job.sh start" in a for a in c)]
    assert "the job is already running on transformer-full-gpu: left as it is" in result.stdout

    (stub_dir / "calls.jsonl").unlink()
    job = stub_dir / "gcs" / "proj-backpack-runs" / "transformer_full"
    (job / "out").mkdir(parents=True)
    (job / "out" / "best.pt").write_text("w")
    (job / "gcp_job.log").write_text("log")
    (job / "job_state").write_text("done abc 2025-01-01T00:00:00Z\n")
    result = run(RUN, "transformer_full", "--project", "proj", "--results-dir", tmp_path / "r", env=env)
    assert result.returncode == 0, result.stderr
    assert [c[:2] for c in calls(stub_dir)] == [["gcloud", "auth"], ["gsutil", "cat"], ["gsutil", "-m"],
                                                ["gsutil", "cp"]]
    assert (tmp_path / "r" / "best.pt").read_text() == "w"


def test_wait_resumes_a_job_that_stopped_on_a_running_vm(stub, tmp_path):
    """While waiting, a VM that runs but whose job stopped (its process killed, a failed startup script) gets
    `job.sh resume`: the job goes on from its last checkpoint."""
    stub_dir, env = stub
    (stub_dir / "vm" / "backpack-full-gpu").write_text("RUNNING")
    job = stub_dir / "gcs" / "proj-backpack-runs" / "backpack_full"
    (job / "out").mkdir(parents=True)
    (job / "job_state").write_text("running abc\n")
    (stub_dir / "on" / "ssh").write_text(f"""
case "$1" in
  *"job.sh status"*)  # running when the script arrives, interrupted at its first look while waiting
     n=$(cat {stub_dir}/n 2>/dev/null || echo 0); echo $((n + 1)) > {stub_dir}/n
     [ "$n" = 1 ] && echo interrupted || echo running ;;
  *"job.sh resume"*) echo w > {job}/out/best.pt; echo log > {job}/gcp_job.log; echo "done abc" > {job}/job_state ;;
esac
""")
    result = run(RUN, "backpack_full", "--project", "proj", "--results-dir", tmp_path / "r", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [next(a for a in c if a.startswith("--command=")) for c in find(calls(stub_dir), "gcloud", "compute", "ssh")]
    assert commands == ["--command=true", "--command=cd backpack 2>/dev/null && bash gcp/job.sh status || echo none",
                        "--command=bash backpack/gcp/job.sh status", "--command=bash backpack/gcp/job.sh resume"]
    assert "the job is not running on backpack-full-gpu (interrupted): resuming it" in result.stdout
    assert (tmp_path / "r" / "best.pt").read_text() == "w\n"


def test_connect_with_port_forward(stub):
    stub_dir, env = stub
    (stub_dir / "vm" / "backpack-full-gpu").write_text("RUNNING")
    result = run(CONNECT, "backpack_full", "--project", "p", "--zone", "europe-west4-a", "--port", "8888",
                 "--port", "6006:16006", env=env)
    assert result.returncode == 0, result.stderr
    assert find(calls(stub_dir), "gcloud", "compute", "ssh") == [[
        "gcloud", "compute", "ssh", "backpack-full-gpu", "--project=p", "--zone=europe-west4-a", "--",
        "-L", "8888:localhost:8888", "-L", "6006:localhost:16006"]]


def test_connect_says_when_the_vm_is_missing_or_stopped(stub):
    stub_dir, env = stub
    line = one_error_line(run(CONNECT, "--project", "p", env=env))
    assert line == ("error: no instance backpack-gpu in zone us-central1-a of project p: create it with "
                    "./create_gpu_instance.sh (or ./run_on_gcp_gpu.sh JOB)")
    (stub_dir / "vm" / "backpack-gpu").write_text("TERMINATED")
    line = one_error_line(run(CONNECT, "--project", "p", env=env))
    assert line == ("error: instance backpack-gpu is TERMINATED: start it with gcloud compute instances start "
                    "backpack-gpu --project=p --zone=us-central1-a")
    assert not find(calls(stub_dir), "gcloud", "compute", "ssh")


def without_gcloud_path(tmp_path):
    """A PATH holding every command of the current PATH but gcloud and gsutil (links in one directory)."""
    farm = tmp_path / "path"
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory) / name
            if name in ("gcloud", "gsutil") or (farm / name).exists() or not os.access(target, os.X_OK):
                continue
            (farm / name).symlink_to(target)
    return str(farm)


@pytest.mark.parametrize("script, args", [(RUN, ["backpack_full"]), (CREATE, []), (CONNECT, [])])
def test_gcloud_missing_or_not_authenticated_or_no_project(stub, tmp_path, script, args):
    stub_dir, env = stub
    line = one_error_line(run(script, *args, env={**env, "PATH": without_gcloud_path(tmp_path)}))
    assert line == ("error: gcloud not found on PATH: install the Google Cloud CLI "
                    "(https://cloud.google.com/sdk/docs/install), then run gcloud auth login")
    (stub_dir / "noauth").touch()
    line = one_error_line(run(script, *args, "--project", "p", env=env))
    assert line == "error: gcloud is not authenticated (no active account): run gcloud auth login"
    (stub_dir / "noauth").unlink()
    line = one_error_line(run(script, *args, env=env))  # no --project, none configured
    assert line == "error: no GCP project: pass --project ID, set GCP_PROJECT, or run gcloud config set project ID"
    assert not find(calls(stub_dir), "gcloud", "compute")
    (stub_dir / "calls.jsonl").unlink()
    (stub_dir / "project").write_text("configured-proj\n")  # gcloud config set project configured-proj
    result = run(script, *args, "--dry-run", env=env)
    assert "--project=PROJECT_ID" in result.stdout  # a dry run asks gcloud nothing, not even the project
    assert calls(stub_dir) == []


def test_create_with_the_configured_project(stub):
    stub_dir, env = stub
    (stub_dir / "project").write_text("configured-proj\n")
    result = run(CREATE, "--gpu-type", "nvidia-tesla-t4", env=env)
    assert result.returncode == 0, result.stderr
    assert [c[1:4] for c in calls(stub_dir)] == [
        ["auth", "list", "--filter=status:ACTIVE"], ["config", "get-value", "project"],
        ["compute", "instances", "describe"], ["compute", "images", "describe-from-family"],
        ["compute", "instances", "create"]]
    create = find(calls(stub_dir), "gcloud", "compute", "instances", "create")[0]
    assert create[1:] == create_line(result.stdout)[1:]  # what it printed is what it ran
    assert "--project=configured-proj" in create and "--accelerator=type=nvidia-tesla-t4,count=1" in create
    assert "created backpack-gpu; connect with: ./connect_gcp_gpu.sh --instance backpack-gpu" in result.stdout
    assert "Created [https://www.googleapis.com/compute/v1/projects/configured-proj" in result.stderr
    again = run(CREATE, env=env)  # the instance exists: nothing is created
    assert "instance backpack-gpu exists already (RUNNING): nothing created" in again.stdout
    assert len(find(calls(stub_dir), "gcloud", "compute", "instances", "create")) == 1


@pytest.mark.parametrize("script, args, message, expected", [
    (CREATE, [], QUOTA_ERROR, QUOTA_LINE),
    (RUN, ["finetune"], QUOTA_ERROR, QUOTA_LINE),
    (CREATE, [], EXHAUSTED_ERROR,
     "error: gcloud compute instances create: zone us-central1-a has no free nvidia-l4 capacity now "
     "(ZONE_RESOURCE_POOL_EXHAUSTED): retry later or pick another --zone (gcloud compute accelerator-types list "
     "--filter=name=nvidia-l4)"),
    (CREATE, [], NOT_OFFERED_ERROR,
     "error: gcloud compute instances create: zone us-central1-a does not offer g2-standard-8 / nvidia-l4: zones "
     "that do: gcloud compute accelerator-types list --filter=name=nvidia-l4"),
])
def test_quota_or_zone_refused_is_one_line(stub, script, args, message, expected):
    stub_dir, env = stub
    (stub_dir / "fail" / "compute_instances_create").write_text(message)
    assert one_error_line(run(script, *args, "--project", "p", env=env)) == expected
    assert not find(calls(stub_dir), "gcloud", "compute", "ssh")


def test_unknown_zone_is_one_line(stub):
    stub_dir, env = stub
    (stub_dir / "fail" / "compute_instances_describe").write_text(UNKNOWN_ZONE_ERROR)
    line = one_error_line(run(CREATE, "--project", "p", "--zone", "us-central1-z", env=env))
    assert line == ("error: gcloud compute instances describe: zone us-central1-z does not exist "
                    "(gcloud compute zones list)")


def wait_for(condition, what, log, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; the job's log:\n" + (log.read_text() if log.exists() else ""))


def test_vm_job_resumes_from_the_bucket_after_a_preemption(stub, tmp_path):
    """gcp/job.sh on a fake VM home: the job prepares the data and trains; its checkpoints reach the bucket;
    a preemption (SIGTERM to the whole session) stops it with the state left 'running'; after a reboot
    that lost the local out_dir, gcp/startup.sh reruns it: out_dir restored from the bucket, the seed's
    command with --init_from resume, state 'done', the VM stopped."""
    stub_dir, env = stub
    vm_repo = tmp_path / "vm" / "home" / "alice" / "backpack"
    (vm_repo / "gcp").mkdir(parents=True)
    for name in ("job.sh", "startup.sh"):
        shutil.copy(REPO / "gcp" / name, vm_repo / "gcp" / name)
    python = stub_dir / "bin" / "python-stub"
    python.write_text(STUB_PYTHON.replace("PYTHON", sys.executable, 1))
    python.chmod(0o755)
    env = {**env, "BACKPACK_PYTHON": str(python), "BACKPACK_SYNC_EVERY_S": "0.05",
           "BACKPACK_POWEROFF": f"touch {tmp_path / 'powered-off'}",
           "BACKPACK_JOB_GLOB": str(tmp_path / "vm" / "home" / "*" / "backpack" / "gcp_job.env")}
    bucket = stub_dir / "gcs" / "bkt" / "backpack_full"
    log = vm_repo / "gcp_job.log"

    def job(*args, extra=None):
        return subprocess.run(["bash", vm_repo / "gcp" / "job.sh", *args], env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=60)

    started = job("start", "backpack_full", "gs://bkt/backpack_full", "abc123", "1", extra={"STUB_PAUSE_AT": "2"})
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split("(pid ")[1].split(")")[0])
    wait_for(lambda: (bucket / "out" / "ckpt.pt").is_file() and (bucket / "out" / "ckpt.pt").read_text() == "2",
             "the iteration-2 checkpoint in the bucket", log)
    assert job("status").stdout.strip() == "running"
    assert job("start", "backpack_full", "gs://bkt/backpack_full", "abc123", "1").stdout.strip() == \
        f"the job is already running (log: {vm_repo / 'gcp_job.log'})"

    os.killpg(pid, signal.SIGTERM)  # what a spot preemption's shutdown does to the session
    wait_for(lambda: job("status").stdout.strip() == "interrupted", "the stopped job", log)
    assert (vm_repo / "gcp_job.state").read_text().startswith("running abc123 ")
    assert (bucket / "job_state").read_text().startswith("running abc123 ")
    assert not (tmp_path / "powered-off").exists()

    shutil.rmtree(vm_repo / "out")  # the reboot lost the local disk: the bucket's copy is all there is
    # a status check (run_on_gcp_gpu.sh --wait polls it) holds the lock while the VM boots: the resume
    # must neither take it for a run nor give up
    held = tmp_path / "probe-holds-the-lock"
    probe = subprocess.Popen(["flock", "-s", vm_repo / "gcp_job.lock", "-c", f"touch {held}; sleep 1"])
    wait_for(held.exists, "the status check to hold the lock", log)
    booted = subprocess.run(["bash", vm_repo / "gcp" / "startup.sh"], env=env, capture_output=True, text=True,
                            timeout=60)
    probe.wait()
    assert booted.returncode == 0, booted.stderr
    wait_for(lambda: job("status").stdout.strip() == "done", "the resumed job to finish", log)

    python_calls = [json.loads(line) for line in (stub_dir / "python_calls.jsonl").read_text().splitlines()]
    assert python_calls == [["data/europarl/prepare.py", "--language_pair", "en-fr"],
                            SEED["backpack_full"].split()[1:], SEED_RESUME["backpack_full"].split()[1:]]
    assert (vm_repo / "out" / "backpack_full" / "ckpt.pt").read_text() == "4"
    assert (bucket / "out" / "ckpt.pt").read_text() == "4" and (bucket / "out" / "best.pt").is_file()
    assert (bucket / "job_state").read_text().startswith("done abc123 ")
    text = log.read_text()
    assert "stopped by signal at iter 2" in text and "no local ckpt.pt: restoring out/backpack_full" in text
    assert "job backpack_full finished: done (exit status 0)" in (bucket / "gcp_job.log").read_text()
    wait_for(lambda: (tmp_path / "powered-off").exists(), "the VM to stop itself", log)
    assert job("resume").stdout.strip().endswith("nothing to resume (job: done)")
