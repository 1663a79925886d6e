"""
One-command acceptance check on a CUDA GPU (≤ 8 minutes on one H100/H200-class GPU):

    python tools/gpu_check.py --out results/gpu_check

1. mixing: the SDPA sense mixing (what CUDA training runs) and the blockwise kernel against the
   explicit alpha (model.sense_weights + model.mix_senses), fp32 and bf16, forward and backward, at
   the seed's shape (B 8, k 16, T 512, d 384);
2. generation: KV-cached = uncached greedy tokens, Backpack and Transformer, fp32;
3. training: the seed's scratch command (config/train_europarl_scratch.py) for --iters iterations on
   the bundled Europarl sample, with --dtype bfloat16 --compile and with --dtype float16, for both
   model types, then a resume of the bf16 Backpack run to iters + iters/2;
4. bench: tools/bench.py at the seed shape, bf16 + compile.
It prints tokens/s, MFU and peak memory of every run, writes gpu_check.json and the raw logs to --out,
and exits 1 on any mismatch or failed run (after running everything else).

--device cpu --tiny runs the same plumbing with tiny shapes and no compile (what the tests do); its
numbers mean nothing.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402,F401  (before torch)

import torch  # noqa: E402

from kernels import causal_sense_mixing  # noqa: E402
from model import BackpackLM, ModelConfig, StandardTransformerLM, mix_senses, sense_weights  # noqa: E402

# max relative error (max |a - b| / max |b|) allowed against the explicit path, per dtype
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
TRAIN_LINE = re.compile(r'iter (\d+): loss ([\d.naninf]+).*?([\d,]+) tok/s, (?:mfu ([\d.]+)%|([\d.]+) TFLOP/s)')
PEAK_LINE = re.compile(r'peak memory ([\d.]+) GiB')


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12)).item()


def check_mixing(device, dtype, kernel, B, S, T, d):
    """Forward o and the gradients of q, k, v of a kernel against the explicit alpha, in `dtype`."""
    g = torch.Generator(device='cpu').manual_seed(0)
    q, k = (torch.randn(B, S, T, d // S, generator=g) * (S / d) ** 0.25 for _ in range(2))
    v = torch.randn(B, S, T, d, generator=g)
    do = torch.randn(B, T, d, generator=g)
    results = {}
    for name, fn in (('kernel', lambda q, k, v: causal_sense_mixing(q, k, v, kernel)),
                     ('explicit', lambda q, k, v: mix_senses(sense_weights(q, k), v))):
        leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
        o = fn(*leaves)
        o.backward(do.to(device, dtype))
        results[name] = [o.detach()] + [t.grad for t in leaves]
    errors = {n: rel_err(a, b) for n, a, b in zip(('o', 'dq', 'dk', 'dv'), results['kernel'], results['explicit'])}
    return {'kernel': kernel, 'dtype': str(dtype).split('.')[-1], 'max_rel_err': errors,
            'ok': all(e <= TOLERANCE[dtype] for e in errors.values())}


def check_generation(device, cls, shape):
    torch.manual_seed(0)
    model = cls(ModelConfig(dropout=0.0, **shape)).to(device).eval()
    prompt = torch.randint(0, shape['vocab_size'], (2, 16), device=device)
    cached = model.generate(prompt, 48, greedy=True)
    uncached = model.generate(prompt, 48, greedy=True, use_cache=False)
    return {'model': cls.__name__, 'ok': torch.equal(cached, uncached)}


def run(cmd, log_path, timeout):
    """Run a command, tee its output to log_path; returns (returncode, output)."""
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {timeout} s", 124
    Path(log_path).write_text(f"$ {' '.join(map(str, cmd))}\n{output}")
    return code, output, time.time() - started


def training_summary(output):
    """The last logged iteration's loss, tokens/s and MFU (or TFLOP/s), and the peak memory line."""
    rows = TRAIN_LINE.findall(output)
    peak = PEAK_LINE.findall(output)
    if not rows:
        return {}
    it, loss, toks, mfu, tflops = rows[-1]
    return {'last_iter': int(it), 'loss': float(loss), 'tokens_per_s': int(toks.replace(',', '')),
            'mfu_percent': float(mfu) if mfu else None, 'tflops': float(tflops) if tflops else None,
            'peak_memory_gib': float(peak[-1]) if peak else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='results/gpu_check', help='where gpu_check.json and the logs go')
    p.add_argument('--device', default='cuda')
    p.add_argument('--iters', type=int, default=200, help='training iterations per run')
    p.add_argument('--tiny', action='store_true', help='tiny shapes, no compile: test the plumbing (CPU)')
    p.add_argument('--skip', nargs='*', default=[], choices=['mixing', 'generation', 'training', 'bench'])
    args = p.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to torch; run this on a GPU machine (or --device cpu --tiny)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    report = {'device': torch.cuda.get_device_name(args.device) if args.device.startswith('cuda') else 'cpu',
              'torch': torch.__version__, 'started': time.strftime('%Y-%m-%d %H:%M:%S'), 'tiny': args.tiny}
    failures = []

    def record(section, result):
        report.setdefault(section, []).append(result)
        print(json.dumps({section: result}), flush=True)
        if not result.get('ok', True):
            failures.append(f"{section}: {result}")

    seed_shape = dict(B=2, S=4, T=64, d=32) if args.tiny else dict(B=8, S=16, T=512, d=384)
    if 'mixing' not in args.skip:
        for dtype in (torch.float32, torch.bfloat16):
            for kernel in ('sdpa', 'blocks'):
                record('mixing', check_mixing(args.device, dtype, kernel, **seed_shape))

    gen_shape = dict(block_size=128, vocab_size=500, n_layer=2, n_head=2, n_embd=64, n_senses=4)
    if 'generation' not in args.skip:
        for cls in (BackpackLM, StandardTransformerLM):
            record('generation', check_generation(args.device, cls, gen_shape))

    if 'training' not in args.skip:
        data = out / 'data_sample'
        code, output, _ = run([py, 'data/europarl/prepare.py', '--language_pair', 'en-fr', '--source', 'sample',
                               '--tokenizer', 'bpe', '--vocab_size', '8000', '--out_dir', data],
                              out / 'prepare.log', 300)
        record('prepare', {'ok': code == 0})
        small = ['--block_size', '64', '--n_layer', '1', '--n_head', '2', '--n_embd', '32', '--n_senses', '4',
                 '--batch_size', '4'] if args.tiny else []
        every = max(1, args.iters // 10)
        for model_type in ('backpack', 'transformer'):
            for dtype, extra in (('bfloat16', [] if args.tiny else ['--compile']), ('float16', [])):
                run_dir = out / f'runs/{model_type}_{dtype}'
                # the seed's scratch command line, with the data, the length and the logging shortened
                cmd = [py, 'train.py', '--model_type', model_type, '--config', 'train_europarl_scratch',
                       '--out_dir', run_dir, '--data_dir', data, '--init_from', 'scratch',
                       '--device', args.device, '--dtype', dtype, *extra, '--overwrite', '--max_iters', args.iters,
                       '--eval_interval', args.iters, '--eval_iters', 5, '--log_interval', every, *small]
                code, output, wall = run(list(map(str, cmd)), out / f'train_{model_type}_{dtype}.log', 600)
                summary = training_summary(output)
                record('training', {'run': f'{model_type} {dtype}{" compile" if extra else ""}', 'ok': code == 0
                                    and summary.get('last_iter') == args.iters, 'wall_s': round(wall, 1), **summary})
                if model_type == 'backpack' and dtype == 'bfloat16':
                    resumed_to = args.iters + args.iters // 2
                    resume = [c if c != 'scratch' else 'resume' for c in cmd if c != '--overwrite']
                    resume[resume.index('--max_iters') + 1] = resumed_to
                    code, output, wall = run(list(map(str, resume)), out / 'train_backpack_resume.log', 600)
                    summary = training_summary(output)
                    record('training', {'run': 'backpack bfloat16 resume', 'ok': code == 0 and
                                        summary.get('last_iter') == resumed_to, 'wall_s': round(wall, 1), **summary})

    if 'bench' not in args.skip:
        cmd = [py, 'tools/bench.py', '--device', args.device]
        cmd += ['--quick'] if args.tiny else ['--dtype', 'bfloat16', '--compile']
        code, output, wall = run(cmd, out / 'bench.log', 600)
        record('bench', {'ok': code == 0, 'wall_s': round(wall, 1), 'output_tail': output.splitlines()[-20:]})

    report['failures'] = failures
    (out / 'gpu_check.json').write_text(json.dumps(report, indent=1))
    print(f"{'FAILED: ' + str(len(failures)) + ' check(s)' if failures else 'all checks passed'}; "
          f"report in {out / 'gpu_check.json'}")
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
