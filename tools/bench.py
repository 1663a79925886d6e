"""
Speed and memory of model.py at the seed's scratch shape (6 layers, 6 heads, d 384, k 16, vocab 32k):
one training step (forward + backward + AdamW step) of the Backpack and of the Transformer with the
same contextual net, for T = 128, 512, 1024 at a fixed number of tokens per batch; the Backpack's
fast path against its explicit-alpha path, against the opt-in approximate sense dedup in training
(sense_dropout_shared_per_batch) and against the plain path (per-position senses, explicit alpha,
full B*T*V logits); cached against uncached generation; and the seed configuration's parameter counts
for each tokenizer option. Each measured variant prints a line (stderr) as soon as it is measured.

    python tools/bench.py                     # CPU (and CUDA too when present)
    python tools/bench.py --quick             # every part, smaller: ~1 minute on 2 quiet cores
    python tools/bench.py --device cuda --dtype bfloat16 --compile

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
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import system  # noqa: E402  (before torch: OMP_WAIT_POLICY, kept when set in the environment)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model import BackpackLM, ModelConfig, StandardTransformerLM  # noqa: E402

SEED_SHAPE = dict(n_layer=6, n_head=6, n_embd=384, n_senses=16, dropout=0.1, bias=False)
VARIANTS = {  # name: (model class, config changes, explicit alpha, full logits)
    'transformer': (StandardTransformerLM, {}, False, False),
    'backpack': (BackpackLM, {}, False, False),
    'backpack explicit-alpha': (BackpackLM, {}, True, False),
    'backpack shared-dropout': (BackpackLM, {'sense_dropout_shared_per_batch': True}, False, False),
    'backpack plain': (BackpackLM, {'dedup_senses': False}, True, True),
}
# --quick: every part at a smaller size (the seed shape and vocabulary kept)
QUICK = dict(seq_lens=[128], tokens=1024, iters=2, gen_tokens=64, gen_batches=[1])
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
    cls, changes, explicit, full_logits = VARIANTS[variant]
    device, dtype = args.device, {'float32': torch.float32, 'bfloat16': torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    model = cls(ModelConfig(block_size=T, vocab_size=vocab_size, **SEED_SHAPE, **changes)).to(device)
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
    progress(f"T={T}: {len(VARIANTS)} variants, {args.iters + 2} steps each")
    steps, static = {}, {}
    for v in VARIANTS:
        steps[v], static[v] = make_step(args, v, T, vocab_size)
    for step in steps.values():
        step()  # warm-up: allocates the gradients and optimizer state (and compiles)
    peak = {}
    for v, step in steps.items():
        peak[v] = peak_memory_mb(step, args.device)
        progress(f"T={T} {v}: peak rise {peak[v]:.0f} MB")
    wall, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for r in range(args.iters):
        for v, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
        progress(f"T={T} round {r + 1}/{args.iters}: " + ", ".join(f"{v} {wall[v][-1]:.2f} s" for v in VARIANTS))
    for v in VARIANTS:
        progress(f"T={T} {v}: {statistics.median(wall[v]):.2f} s/step (median), peak rise {peak[v]:.0f} MB")
    ratios = [statistics.median(b / t for b, t in zip(clock['backpack'], clock['transformer'])) for clock in (wall, cpu)]
    return {v: {'time_s': statistics.median(wall[v]), 'peak_mb': peak[v], 'static_mb': static[v]}
            for v in VARIANTS}, ratios


def generation(args):
    """Seconds to generate --gen_tokens greedy tokens after a --gen_prompt-token prompt with and without
    the caches, at each of --gen_batches: batch 1 (decoding is then bound by reading the weights once
    per token) and batch 8 (batched translation). Cached: the KV cache, and for the Backpack its sense
    table (the sense network runs once per id new to it); uncached: every step recomputes the window,
    senses included, as nanoGPT does."""
    rows = []
    for batch in args.gen_batches:
        for name, cls in (('BackpackLM', BackpackLM), ('StandardTransformerLM', StandardTransformerLM)):
            torch.manual_seed(0)
            model = cls(ModelConfig(block_size=512, vocab_size=args.vocab_size, **SEED_SHAPE)).to(args.device).eval()
            prompt = torch.randint(0, args.vocab_size, (batch, args.gen_prompt), device=args.device)
            model.generate(prompt, 2, greedy=True)  # warm-up (first-call allocations), untimed
            if cls is BackpackLM:
                model.clear_sense_table()  # timed runs start from an empty sense table
            out, secs = {}, {}
            for use_cache in (True, False):
                t0 = time.perf_counter()
                out[use_cache] = model.generate(prompt, args.gen_tokens, greedy=True, use_cache=use_cache)
                secs[use_cache] = time.perf_counter() - t0
            assert torch.equal(out[True], out[False]), "cached and uncached generation differ"
            progress(f"generation {name} batch {batch}: cached {secs[True]:.2f} s, uncached {secs[False]:.2f} s, "
                     f"{secs[False] / secs[True]:.1f}x")
            rows.append((name, batch, secs[True], secs[False]))
    return rows


def progress(line):
    print(line, file=sys.stderr, flush=True)


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
          "| shared-dropout s | plain s | Transformer MB | Backpack MB | explicit-alpha MB | plain MB "
          "| **Backpack / plain MB** rise, with weights + AdamW |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for T, (r, (wall_ratio, cpu_ratio)) in grid.items():
        print(f"| {T} | {args.tokens // T} | {r['transformer']['time_s']:.2f} | {r['backpack']['time_s']:.2f} "
              f"| **{wall_ratio:.2f}**, {cpu_ratio:.2f} | {r['backpack explicit-alpha']['time_s']:.2f} "
              f"| {r['backpack shared-dropout']['time_s']:.2f} | {r['backpack plain']['time_s']:.2f} "
              f"| {r['transformer']['peak_mb']:.0f} | {r['backpack']['peak_mb']:.0f} "
              f"| {r['backpack explicit-alpha']['peak_mb']:.0f} | {r['backpack plain']['peak_mb']:.0f} "
              f"| **{r['backpack']['peak_mb'] / r['backpack plain']['peak_mb']:.2f}**, "
              f"{total_mb(r['backpack']) / total_mb(r['backpack plain']):.2f} |")
    print(f"\n| generation: {args.gen_prompt}-token prompt + {args.gen_tokens} greedy tokens | batch | cached s "
          f"| uncached s | speed-up |")
    print("|---|---|---|---|---|")
    for name, batch, cached, uncached in gen_rows:
        print(f"| {name} | {batch} | {cached:.2f} | {uncached:.2f} | **{uncached / cached:.1f}x** |")
    sys.stdout.flush()


def total_mb(result):
    return result['peak_mb'] + result['static_mb']


def hardware(device):
    m = system.machine(device)
    if device == 'cuda':
        return f"{m['device']}, torch {m['torch']}"
    return f"{m['cpu']}, {m['threads']} threads, OMP_WAIT_POLICY {m['omp_wait_policy']}, torch {m['torch']}"


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
    parser.add_argument('--gen_prompt', type=int, default=32, help="generation: prompt tokens")
    parser.add_argument('--gen_tokens', type=int, default=256, help="generation: new tokens")
    parser.add_argument('--gen_batches', type=int, nargs='+', default=[1, 8], help="generation: batch sizes")
    parser.add_argument('--quick', action='store_true',
                        help=f"every part at a smaller size, ~1 minute on 2 quiet cores: {QUICK} (options given "
                             f"explicitly still win)")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args()

    print("## parameters of the seed configuration (6 layers, 6 heads, d 384, k 16, block 512)\n")
    print("| tokenizer | vocab | Backpack total | of which embedding | sense network | Transformer total |")
    print("|---|---|---|---|---|---|")
    for name, V, bp, tr in param_counts():
        print(f"| {name} | {V:,} | {bp['total']:,} | {bp['embedding']:,} | {bp['sense_network']:,} | {tr['total']:,} |")
    sys.stdout.flush()
    devices = [args.device] if args.device else ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        args.device = device
        report(args, {T: train_grid(args, T) for T in args.seq_lens}, generation(args))


if __name__ == '__main__':
    main()
