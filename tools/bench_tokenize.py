"""
Tokens per second of prepare.py's tokenization step for GPT-2 (documents.encode_split: batches of 10,000
sentences through tokenizer.encode_texts), with tiktoken (what prepare uses for GPT-2) against the tokenizers
library (what it used before), on the same sentences, in alternating rounds so that a drift in the machine's
speed hits both alike; checks that both give the same ids.

    python tools/bench_tokenize.py --src ../shared/data/europarl_v7_fr_en/valid      # .en + .fr, 6,000 sentences
    python tools/bench_tokenize.py --src data/europarl_sample/raw/sample --rounds 5

Prints tokens/s (wall and CPU seconds of this process) of each and the ratio.
"""
import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402, F401  first: the OpenMP setting torch reads when it loads

from errors import MissingFileError, run_main  # noqa: E402
from tokenizer import encode_texts, gpt2_encoding  # noqa: E402

CHUNK = 10_000  # documents.ENCODE_CHUNK


def read_lines(prefix):
    """The sentences of PREFIX.en and PREFIX.fr (plain or .gz), English first, as prepare reads a split."""
    lines = []
    for lang in ('en', 'fr'):
        for path in (Path(f'{prefix}.{lang}'), Path(f'{prefix}.{lang}.gz')):
            if path.is_file():
                opener = gzip.open if path.suffix == '.gz' else open
                with opener(path, 'rt', encoding='utf-8') as f:
                    lines += [line.rstrip('\n') for line in f]
                break
        else:
            raise MissingFileError(f'{prefix}.{lang} (or .gz) not found: give --src a prefix of aligned files')
    return lines


def timed(encoder, texts):
    t0, c0 = time.perf_counter(), time.process_time()
    ids = [i for begin in range(0, len(texts), CHUNK) for i in encode_texts(encoder, texts[begin:begin + CHUNK])]
    return time.perf_counter() - t0, time.process_time() - c0, ids


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--src', default='../shared/data/europarl_v7_fr_en/valid', help='prefix of PREFIX.en / PREFIX.fr')
    p.add_argument('--max_sentences', type=int, default=0, help='0: all')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--tokenizer_dir', default=str(REPO / 'data' / 'tokenizers' / 'gpt2'),
                   help='GPT-2 vocab.json + merges.txt')
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / 'data' / 'europarl'))
    from build_tokenizer import load_pretrained
    backend = load_pretrained(argparse.Namespace(tokenizer='gpt2', tokenizer_path=args.tokenizer_dir)).backend
    texts = read_lines(args.src)[:args.max_sentences or None]
    encoders = {'tokenizers': backend, 'tiktoken': gpt2_encoding(backend)}
    wall, cpu, ids = {k: [] for k in encoders}, {k: [] for k in encoders}, {}
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            w, c, ids[name] = timed(encoder, texts)
            wall[name].append(w)
            cpu[name].append(c)
    n_tokens = sum(map(len, ids['tiktoken']))
    print(f'{len(texts):,} sentences, {n_tokens:,} tokens; median of {args.rounds} rounds; ids equal: '
          f'{ids["tiktoken"] == ids["tokenizers"]}')
    print('| encoder | tokens/s (wall) | tokens/s (CPU) |\n|---|---:|---:|')
    for name in encoders:
        print(f'| {name} | {n_tokens / statistics.median(wall[name]):,.0f} | '
              f'{n_tokens / statistics.median(cpu[name]):,.0f} |')
    print(f'tiktoken / tokenizers: {statistics.median(wall["tokenizers"]) / statistics.median(wall["tiktoken"]):.2f}x '
          f'(wall), {statistics.median(cpu["tokenizers"]) / statistics.median(cpu["tiktoken"]):.2f}x (CPU)')
    if ids['tiktoken'] != ids['tokenizers']:
        sys.exit('the two encoders disagree')


if __name__ == '__main__':
    run_main(main)
