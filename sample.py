"""
Sample from a trained model (KV-cached generation).

    python sample.py --out_dir out/tiny_backpack --start "<en> Thank you, Mr President. <fr>" --greedy
    python sample.py --out_dir out/tiny_backpack --start FILE:prompt.txt --num_samples 3 --top_k 50

In --start, `<en>` and `<fr>` are the language tags (inserted as tag ids, not spelled out);
generation stops at the end-of-document token. A prompt longer than the model's context keeps its last
block_size tokens (said in one line); --greedy is deterministic, so it prints one sample (said too).
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import re

import torch

from checkpoint import load_model
from errors import MissingFileError, UserError, check_range, resolve_device, run_main, warn
from tokenizer import load_tokenizer

TAG = re.compile(r'<(en|fr)>')


def encode_prompt(tokenizer, text):
    """Token ids of `text`, where `<en>` / `<fr>` become language-tag ids and the rest is plain text."""
    ids = []
    for i, part in enumerate(TAG.split(text)):
        if i % 2:  # odd parts are the captured tag names
            ids.append(tokenizer.lang_id(part))
        elif part.strip():
            ids.extend(tokenizer.encode(part.strip()))
    if not ids:
        raise UserError("--start is empty: give a prompt such as '<en> Thank you. <fr>'")
    return ids


def read_start(start):
    """The prompt text of --start: the text itself, or the contents of FILE:path."""
    if not start.startswith('FILE:'):
        return start
    path = start[len('FILE:'):]
    if not os.path.isfile(path):
        raise MissingFileError(f"--start {start}: no file {path!r}")
    with open(path, 'rb') as f:
        data = f.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise UserError(f"--start {start}: {path} is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                        f"{e.start}); save it as UTF-8") from None
    return text.replace('\r\n', '\n').replace('\r', '\n')  # the newlines of a text-mode read


def top_k_option(text):
    """--top_k: a number of tokens, or none (sample from the whole distribution)."""
    return None if text.lower() == 'none' else int(text)


def check_settings(args):
    """Every option, before anything is read or loaded: the numbers in their ranges, the device. Returns
    the device to use."""
    check_range('num_samples', args.num_samples, '>= 1')
    check_range('max_new_tokens', args.max_new_tokens, '>= 1')
    check_range('temperature', args.temperature, '> 0')
    check_range('top_k', args.top_k, '>= 1', none=True)
    return resolve_device(args.device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', default='out', help='training output dir (best.pt or ckpt.pt)')
    p.add_argument('--start', default='<en>', help='prompt text, or FILE:path to read it from a file')
    p.add_argument('--num_samples', type=int, default=3)
    p.add_argument('--max_new_tokens', type=int, default=100)
    p.add_argument('--temperature', type=float, default=0.8, help='> 0 (for argmax decoding, --greedy)')
    p.add_argument('--top_k', type=top_k_option, default=200, help='sample among the top k tokens (none: all)')
    p.add_argument('--greedy', action='store_true', help='argmax decoding (ignores temperature/top_k)')
    p.add_argument('--seed', type=int, default=1337)
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)

    args.device = check_settings(args)
    start = read_start(args.start)
    torch.manual_seed(args.seed)
    model, _ = load_model(args.out_dir, args.device)
    tokenizer = load_tokenizer(args.out_dir)
    prompt = encode_prompt(tokenizer, start)
    block_size = model.config.block_size
    if len(prompt) > block_size:  # generate() crops to the last block_size tokens: the start is not seen
        warn(f"the prompt has {len(prompt)} tokens, more than the model's context of {block_size}: "
             f"only its last {block_size} tokens are used")
    num_samples = args.num_samples
    if args.greedy and num_samples > 1:
        warn(f"--greedy decoding is deterministic: printing 1 sample, not {num_samples} identical ones")
        num_samples = 1
    idx = torch.tensor([prompt], device=args.device)
    for i in range(num_samples):
        out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             greedy=args.greedy, stop_ids=[tokenizer.eos_id])
        new = out[0, idx.shape[1]:].tolist()
        print(f"--- sample {i + 1}\n{start.strip()} {tokenizer.decode(new)}")


if __name__ == '__main__':
    run_main(main)
