"""
Speed and memory of model.py at the seed's scratch shape (6 layers, 6 heads, d 384, k 16, vocab 32k):
one training step (forward + backward + AdamW step) of the Backpack and of the Transformer with the
same contextual net, for T = 128, 512, 1024 at a fixed number of tokens per batch; the Backpack's
fast path against its explicit-alpha path, without per-batch sense dedup, and against the plain path
(per-position senses, explicit alpha, full B*T*V logits); cached against uncached generation; and the
seed configuration's parameter counts for each tokenizer option.

    python experiments/bench.py                     # CPU (and CUDA too when present)
    python experiments/bench.py --device cuda --dtype bfloat16 --compile

Tokens are drawn from a Zipf(1.1) law over the vocabulary: per 4096 tokens it gives as many distinct
ids (~1,360) as GPT-2 BPE on Europarl en-fr documents (~1,350), which is what sense dedup depends on;
--data_dir DIR takes random windows of DIR/train.bin instead. All variants of one T live in one
process: after a warm-up step each, one step of each measures peak memory (CPU: the rise of the
resident-set high-water mark over the step, read from /proc; CUDA: torch.cuda.max_memory_allocated),
then --iters rounds time one step of every variant in turn, so that a drift in the machine's speed
(other jobs on a shared machine) hits all variants alike. The run takes ~35 minutes on 2 cores.
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# On a shared machine libgomp's default spin-waiting makes every parallel op cost ~8 ms while another
# job holds a core (a 288x384 LayerNorm: 7.7 ms instead of 0.07 ms), which swamps the comparison;
# sleeping workers avoid that (on a quiet machine spinning is faster, ~25% on the tiny config).
# A value set in the environment (e.g. OMP_WAIT_POLICY=ACTIVE) is kept. Read when torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import BackpackLM, ModelConfig, StandardTransformerLM  # noqa: E402

SEED_SHAPE = dict(n_layer=6, n_head=6, n_embd=384, n_senses=16, dropout=0.1, bias=False)
VARIANTS = {  # name: (model class, dedup_senses, explicit alpha, full logits)
    'transformer': (StandardTransformerLM, True, False, False),
    'backpack': (BackpackLM, True, False, False),
    'backpack explicit-alpha': (BackpackLM, True, True, False),
    'backpack no-dedup': (BackpackLM, False, False, False),
    'backpack plain': (BackpackLM, False, True, True),
}
TOKENIZER_VOCABS = {'xlm-roberta (full, + <en> <fr>)': 250_004, 'gpt2 (backpack-gpt2 padded)': 50_264,
                    'bpe-32k': 32_000}
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def batches(args, B, T, vocab_size):
    rng = np.random.default_rng(0)
    if args.data_dir:
        meta = json.loads((Path(args.data_dir) / 'meta.json').read_text())
        data = np.memmap(Path(args.data_dir) / 'train.bin', dtype=meta['dtype'], mode='r')
        while True:
            starts = rng.integers(0, len(data) - T - 1, B)
            xy = torch.from_numpy(np.stack([data[s:s + T + 1] for s in starts]).astype(np.int64))
            yield xy[:, :-1], xy[:, 1:]
    p = 1.0 / np.arange(1, vocab_size + 1) ** 1.1
    while True:
        xy = torch.from_numpy(rng.choice(vocab_size, size=(B, T + 1), p=p / p.sum()))
        yield xy[:, :-1], xy[:, 1:]


def make_step(args, variant, T, vocab_size):
    """A function doing one training step of a fresh model of this variant, and the MB that its
    weights and AdamW state hold between steps (3 fp32 copies of the parameters)."""
    cls, dedup, explicit, full_logits = VARIANTS[variant]
    device, dtype = args.device, {'float32': torch.float32, 'bfloat16': torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    model = cls(ModelConfig(block_size=T, vocab_size=vocab_size, dedup_senses=dedup, **SEED_SHAPE)).to(device)
    optimizer = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), device)
    forward = torch.compile(model) if args.compile else model
    data = batches(args, args.tokens // T, T, vocab_size)

    def step():
        x, y = (t.to(device) for t in next(data))
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            edits = {'alpha': model.contextualization(x)} if explicit else {}
            _, loss = forward(x, y, return_logits=full_logits, **edits)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == 'cuda':
            torch.cuda.synchronize()
    return step, 12 * model.get_num_params(non_embedding=False) / 2 ** 20


def peak_memory_mb(step, device):
    """Rise of memory over one step above what is held before it (weights, optimizer state, other
    variants). CPU: resident set high-water mark, with every allocation over 64 kB mmapped so that a
    freed tensor leaves the resident set at once."""
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.malloc_trim(0)
    Path('/proc/self/clear_refs').write_text('5')  # restart the high-water mark at the current size
    base = rss_mb('VmRSS')
    step()
    peak = rss_mb('VmHWM') - base
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)  # glibc's own ceiling for its dynamic threshold
    return peak


def rss_mb(field):
    status = Path('/proc/self/status').read_text()
    return int(status.split(field + ':')[1].split()[0]) / 1024


def train_grid(args, T):
    """All variants at one T in one process: memory of one step each, then timed steps interleaved
    variant by variant (the machine's speed drifts; a ratio is taken within each round)."""
    vocab_size = args.vocab_size
    if args.data_dir:
        vocab_size = json.loads((Path(args.data_dir) / 'meta.json').read_text())['vocab_size']
    print(f"  T={T}: {len(VARIANTS)} variants, {args.iters + 2} steps each", file=sys.stderr)
    steps, static = {}, {}
    for v in VARIANTS:
        steps[v], static[v] = make_step(args, v, T, vocab_size)
    for step in steps.values():
        step()  # warm-up: allocates the gradients and optimizer state (and compiles)
    peak = {v: peak_memory_mb(step, args.device) for v, step in steps.items()}
    wall, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for _ in range(args.iters):
        for v, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    ratios = [statistics.median(b / t for b, t in zip(clock['backpack'], clock['transformer'])) for clock in (wall, cpu)]
    return {v: {'time_s': statistics.median(wall[v]), 'peak_mb': peak[v], 'static_mb': static[v]}
            for v in VARIANTS}, ratios


def generation(args):
    """Seconds to generate 256 greedy tokens after a 32-token prompt with and without the KV cache, at
    batch 1 (decoding is then bound by reading the weights once per token) and batch 8 (batched
    translation); for the Backpack also with the whole-vocabulary sense table (cache_senses())."""
    rows = []
    for name, cls, table, batch in (('BackpackLM', BackpackLM, False, 1),
                                    ('BackpackLM + cache_senses()', BackpackLM, True, 1),
                                    ('StandardTransformerLM', StandardTransformerLM, False, 1),
                                    ('BackpackLM', BackpackLM, False, 8),
                                    ('StandardTransformerLM', StandardTransformerLM, False, 8)):
        torch.manual_seed(0)
        model = cls(ModelConfig(block_size=512, vocab_size=args.vocab_size, **SEED_SHAPE)).to(args.device).eval()
        if table:
            model.cache_senses()
        prompt = torch.randint(0, args.vocab_size, (batch, 32), device=args.device)
        out, secs = {}, {}
        for use_cache in (True, False):
            t0 = time.perf_counter()
            out[use_cache] = model.generate(prompt, 256, greedy=True, use_cache=use_cache)
            secs[use_cache] = time.perf_counter() - t0
        assert torch.equal(out[True], out[False]), "cached and uncached generation differ"
        rows.append((name, batch, secs[True], secs[False]))
    return rows


def param_counts():
    rows = []
    vocabs = dict(TOKENIZER_VOCABS)
    for meta in sorted(Path(__file__).resolve().parent.parent.glob('data/*/meta.json')):
        m = json.loads(meta.read_text())
        vocabs[f"{meta.parent.name}: {m['tokenizer']['type']}{' compacted' if m['tokenizer'].get('compact') else ''}"] = m['vocab_size']
    for name, V in vocabs.items():
        with torch.device('meta'):
            bp = BackpackLM(ModelConfig(vocab_size=V, **SEED_SHAPE)).param_counts()
            tr = StandardTransformerLM(ModelConfig(vocab_size=V, **SEED_SHAPE)).param_counts()
        rows.append((name, V, bp, tr))
    return rows


def report(args, grid, gen_rows):
    print(f"\n## {args.device} {args.dtype}{' compile' if args.compile else ''}: {hardware(args.device)}\n")
    print(f"Seed scratch shape, vocab {args.vocab_size}, {args.tokens} tokens per batch, one step = "
          f"forward + backward + AdamW; seconds are medians of {args.iters} steps interleaved across the "
          f"variants; the Backpack / Transformer ratios are medians of per-round ratios, of wall-clock "
          f"and of process CPU time (less sensitive to other load on the machine); MB = peak rise of memory "
          f"over a step (activations, gradients, temporaries), to which the weights and AdamW state add "
          f"12 bytes per parameter.\n")
    print("| T | B | Transformer s | Backpack s | **Backpack / Transformer** wall, CPU | explicit-alpha s "
          "| no-dedup s | plain s | Transformer MB | Backpack MB | explicit-alpha MB | plain MB "
          "| **Backpack / plain MB** rise, with weights + AdamW |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for T, (r, (wall_ratio, cpu_ratio)) in grid.items():
        print(f"| {T} | {args.tokens // T} | {r['transformer']['time_s']:.2f} | {r['backpack']['time_s']:.2f} "
              f"| **{wall_ratio:.2f}**, {cpu_ratio:.2f} | {r['backpack explicit-alpha']['time_s']:.2f} "
              f"| {r['backpack no-dedup']['time_s']:.2f} | {r['backpack plain']['time_s']:.2f} "
              f"| {r['transformer']['peak_mb']:.0f} | {r['backpack']['peak_mb']:.0f} "
              f"| {r['backpack explicit-alpha']['peak_mb']:.0f} | {r['backpack plain']['peak_mb']:.0f} "
              f"| **{r['backpack']['peak_mb'] / r['backpack plain']['peak_mb']:.2f}**, "
              f"{total_mb(r['backpack']) / total_mb(r['backpack plain']):.2f} |")
    print("\n| generation: 32-token prompt + 256 greedy tokens | batch | cached s | uncached s | speed-up |")
    print("|---|---|---|---|---|")
    for name, batch, cached, uncached in gen_rows:
        print(f"| {name} | {batch} | {cached:.2f} | {uncached:.2f} | **{uncached / cached:.1f}x** |")
    sys.stdout.flush()


def total_mb(result):
    return result['peak_mb'] + result['static_mb']


def hardware(device):
    if device == 'cuda':
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    policy = os.environ.get('OMP_WAIT_POLICY', 'default')
    return f"{cpu}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY {policy}, torch {torch.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=['cpu', 'cuda'], help="default: cpu, then cuda when present")
    parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--tokens', type=int, default=4096, help="tokens per training batch (B = tokens // T)")
    parser.add_argument('--seq_lens', type=int, nargs='+', default=[128, 512, 1024])
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--vocab_size', type=int, default=32_000)
    parser.add_argument('--data_dir', help="a prepared data dir: batches from its train.bin")
    args = parser.parse_args()

    print("## parameters of the seed configuration (6 layers, 6 heads, d 384, k 16, block 512)\n")
    print("| tokenizer | vocab | Backpack total | of which embedding | sense network | Transformer total |")
    print("|---|---|---|---|---|---|")
    for name, V, bp, tr in param_counts():
        print(f"| {name} | {V:,} | {bp['total']:,} | {bp['embedding']:,} | {bp['sense_network']:,} | {tr['total']:,} |")
    devices = [args.device] if args.device else ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        args.device = device
        report(args, {T: train_grid(args, T) for T in args.seq_lens}, generation(args))


if __name__ == '__main__':
    main()
