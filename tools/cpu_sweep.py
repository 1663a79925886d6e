"""
A short, recorded sweep for the best model per CPU-minute: each candidate trains for the same wall-clock
budget and is judged by its per-language validation bits per byte at the end (tokenizer-independent, so
candidates with different vocabularies compare).

    python tools/cpu_sweep.py --minutes 5 --out results/cpu_reference/sweep \
        --data bpe8k=data/europarl_bpe8k --data bpe16k=data/europarl_bpe16k

Each candidate (CANDIDATES below, or --only NAME ...) is a set of train.py settings on top of
config/train_europarl_tiny.py's structure. So that its learning-rate schedule ends when its time does,
it first runs --probe_iters iterations to measure its speed, then trains from scratch with
max_iters = lr_decay_iters = the iterations that fit in the budget (evaluations included), and
--max_minutes as the hard stop. Writes sweep.json (settings, iterations, tokens/s, val loss and bits per
byte per language, wall-clock) and sweep.md (the table, best first) into --out, and keeps each run's
training_log.json there; the checkpoints stay in --work_dir.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from errors import UserError, run_main  # noqa: E402

BASE = ['--config', 'train_europarl_tiny', '--device', 'cpu', '--dtype', 'float32', '--dropout', 0.0,
        '--warmup_iters', 100, '--log_interval', 10, '--eval_iters', 20]
# name -> (data key, settings): width, depth, senses, context and batch, at a fixed budget
CANDIDATES = {
    'd128-L2-k16-T128': ('bpe8k', dict(n_embd=128, n_layer=2, n_head=2, n_senses=16, block_size=128, batch_size=16,
                                       learning_rate=2e-3)),
    'd192-L3-k16-T128': ('bpe8k', dict(n_embd=192, n_layer=3, n_head=3, n_senses=16, block_size=128, batch_size=16,
                                       learning_rate=1.5e-3)),
    'd256-L4-k16-T128': ('bpe8k', dict(n_embd=256, n_layer=4, n_head=4, n_senses=16, block_size=128, batch_size=16,
                                       learning_rate=1e-3)),
    'd192-L3-k8-T128': ('bpe8k', dict(n_embd=192, n_layer=3, n_head=3, n_senses=8, block_size=128, batch_size=16,
                                      learning_rate=1.5e-3)),
    'd192-L3-k16-T256': ('bpe8k', dict(n_embd=192, n_layer=3, n_head=3, n_senses=16, block_size=256, batch_size=8,
                                       learning_rate=1.5e-3)),
    'd192-L3-k16-T128-bpe16k': ('bpe16k', dict(n_embd=192, n_layer=3, n_head=3, n_senses=16, block_size=128,
                                               batch_size=16, learning_rate=1.5e-3)),
}
MS_PER_ITER = re.compile(r'iter \d+: .*?, ([\d.]+) ms/iter')


def args_of(settings):
    return [str(a) for k, v in settings.items() for a in (f'--{k}', v)]


def train(args, log_path, timeout, env=None):
    """Run train.py (with `env` added to the environment); its output goes to log_path. Returns the output, or
    raises UserError on failure."""
    proc = subprocess.run([sys.executable, str(REPO / 'train.py'), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    Path(log_path).write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise UserError(f"train.py failed (see {log_path}): {(proc.stderr.strip().splitlines() or [''])[-1]}")
    return proc.stdout


def probe_ms_per_iter(name, args, probe_dir, log_path, probe_iters, env=None):
    """Train probe_iters iterations with train.py args (evaluation off) and return the mean ms/iter after the
    first log interval (which includes warm-up, and with --compile the compilation)."""
    probe = train([*args, '--out_dir', probe_dir, '--max_iters', probe_iters, '--eval_interval', 10 ** 9,
                   '--eval_iters', 1], log_path, timeout=1800, env=env)
    times = [float(ms) for ms in MS_PER_ITER.findall(probe)][1:]
    if not times:
        raise UserError(f"{name}: the probe printed no ms/iter line; raise --probe_iters above the log_interval")
    return sum(times) / len(times)


def fitted_iters(ms_per_iter, minutes, evals=5):
    """The iterations that fit in the budget: it also pays for ~`evals` evaluations of 4 splits x eval_iters
    batches, each about a forward pass, hence the 10 % margin; --max_minutes stays the hard stop."""
    return max(10, int(60_000 * minutes / ms_per_iter * 0.9))


def run_candidate(name, data_dir, settings, model_type, minutes, probe_iters, work, out):
    """Probe the speed, then train for the budget; returns the sweep row."""
    run_dir = work / f'{name}-{model_type}'
    common = [*BASE, '--model_type', model_type, '--data_dir', data_dir, *args_of(settings), '--overwrite']
    ms = probe_ms_per_iter(name, common, run_dir / 'probe', out / f'{name}-{model_type}.probe.log', probe_iters)
    iters = fitted_iters(ms, minutes)
    eval_interval = max(1, iters // 5)
    started = time.time()
    train([*common, '--out_dir', run_dir, '--max_iters', iters, '--lr_decay_iters', iters,
           '--eval_interval', eval_interval, '--max_minutes', minutes], out / f'{name}-{model_type}.log',
          timeout=int(120 + 90 * minutes))
    log = json.loads((run_dir / 'training_log.json').read_text())
    (out / f'{name}-{model_type}.training_log.json').write_text(json.dumps(log))
    last = log['evals'][-1]
    return {'name': name, 'model_type': model_type, 'data_dir': str(data_dir), 'settings': settings,
            'probe_ms_per_iter': round(ms, 1), 'planned_iters': iters, 'iters': last['iter'],
            'tokens_seen': last['tokens_seen'], 'wall_s': round(time.time() - started, 1),
            'val': last['val'], 'val_en_bpb': last['val_en_bpb'], 'val_fr_bpb': last['val_fr_bpb'],
            'val_bpb_mean': (last['val_en_bpb'] + last['val_fr_bpb']) / 2}


def table(rows, minutes):
    lines = [f'Sweep: each candidate trained {minutes:g} min on the CPU (speed probed first, schedule fitted to '
             f'the budget); best first by the mean of EN and FR val bits/byte.', '',
             '| candidate | model | data | iterations | tokens seen | val bpb EN | val bpb FR | mean |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in sorted(rows, key=lambda r: r['val_bpb_mean']):
        lines.append(f"| {r['name']} | {r['model_type']} | {Path(r['data_dir']).name} | {r['iters']:,} | "
                     f"{r['tokens_seen']:,} | {r['val_en_bpb']:.3f} | {r['val_fr_bpb']:.3f} | {r['val_bpb_mean']:.3f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', nargs='+', required=True, metavar='KEY=DIR',
                   help='prepared data dirs by key (the candidates name bpe8k, bpe16k)')
    p.add_argument('--minutes', type=float, default=5.0, help='wall-clock budget of each run')
    p.add_argument('--probe_iters', type=int, default=30)
    p.add_argument('--model_type', default='backpack', choices=['backpack', 'transformer'])
    p.add_argument('--only', nargs='*', help='candidate names (default: all)')
    p.add_argument('--candidates', help='a JSON file {name: [data key, {settings}]} instead of CANDIDATES')
    p.add_argument('--out', default='results/cpu_reference/sweep')
    p.add_argument('--work_dir', default='out/sweep', help='where the runs (checkpoints) go')
    args = p.parse_args(argv)
    data = dict(item.split('=', 1) for item in args.data)
    candidates = json.loads(Path(args.candidates).read_text()) if args.candidates else CANDIDATES
    names = args.only or list(candidates)
    for name in names:
        if name not in candidates:
            raise UserError(f"unknown candidate {name!r}; known: {', '.join(candidates)}")
        if candidates[name][0] not in data:
            raise UserError(f"candidate {name} needs --data {candidates[name][0]}=DIR (a dir made by data/europarl/prepare.py)")
    out, work = Path(args.out), Path(args.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        key, settings = candidates[name]
        rows.append(run_candidate(name, data[key], settings, args.model_type, args.minutes, args.probe_iters, work, out))
        print(f"{name}: {rows[-1]['iters']} iterations, val bpb EN {rows[-1]['val_en_bpb']:.3f} "
              f"FR {rows[-1]['val_fr_bpb']:.3f}", flush=True)
        (out / 'sweep.json').write_text(json.dumps({'minutes': args.minutes, 'rows': rows}, indent=1))
        (out / 'sweep.md').write_text(table(rows, args.minutes))
    print(table(rows, args.minutes))


if __name__ == '__main__':
    run_main(main)
