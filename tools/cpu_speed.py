"""
How fast the CPU recipe trains under each runtime setting that could make it faster: threads,
OMP_WAIT_POLICY, torch.compile, bfloat16. Each variant trains --probe_iters iterations of
config/train_europarl_cpu.py (evaluation off) and reports ms/iter and tokens/s, and its ratio to the
recipe as it runs (2 threads, PASSIVE, float32, no compile), so that a setting is adopted only when it
is measured to help on this machine.

    python tools/cpu_speed.py --data_dir data/europarl_bpe8k --out results/cpu_reference/speed

Writes speed.json (each variant's settings, ms/iter, tokens/s, the machine) and speed.md (the table) into
--out, and each probe's train.py log beside them. Run it on an otherwise idle machine: the variants run one
after another and the ratios are only as good as the machine's quiet.
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402  first: OMP_WAIT_POLICY before torch loads
from errors import UserError, run_main  # noqa: E402
from tools.cpu_sweep import probe_ms_per_iter  # noqa: E402

# name -> (environment, extra train.py arguments); the first is the reference the others are divided by
VARIANTS = {
    'recipe (2 threads, PASSIVE, float32)': ({'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'PASSIVE'}, []),
    '1 thread': ({'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}, []),
    'OMP_WAIT_POLICY=ACTIVE': ({'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'ACTIVE'}, []),
    '--dtype bfloat16': ({'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'PASSIVE'}, ['--dtype', 'bfloat16']),
    '--compile': ({'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'PASSIVE'}, ['--compile', 'True']),
}


def probe(config, model_type, data_dir, env, extra, probe_iters, work, log_path):
    """cpu_sweep's speed probe of the recipe in a fresh process with `env`: (ms/iter, tokens/iter)."""
    args = ['--config', config, '--device', 'cpu', '--data_dir', data_dir, '--model_type', model_type,
            '--log_interval', 10, '--dtype', 'float32', '--compile', 'False', '--overwrite', *extra]  # a variant's own flags come later and win
    ms = probe_ms_per_iter(f'{model_type} {" ".join(extra)}', args, work, log_path, probe_iters, env=env)
    config = json.loads((Path(work) / 'training_log.json').read_text())['config']
    return ms, config['batch_size'] * config['block_size']


def table(rows, machine, config):
    """The markdown table: each variant's speed and its ratio to the recipe's, per model."""
    lines = [f"Training speed of `--config {config}` on {machine['cpu']} ({machine['cores']} cores, "
             f"torch {machine['torch']}), one variant after another, evaluation off; ms/iter is the mean over the "
             f"log lines after the first (warm-up and compilation excluded). Speed-up = recipe ms/iter / variant "
             f"ms/iter.", '',
             '| model | variant | ms/iter | tokens/s | speed-up |', '|---|---|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['model_type']} | {r['variant']} | {r['ms_per_iter']:.1f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['speedup']:.2f}× |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data_dir', required=True, help='made by data/europarl/prepare.py')
    p.add_argument('--config', default='train_europarl_cpu', help="train.py's --config: the recipe to time")
    p.add_argument('--models', nargs='+', default=['backpack', 'transformer'], choices=['backpack', 'transformer'])
    p.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS),
                   help='which settings to time (the recipe always runs: the ratios are to it)')
    p.add_argument('--probe_iters', type=int, default=60)
    p.add_argument('--out', default='results/cpu_reference/speed')
    p.add_argument('--work_dir', default='out/cpu_speed', help='where the probe checkpoints go')
    args = p.parse_args(argv)
    if args.probe_iters < 20:
        raise UserError("--probe_iters must be at least 20: the first 10-iteration log line is warm-up")
    out, work = Path(args.out), Path(args.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = next(iter(VARIANTS))
    variants = [reference, *[v for v in args.variants if v != reference]]
    machine = {**system.machine(), 'cores': os.cpu_count()}
    rows = []
    for model_type in args.models:
        for variant in variants:
            env, extra = VARIANTS[variant]
            slug = variant.split(' (')[0].replace(' ', '_').replace('=', '_').replace('-', '')
            ms, tokens = probe(args.config, model_type, args.data_dir, env, extra, args.probe_iters, work / f'{model_type}-{slug}',
                               out / f'{model_type}-{slug}.log')
            base = next((r['ms_per_iter'] for r in rows if r['model_type'] == model_type and r['variant'] == reference), ms)
            rows.append({'model_type': model_type, 'variant': variant, 'env': env, 'args': extra,
                         'ms_per_iter': round(ms, 1), 'tokens_per_s': round(1000 * tokens / ms),
                         'speedup': round(base / ms, 3)})
            print(f"{model_type} {variant}: {ms:.1f} ms/iter ({rows[-1]['speedup']:.2f}x the recipe)", flush=True)
    (out / 'speed.json').write_text(json.dumps({'machine': machine, 'config': args.config, 'probe_iters': args.probe_iters,
                                                'data_dir': args.data_dir, 'rows': rows}, indent=1))
    (out / 'speed.md').write_text(table(rows, machine, args.config))
    print(table(rows, machine, args.config))


if __name__ == '__main__':
    run_main(main)
