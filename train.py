"""
Train a Backpack LM (or its Transformer twin) on a prepared data dir.

One process (CPU smoke run, one GPU):
    python train.py --config train_europarl_tiny --device cpu
    python train.py --model_type backpack --config train_europarl_scratch --out_dir out/backpack_full \
        --data_dir europarl --init_from scratch --device cuda --dtype float16 --compile
Several GPUs on one node (DDP; gloo is used on CPU):
    torchrun --standalone --nproc_per_node=4 train.py --config train_europarl_scratch
Resume an interrupted run (restores weights, optimizer, scaler, iteration, RNG and sampler states):
    python train.py --init_from resume --out_dir out/backpack_full
Ctrl-C (SIGINT) or SIGTERM stops the run at the next safe point and saves ckpt.pt; the last line is the
command that continues it (the run's own command line with --init_from resume). After SIGINT the exit
status is 130 (128 + SIGINT, so that a script or `set -e` stops too); after SIGTERM (a preemption) it is 0.
The resumed run keeps the saved run's settings; a setting given now (--key or --config) that differs
from the saved one is used, and a start-up note names it (e.g. --max_iters to train on).

`python train.py --help` lists every key. Settings come from the defaults below (on resume, the saved
run's), then config/*.py, then --key value (see configurator.py).

The global batch of an iteration is gradient_accumulation_steps x batch_size sequences, whatever the
number of processes: all ranks draw it from one sampler and rank r trains on its r-th slice, so N
ranks with accumulation A/N compute what one process with accumulation A does (to fp32 rounding).
"""
import system  # first: the OpenMP setting torch reads when it loads
import os
import importlib.util
import json
import math
import shlex
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (best_checkpoint, build_model, gather_rng_states, model_from_checkpoint, read_checkpoint,
                        restore_training, resume_checkpoint, rng_state, save_checkpoint, save_json, set_rng_state)
from configurator import configure
from errors import MissingFileError, UserError, check_ranges, resolve_device, run_main, warn
from experiments.senses import PROBE_WORDS
from model import ModelConfig, from_pretrained_backpack
from tokenizer import load_tokenizer

REPO = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# defaults (every key below can be set by config/NAME.py or --key value)
# I/O
out_dir = 'out'
data_dir = 'europarl'        # data/<name> or a path to a directory made by data/europarl/prepare.py
init_from = 'scratch'        # 'scratch' | 'resume' (out_dir/ckpt.pt) | 'backpack-small' (pretrained)
pretrained_path = 'stanfordnlp/backpack-gpt2'  # for backpack-small: a local HF directory or the hub name
overwrite = False            # let scratch/backpack-small replace the ckpt.pt/best.pt already in out_dir
eval_interval = 500
eval_iters = 200             # batches per split at each evaluation (train, val, val_en, val_fr)
log_interval = 10            # also how often DDP ranks sync their losses and stop flags
always_save_checkpoint = True  # write ckpt.pt at every evaluation; False: only when val improves
# experiment tracking of the evaluations, nanoGPT's keys (optional extras: pip install wandb / tensorboard)
wandb_log = False            # Weights & Biases; WANDB_MODE=offline writes the run under out_dir/wandb
wandb_project = 'backpack-europarl'
wandb_run_name = ''          # '' = the name of out_dir
tensorboard_log = False      # TensorBoard event files in out_dir/tensorboard
# model
model_type = 'backpack'      # 'backpack' | 'transformer'
block_size = 512
n_layer = 6
n_head = 6
n_embd = 384
n_senses = 16                # Backpack sense vectors per token (unused by the Transformer)
dropout = 0.1
bias = False
sense_intermediate_scale = 4
scale_attn_by_inverse_layer_idx = False
# optimizer: AdamW with linear warmup then cosine decay to min_lr
batch_size = 32              # sequences per micro-step (split across processes when accumulation cannot be)
gradient_accumulation_steps = 1  # micro-steps per iteration in total over all processes
max_iters = 50000
max_minutes = 0.0            # wall-clock budget of the whole run (resumed segments and evaluations included):
                             # past it, a last evaluation, ckpt.pt, and the run ends; 0 = none
learning_rate = 3e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0              # 0 disables clipping
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 50000
min_lr = 3e-5
# system
device = 'auto'              # 'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'
dtype = 'auto'               # 'auto' (bfloat16 on supporting GPUs, else float32) | 'float32' | 'bfloat16' | 'float16'
compile = False
seed = 1337
peak_flops = 0.0             # accelerator peak FLOP/s for MFU; 0 = look the GPU up in PEAK_FLOPS
# training_log.json: top predicted tokens of each sense of these probe words (Backpack only)
probe_words_en = list(PROBE_WORDS['en'])
probe_words_fr = list(PROBE_WORDS['fr'])
probe_top_k = 5
# -----------------------------------------------------------------------------
CONFIG_KEYS = [k for k, v in globals().items() if not k.startswith('_') and k.islower()
               and isinstance(v, (int, float, bool, str, list))]  # what ckpt.pt and the log record
# the range of every numeric setting (errors.check_range's rules), checked before any work (check_settings)
SETTING_RANGES = {
    'eval_interval': '>= 1', 'eval_iters': '>= 1', 'log_interval': '>= 1',  # 0: NaN losses, or a division by 0
    'block_size': '>= 1', 'n_layer': '>= 1', 'n_head': '>= 1', 'n_embd': '>= 1', 'n_senses': '>= 1',
    'dropout': '[0, 1)', 'sense_intermediate_scale': '>= 1', 'batch_size': '>= 1',
    'gradient_accumulation_steps': '>= 1', 'max_iters': '>= 0', 'max_minutes': '>= 0', 'learning_rate': '> 0',
    'weight_decay': '>= 0', 'beta1': '[0, 1)', 'beta2': '[0, 1)', 'grad_clip': '>= 0', 'warmup_iters': '>= 0',
    'lr_decay_iters': '>= 0', 'min_lr': '>= 0', 'seed': '>= 0', 'peak_flops': '>= 0', 'probe_top_k': '>= 1'}

# what train.py copies from the data dir into out_dir (tokenizer.load_tokenizer(out_dir) and the
# held-out evaluation then work from out_dir alone)
EVAL_FILES = ('meta.json', 'tokenizer', 'vocab_map.npy', 'words.json', 'test.en', 'test.fr',
              'val_en.bin', 'val_fr.bin', 'test_en.bin', 'test_fr.bin')
# settings a resume takes from its own command line, never from the saved run
RESUME_OWN_KEYS = ('out_dir', 'init_from', 'overwrite')
# model settings that a resumed (or pretrained) model keeps from its checkpoint whatever the command line says
MODEL_KEYS = ('n_layer', 'n_head', 'n_embd', 'n_senses', 'dropout', 'bias', 'sense_intermediate_scale',
              'scale_attn_by_inverse_layer_idx')
EVAL_PROGRESS_S = 5.0  # a slow evaluation prints a progress line this often

# dense bf16/fp16 tensor-core peaks, FLOP/s, for the MFU estimate
PEAK_FLOPS = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'A10G': 125e12, 'L4': 121e12,
              'V100': 125e12, 'T4': 65e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12}


def describe_keys(keys):
    return 'train.py settings (defaults; set with --key value or a config/ file):\n' + '\n'.join(
        f'  --{k} {globals()[k]!r}' for k in keys)


TOKENIZER_PROBES = ('Thank you, Mr President. The debate is closed.',
                    "Je déclare reprise la session du Parlement européen, l'ordre du jour appelle le débat.")


def same_tokenizer(path, tokenizer):
    """Whether the tokenizer.json at path (an export_hf.py export) gives tokenizer's ids: the same language tags
    and end-of-document ids and the same pieces for an English and a French sentence."""
    import tokenizers
    other = tokenizers.Tokenizer.from_file(path)
    tags = all(other.token_to_id(name) == tokenizer.lang_id(lang) for lang, name in (('en', '<en>'), ('fr', '<fr>')))
    eos = other.token_to_id(tokenizer.meta['tokenizer']['eos_token']) == tokenizer.eos_id
    return tags and eos and all(other.encode(text, add_special_tokens=False).ids == tokenizer.encode(text)
                                for text in TOKENIZER_PROBES)


def resolve_data_dir(name):
    """`europarl` means data/europarl; any directory holding a meta.json works too."""
    for candidate in (name, os.path.join(REPO, 'data', name)):
        if os.path.isfile(os.path.join(candidate, 'meta.json')):
            return os.path.abspath(candidate)
    raise MissingFileError(f"no prepared data in {name!r} or data/{name} (no meta.json); "
                           f"run data/europarl/prepare.py --out_dir data/{name} first")


class Batches:
    """Random (x, y) windows of block_size tokens from one .bin file.

    The windows are drawn by a numpy Generator owned by this object; its state is saved in ckpt.pt
    so that a resumed run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, path, dtype, block_size, batch_size, seed):
        self.data = np.memmap(path, dtype=dtype, mode='r')
        if len(self.data) <= block_size + 1:
            raise UserError(f"{path} holds {len(self.data)} tokens, fewer than block_size+2 = {block_size + 2}; "
                            f"lower --block_size or prepare more data")
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def starts(self, n, rng=None):
        """n random window starts."""
        return (rng or self.rng).integers(0, len(self.data) - self.block_size - 1, size=n)

    def windows(self, ix):
        chunks = torch.from_numpy(np.stack([self.data[i:i + self.block_size + 1] for i in ix]).astype(np.int64))
        return chunks[:, :-1], chunks[:, 1:]

    def sample(self, rng=None):
        return self.windows(self.starts(self.batch_size, rng))

    def state_dict(self):
        return self.rng.bit_generator.state

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state


def split_batch(accumulation, batch, world):
    """(micro-steps per process, sequences per micro-step, a note or None) that keep the global batch
    of accumulation x batch sequences on `world` processes.

    nanoGPT's rule when it applies: each process runs accumulation/world micro-steps of `batch`.
    Otherwise each process gets accumulation*batch/world sequences, in the fewest micro-steps not
    larger than `batch`; when even that does not divide, the global batch grows (said in the note)."""
    if accumulation % world == 0:
        return accumulation // world, batch, None
    total = accumulation * batch
    if total % world == 0:
        per_process = total // world
        accum = math.ceil(per_process / batch)
        while per_process % accum:
            accum += 1
        micro = per_process // accum
        return accum, micro, (f"gradient_accumulation_steps={accumulation} does not split over {world} processes: "
                              f"each runs {accum} micro-step(s) of {micro} sequences, keeping the global batch "
                              f"of {total} sequences")
    accum = math.ceil(accumulation / world)
    return accum, batch, (f"gradient_accumulation_steps={accumulation} x batch_size={batch} does not split over "
                          f"{world} processes: each runs {accum} micro-step(s) of {batch} sequences, so the "
                          f"global batch grows from {total} to {world * accum * batch} sequences")


def get_lr(it):
    """Linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def flops_per_token(model_type, cfg, T):
    """Training FLOPs per token (forward + backward = 3x forward), nanoGPT/PaLM convention.

    Weight matmuls cost 6 FLOPs per parameter per token; attention 12*L*d*T (the causal half is not
    discounted, as in nanoGPT). A Backpack adds the sense network (counted for every token: the
    per-batch dedup makes this an upper bound), the weight head and the mixing
    o_i = sum_l sum_j a_lij C(x_j)_l: scores k*T*(d/k) and values k*T*d multiply-adds per token.
    """
    d, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    flops = 6 * (12 * L * d * d + V * d) + 12 * L * d * T
    if model_type == 'backpack':
        k, s = cfg.n_senses, cfg.sense_intermediate_scale
        sense_net = 2 * 4 * d * d + s * d * d + s * d * k * d
        flops += 6 * (sense_net + 2 * d * d) + 6 * T * (d + k * d)
    return flops


_stop_requested = False  # set by SIGTERM/SIGINT: the run stops at the next safe point and saves ckpt.pt
_interrupted = False  # SIGINT (Ctrl-C) among them: after saving, exit status 130, so that scripts stop too


def request_stop(signum, frame):
    global _stop_requested, _interrupted
    _stop_requested = True
    _interrupted = _interrupted or signum == signal.SIGINT
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once


@torch.no_grad()
def estimate_loss(model, sources, dev, autocast, label):
    """Mean loss of each source on eval_iters fixed batches (the same windows at every evaluation),
    or None when a stop signal arrives meanwhile. A slow evaluation says how far it is."""
    model.eval()
    out, total, done = {}, len(sources) * eval_iters, 0
    t0 = shown = time.time()
    for i, (name, source) in enumerate(sources.items()):
        rng = np.random.default_rng(seed + 1000 * i)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            if _stop_requested:
                model.train()
                return None
            X, Y = source.sample(rng)
            with autocast:
                _, loss = model(X.to(dev), Y.to(dev))
            losses[k] = loss.item()
            done += 1
            if time.time() - shown >= EVAL_PROGRESS_S:
                shown, spent = time.time(), time.time() - t0
                print(f"{label}: {name} batch {k + 1}/{eval_iters} ({done}/{total} batches in {spent:.0f} s, "
                      f"about {spent * (total - done) / done:.0f} s left; --eval_iters sets the size)", flush=True)
        out[name] = losses.mean().item()
    model.train()
    return out


@torch.no_grad()
def probe_senses(model, tokenizer, dev):
    """Top tokens pushed up by each sense of each probe word, in the probe's language.

    A word split into several pieces uses the mean of its pieces' sense vectors (Hewitt et al.).
    In eval mode: the senses without dropout, and no draw from the RNG that the training's dropout uses
    (a run that probes trains exactly as one that does not); the model's mode is restored after."""
    result, was_training = {}, model.training
    model.eval()
    for lang, words in (('en', probe_words_en), ('fr', probe_words_fr)):
        mask = torch.from_numpy(tokenizer.language_mask(lang)).to(dev)
        for word in words:
            ids = tokenizer.encode_word(word)
            logits = model.sense_logits(torch.tensor(ids, device=dev)).float().mean(0)  # (k, V)
            logits = logits[:, :len(mask)].masked_fill(~mask, float('-inf'))
            top = logits.topk(probe_top_k, dim=-1).indices.tolist()
            result[f'{lang}:{word}'] = [[tokenizer.token_str(t) for t in sense] for sense in top]
    model.train(was_training)
    return result


def record_losses(log, pending, world, dev, iter_num, ckpt_path, out_of_time=False):
    """Move the per-iteration losses of `pending` (averaged over ranks) to the log; returns (whether
    any rank was asked to stop, whether any rank is past the time budget). The training loop's only host
    sync, and under DDP its only extra collective: one all-reduce of the losses with the two flags
    appended (a sum > 0 when any rank's is set); a SIGINT on any rank makes every rank's _interrupted true."""
    global _interrupted
    flags = torch.tensor([float(_stop_requested), float(out_of_time), float(_interrupted)], device=dev)
    values = torch.cat([torch.stack(pending), flags]) if pending else flags
    pending.clear()
    if world > 1:
        dist.all_reduce(values)  # SUM: gloo has no AVG
        values /= world
    *losses, stop, late, interrupted = values.tolist()
    _interrupted = interrupted > 0
    for i, v in enumerate(losses):
        if not math.isfinite(v):
            raise UserError(f"training loss is {v} at iter {iter_num - len(losses) + i + 1}; stopping without "
                            f"saving. The last good checkpoint ({ckpt_path}) is left intact; lower "
                            f"--learning_rate or set --grad_clip")
    log['train_loss'].extend(losses)
    return stop > 0, late > 0


def open_trackers(config):
    """nanoGPT's wandb run and/or a TensorBoard writer (rank 0), as the settings ask: (log(metrics), close())
    pairs, metrics being one evaluation's dict with its 'iter'."""
    trackers = []
    if wandb_log:
        import wandb
        run = wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(os.path.abspath(out_dir)),
                         config=config, dir=out_dir)
        trackers.append((run.log, run.finish))
    if tensorboard_log:
        from torch.utils.tensorboard import SummaryWriter
        tb_dir = os.path.join(out_dir, 'tensorboard')
        if init_from != 'resume':  # a new run replaces the old run's curves, as it replaces its checkpoints
            shutil.rmtree(tb_dir, ignore_errors=True)
        writer = SummaryWriter(tb_dir)
        trackers.append((lambda metrics: [writer.add_scalar(k, v, metrics['iter']) for k, v in metrics.items()
                                          if k != 'iter'], writer.close))
    return trackers


def resume_settings(saved, given):
    """--init_from resume continues the saved run: each setting not given now (command line or --config)
    takes its value in the checkpoint's config. Returns the settings given now that differ from it, kept
    (model settings aside: the model keeps its own, as the warning on them says)."""
    differ = []
    for key in CONFIG_KEYS:
        if key in RESUME_OWN_KEYS or key not in saved:  # a key newer than the checkpoint keeps its default
            continue
        if key not in given:
            globals()[key] = saved[key]
        elif globals()[key] != saved[key] and key not in MODEL_KEYS:
            differ.append(f"--{key} {globals()[key]!r} (saved {saved[key]!r})")
    return differ


def check_settings():
    """Every setting, before any work (no data, model or out_dir touched): the choices, the range of each
    number (SETTING_RANGES), the settings that must agree, --out_dir, the optional extras, and for
    --init_from backpack-small the data's tokenizer. Returns the data dir's path. A mistake is one UserError."""
    if model_type not in ('backpack', 'transformer'):
        raise UserError(f"--model_type {model_type!r}: expected backpack or transformer")
    if init_from not in ('scratch', 'resume', 'backpack-small'):
        raise UserError(f"--init_from {init_from!r}: expected scratch, resume or backpack-small")
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        raise UserError(f"--dtype {dtype!r}: expected auto, float32, bfloat16 or float16")
    check_ranges(globals(), SETTING_RANGES)
    if init_from == 'scratch':  # otherwise the model keeps its own shape (said in a warning)
        if n_embd % n_head:
            raise UserError(f"--n_embd {n_embd} does not split into --n_head {n_head} attention heads: use an "
                            f"n_head that divides n_embd (or an n_embd that is a multiple of n_head)")
        if model_type == 'backpack' and n_embd % n_senses:
            raise UserError(f"--n_embd {n_embd} does not split into --n_senses {n_senses} (the sense weights' "
                            f"query/key heads): use an n_senses that divides n_embd")
    if decay_lr and min_lr > learning_rate:
        raise UserError(f"--min_lr {min_lr:g} is above --learning_rate {learning_rate:g}: the schedule decays from "
                        f"learning_rate down to min_lr")
    if decay_lr and lr_decay_iters < warmup_iters:
        raise UserError(f"--lr_decay_iters {lr_decay_iters} is below --warmup_iters {warmup_iters}: the cosine decay "
                        f"follows the warmup (or set --decay_lr False for a constant learning rate)")
    probe = os.path.abspath(out_dir)
    while not os.path.lexists(probe):  # the deepest part of the path that exists must be a directory
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--out_dir {out_dir}: {probe} is a file, not a directory; pass a directory "
                        f"(it is created if missing)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out_dir {out_dir}: cannot write in {probe} (permission denied)")
    missing = [pkg for pkg in ('wandb', 'tensorboard')
               if globals()[f'{pkg}_log'] and importlib.util.find_spec(pkg) is None]
    if missing:  # optional extras: say so before any work
        one = len(missing) == 1
        raise UserError(f"{' and '.join(f'--{pkg}_log' for pkg in missing)} need{'s' * one} {' and '.join(missing)}, "
                        f"which {'is' if one else 'are'} not installed: pip install {' '.join(missing)}, or drop "
                        f"the flag{'' if one else 's'}")
    data_path = resolve_data_dir(data_dir)
    if init_from == 'backpack-small' and not os.path.isfile(os.path.join(pretrained_path, 'tokenizer.json')):
        with open(os.path.join(data_path, 'meta.json')) as f:  # (an export_hf.py directory has its own tokenizer,
            kind = json.load(f)['tokenizer']['type']            # compared with the data's once that is loaded)
        if kind != 'gpt2':
            raise UserError(f"--init_from backpack-small finetunes the Backpack of --pretrained_path {pretrained_path} "
                            f"(GPT-2's vocabulary; offline, a local backpack-gpt2 directory) and needs data prepared "
                            f"with the GPT-2 tokenizer, but {data_path} uses {kind!r}: run data/europarl/prepare.py "
                            f"--tokenizer gpt2 --out_dir data/europarl_gpt2 and pass --data_dir europarl_gpt2")
    return data_path


def resume_command(argv, world):
    """The command that continues this run: its own command line (so --config and every setting given too),
    with --init_from resume in place of --init_from/--overwrite, and --out_dir named."""
    kept, i = [], 0
    while i < len(argv):
        key, eq, _ = argv[i][2:].partition('=') if argv[i].startswith('--') else (None, '', '')
        with_value = not eq and i + 1 < len(argv) and not argv[i + 1].startswith('--')  # configurator's rule
        if key in ('init_from', 'overwrite'):
            i += 2 if with_value else 1
            continue
        kept.append(argv[i])
        i += 1
    if not any(a == '--out_dir' or a.startswith('--out_dir=') for a in kept):
        kept += ['--out_dir', out_dir]
    launcher = ['python'] if world == 1 else ['torchrun', '--standalone', f'--nproc_per_node={world}']
    return shlex.join([*launcher, sys.argv[0], *kept, '--init_from', 'resume'])


class Processes(NamedTuple):
    """How this process takes part in the run: its rank among `world` (one process: 0 of 1), its share of
    each iteration's global batch, its device and precision."""
    ddp: bool
    rank: int
    local_rank: int
    world: int
    accum: int  # micro-steps per iteration
    micro_batch: int  # sequences per micro-step
    dev: str
    dtype_name: str
    autocast: object

    @property
    def master(self):
        return self.rank == 0

    @property
    def device_type(self):
        return 'cuda' if self.dev.startswith('cuda') else self.dev

    @property
    def tokens_per_iter(self):
        return self.world * self.accum * self.micro_batch * block_size


def set_up_processes():
    """(Processes, a note on the batch split or None): torchrun's ranks join DDP's process group, one GPU
    each; the precision that --dtype auto picks; a warning for the settings pathologically slow on the CPU."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    dev = resolve_device(device)
    rank, local_rank, world = 0, 0, 1
    if ddp:
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if dev.startswith('cuda'):
            dev = f'cuda:{local_rank}'
            torch.cuda.set_device(dev)
        dist.init_process_group(backend='nccl' if dev.startswith('cuda') else 'gloo')
    accum, micro_batch, batch_note = split_batch(gradient_accumulation_steps, batch_size, world)
    device_type = 'cuda' if dev.startswith('cuda') else dev
    dtype_name = dtype
    if dtype_name == 'auto':
        dtype_name = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    ptdtype = getattr(torch, dtype_name)
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if rank == 0 and device_type == 'cpu' and ptdtype == torch.float16:
        warn("--dtype float16 on the CPU is emulated and extremely slow (the scratch config did not finish one "
             "iteration in 25 minutes); use --dtype float32 or bfloat16")
    if rank == 0 and device_type == 'cpu' and compile:
        warn("--compile on the CPU: at the scratch shape on 2 cores it compiled for 7 minutes and its iterations "
             "were not faster; at config/train_europarl_cpu.py's it compiled in under a minute and ran 1.1-1.2x "
             "faster (results/cpu_reference/speed): worth it only for small models and long runs")
    return Processes(ddp, rank, local_rank, world, accum, micro_batch, dev, dtype_name, autocast), batch_note


def make_model(ckpt, tokenizer, data_path, keys_set, master):
    """The model --init_from asks for, on the CPU: ckpt.pt's (ckpt), the pretrained Backpack, or a new one.
    What does not fit the data or the settings is a UserError; the model settings given now (keys_set)
    that the model does not take are named in a warning, on rank 0."""
    meta, ckpt_path = tokenizer.meta, os.path.join(out_dir, 'ckpt.pt')
    if init_from == 'resume':
        if ckpt is None:
            raise MissingFileError(f"--init_from resume but {ckpt_path} does not exist")
        if ckpt['model_type'] != model_type:
            raise UserError(f"{ckpt_path} holds a {ckpt['model_type']} model, but --model_type is {model_type}; "
                            f"resume it with --model_type {ckpt['model_type']} or use another --out_dir")
        if ckpt['meta']['vocab_size'] != meta['vocab_size'] or ckpt['meta']['tokenizer'] != meta['tokenizer']:
            raise UserError(f"{ckpt_path} was trained on data with another tokenizer/vocabulary than {data_path}")
        model = model_from_checkpoint(ckpt)
    elif init_from == 'backpack-small':
        model = load_backpack_small(tokenizer, data_path)
    else:
        wanted = dict(block_size=block_size, vocab_size=meta['vocab_size'], n_layer=n_layer, n_head=n_head,
                      n_embd=n_embd, n_senses=n_senses, dropout=dropout, bias=bias,
                      sense_intermediate_scale=sense_intermediate_scale,
                      scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx)
        model = build_model(model_type, {f.name: wanted[f.name] for f in fields(ModelConfig) if f.name in wanted})
    model_cfg = model.config
    if model_cfg.block_size < block_size:
        raise UserError(f"--block_size {block_size} exceeds the model's block_size {model_cfg.block_size}")
    ignored = [k for k in MODEL_KEYS if k in keys_set and getattr(model_cfg, k) != globals()[k]]
    if master and ignored:
        warn(f"--init_from {init_from} keeps the model's own settings, ignoring "
             + ', '.join(f"--{k} {globals()[k]!r} (the model has {getattr(model_cfg, k)!r})" for k in ignored))
    return model


def load_backpack_small(tokenizer, data_path):
    """--init_from backpack-small: the Backpack of --pretrained_path (the hub's or an export_hf.py directory,
    whose tokenizer the data must share), its position table cropped to --block_size."""
    if model_type != 'backpack':
        raise UserError("--init_from backpack-small loads a Backpack; use --model_type backpack")
    meta = tokenizer.meta
    exported = os.path.join(pretrained_path, 'tokenizer.json')
    if os.path.isfile(exported) and not same_tokenizer(exported, tokenizer):
        raise UserError(f"--init_from backpack-small: {pretrained_path} was trained with another tokenizer "
                        f"than the data in {data_path}; prepare the data with its tokenizer")
    try:
        model = from_pretrained_backpack(pretrained_path, dropout=dropout)
    except (FileNotFoundError, ValueError) as e:  # the one line names the setting to change
        raise UserError(str(e) if '--pretrained_path' in str(e) else f"--pretrained_path {pretrained_path}: {e}") \
            from None
    if meta['vocab_size'] > model.config.vocab_size:
        raise UserError(f"data vocab {meta['vocab_size']} exceeds the pretrained vocab {model.config.vocab_size}")
    if meta['vocab_size'] < model.config.vocab_size:  # padding rows: never generated, never a top token
        model.config.tokenizer_vocab_size = meta['vocab_size']
    if block_size > model.config.block_size:
        raise UserError(f"--block_size {block_size} exceeds the pretrained model's {model.config.block_size}")
    model.crop_block_size(block_size)
    return model


def prepare_out_dir(data_path, replaced):
    """Create out_dir, remove the files (`replaced`) of the run that --overwrite replaces, and copy in the
    data's tokenizer and held-out files, so that evaluation needs only out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    if init_from != 'resume':
        for path in replaced:  # no mix of the old run's files with the new one's
            os.remove(path)
    for name in EVAL_FILES:
        src = os.path.join(data_path, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(out_dir, name), dirs_exist_ok=True)
        elif os.path.isfile(src):
            shutil.copy(src, os.path.join(out_dir, name))


def accelerator_peak(proc):
    """Peak FLOP/s for the MFU: --peak_flops, else the GPU's dense bf16/fp16 peak (PEAK_FLOPS) when it trains
    in one of those, else 0: unknown, and the log line gives TFLOP/s instead."""
    return peak_flops or next((v for k, v in PEAK_FLOPS.items()
                               if proc.device_type == 'cuda' and proc.dtype_name != 'float32'
                               and k in torch.cuda.get_device_name(proc.dev)), 0.0)


@dataclass
class Progress:
    """Where the run stands. ckpt.pt saves its first four fields."""
    log: dict  # training_log.json: every iteration's loss, every evaluation
    iter_num: int = 0
    best_val_loss: float = float('inf')
    evaluated_at: int = -1  # a resumed run does not evaluate this iteration again
    saved_at: int = -1  # the iteration of this segment's last ckpt.pt
    mfu: float = None  # percent, of the last log interval (known GPUs only)
    started: float = 0.0  # time.time() at the run's start, its earlier segments counted

    def start_clock(self):
        """The budget (--max_minutes) counts the earlier segments' time: the log's elapsed_s (in an older log,
        its last evaluation's)."""
        evals = self.log['evals']
        self.started = time.time() - self.log.get('elapsed_s', evals[-1]['elapsed_s'] if evals else 0.0)

    def elapsed(self):
        """Seconds since the run's start, its earlier segments counted."""
        return time.time() - self.started


def past_budget(run):
    """Whether the run's wall-clock budget (--max_minutes, 0: none) is spent."""
    return max_minutes > 0 and run.elapsed() >= 60 * max_minutes


def stop_reason(agreed, world, run):
    """Why the run stops now, if it does: 'signal' (SIGTERM/SIGINT), 'time' (--max_minutes spent),
    'max_iters', or None. DDP ranks must stop at the same iteration (one stopping alone would leave the others
    waiting in their next all-reduce), so they go by `agreed`: the (signal, time) flags of record_losses'
    all-reduce at the last log interval or evaluation. One process needs no agreement (record_losses would
    return its own flags), so it reads them now, between two micro-steps too: it stops at the next safe
    point, and a resume continues from there exactly."""
    signalled, late = agreed if world > 1 else (_stop_requested, agreed[1] or past_budget(run))
    return 'signal' if signalled else 'time' if late else 'max_iters' if run.iter_num >= max_iters else None


def from_rank0(obj, world):
    """Rank 0's obj on every rank (a collective under DDP)."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def evaluate_and_save(run, eval_model, raw_model, eval_sources, tokenizer, proc, trackers, run_info, save):
    """The evaluation at run.iter_num: the 4 splits' losses, val_en/val_fr perplexity and bits per byte, the
    probe words' senses (Backpack). Rank 0 prints it, writes training_log.json, the trackers and best.pt (when
    val improves); every rank then saves ckpt.pt (a collective). False when a signal stopped it: it runs
    again on resume."""
    it, meta = run.iter_num, tokenizer.meta
    stats = estimate_loss(eval_model, eval_sources, proc.dev, proc.autocast, f"eval {it}") if proc.master else None
    if stats is not None:
        for lang in ('en', 'fr'):
            split, nll = meta['splits'][f'val_{lang}'], stats[f'val_{lang}']
            stats[f'val_{lang}_ppl'] = math.exp(nll)
            stats[f'val_{lang}_bpb'] = nll * split['tokens'] / split['bytes'] / math.log(2)
        if model_type == 'backpack':
            stats['senses'] = probe_senses(raw_model, tokenizer, proc.dev)
    stats = from_rank0(stats, proc.world)
    if stats is None:
        return False
    run.evaluated_at = it
    run.log['evals'].append({'iter': it, 'lr': get_lr(it), 'tokens_seen': it * proc.tokens_per_iter,
                             'elapsed_s': run.elapsed(), **stats})
    improved = stats['val'] < run.best_val_loss
    if improved:
        run.best_val_loss = stats['val']
    if proc.master:
        print(f"eval {it}: train {stats['train']:.4f} val {stats['val']:.4f} | "
              f"val_en ppl {stats['val_en_ppl']:.2f} bpb {stats['val_en_bpb']:.3f} | "
              f"val_fr ppl {stats['val_fr_ppl']:.2f} bpb {stats['val_fr_bpb']:.3f}", flush=True)
        save_json(run.log, os.path.join(out_dir, 'training_log.json'))
        metrics = {'iter': it, 'train/loss': stats['train'], 'val/loss': stats['val'], 'lr': get_lr(it),
                   **{f'val_{lang}/{key}': stats[f'val_{lang}{suffix}'] for lang in ('en', 'fr')
                      for key, suffix in (('loss', ''), ('ppl', '_ppl'), ('bpb', '_bpb'))}}
        for log_metrics, _ in trackers:
            log_metrics(metrics if run.mfu is None else {**metrics, 'mfu': run.mfu})
        if improved:
            save_checkpoint(best_checkpoint(raw_model, iter_num=it, val_loss=run.best_val_loss, **run_info),
                            os.path.join(out_dir, 'best.pt'))
    if it > 0 and (improved or always_save_checkpoint):
        run.log['elapsed_s'], run.log['iter_num'] = run.elapsed(), it
        save('val improved' if improved else 'evaluation', run)
    return True


def train_step(model, no_sync, optimizer, scaler, batches, proc, lr, stop):
    """One iteration: every rank draws the same global batch and trains on its slice of it. Returns its loss
    (on the device), or None when stop() says so between two micro-steps or after the last: the iteration
    is then dropped, and the sampler and RNGs are put back to its start, as a resume point."""
    for group in optimizer.param_groups:
        group['lr'] = lr
    sampler_before, rng_before = batches.state_dict(), rng_state()
    shape = (proc.world, proc.accum, proc.micro_batch)
    starts = batches.starts(math.prod(shape)).reshape(shape)[proc.rank]
    loss_sum = torch.zeros((), device=proc.dev)
    for micro, ix in enumerate(starts):
        if stop():
            break
        with nullcontext() if micro == proc.accum - 1 else no_sync():  # DDP all-reduces once per iteration
            X, Y = batches.windows(ix)
            with proc.autocast:
                _, loss = model(X.to(proc.dev), Y.to(proc.dev))
                loss = loss / proc.accum
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if stop():
        optimizer.zero_grad(set_to_none=True)
        batches.load_state_dict(sampler_before)
        set_rng_state(rng_before)
        return None
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def print_progress(run, dt, tokens_per_iter, flops_per_iter, peak, dev):
    """The line of a log interval, dt being its seconds per iteration; returns its MFU in percent (None when
    the peak is unknown)."""
    mfu = 100 * flops_per_iter / dt / peak if peak else None
    speed = f"mfu {mfu:.1f}%" if peak else f"{flops_per_iter / dt / 1e12:.2f} TFLOP/s"
    eta = (max_iters - run.iter_num) * dt
    memory = f", peak memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.startswith('cuda') else ''
    print(f"iter {run.iter_num}: loss {run.log['train_loss'][-1]:.4f}, lr {get_lr(run.iter_num - 1):.2e}, "
          f"{dt * 1000:.1f} ms/iter, {tokens_per_iter / dt:,.0f} tok/s, {speed}{memory}, eta {eta / 60:.1f} min",
          flush=True)
    return mfu


def save_resume_point(path, model, optimizer, scaler, sampler, world, run_info, reason, run):
    """Write ckpt.pt (rank 0) with every rank's RNG states: a collective, so every rank calls it."""
    rng = gather_rng_states(sampler.state_dict(), world)
    run.saved_at = run.iter_num
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    save_checkpoint(resume_checkpoint(model, optimizer, scaler, rng, iter_num=run.iter_num,
                                      best_val_loss=run.best_val_loss, evaluated_at=run.evaluated_at,
                                      training_log=run.log, **run_info), path)
    print(f"saved {path} at iter {run.iter_num} ({reason})", flush=True)


def end_run(run, why, pending, proc, trackers, save):
    """The last losses into the log, ckpt.pt where the loop stopped (unless saved there), training_log.json;
    then the trackers closed and the last line: after a signal, the command that continues the run."""
    record_losses(run.log, pending, proc.world, proc.dev, run.iter_num, os.path.join(out_dir, 'ckpt.pt'))
    # where the run stands: its last evaluation can be short of max_iters (evaluations come every eval_interval)
    run.log['elapsed_s'], run.log['iter_num'] = run.elapsed(), run.iter_num
    if run.saved_at != run.iter_num:
        save('interrupted by signal' if why == 'signal' else 'end of run', run)
    if not proc.master:
        return
    save_json(run.log, os.path.join(out_dir, 'training_log.json'))
    for _, close in trackers:
        close()
    if why == 'signal':
        print(f"stopped by signal at iter {run.iter_num}; continue with: {resume_command(sys.argv[1:], proc.world)}",
              flush=True)
        return
    if why == 'time':
        print(f"time budget of {max_minutes:g} min reached at iter {run.iter_num} ({run.log['elapsed_s'] / 60:.1f} min "
              f"in all)")
    from experiments.plots import plot_loss_curves
    plot_loss_curves({model_type: run.log}, os.path.join(out_dir, 'loss_curve.png'))


def main():
    # first: a signal during the set-up too stops the run cleanly, before its first iteration
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    keys_set = configure(globals(), sys.argv[1:], describe=describe_keys)
    ckpt_path, best_path = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, 'best.pt')
    ckpt, resume_differs = None, []
    if init_from == 'resume' and os.path.isfile(ckpt_path):  # a missing one is said after the start-up checks
        ckpt = read_checkpoint(ckpt_path)
        resume_differs = resume_settings(ckpt.get('config', {}), set(keys_set))
    config = {k: globals()[k] for k in CONFIG_KEYS}
    data_path = check_settings()
    existing = [p for p in (ckpt_path, best_path) if os.path.isfile(p)]
    if init_from != 'resume' and existing and not overwrite:
        raise UserError(f"there is already {' and '.join(existing)}: continue that run with --init_from resume, "
                        f"train into another --out_dir, or pass --overwrite to replace it")

    proc, batch_note = set_up_processes()
    torch.manual_seed(seed + proc.rank)  # dropout masks differ between ranks (the weights come from rank 0)
    tokenizer = load_tokenizer(data_path)
    meta = tokenizer.meta

    # ---- model, optimizer, batches; on resume, their states and where the run stands
    raw_model = make_model(ckpt, tokenizer, data_path, keys_set, proc.master)
    if proc.master and resume_differs:
        print("note: --init_from resume continues the saved run's settings, except these given now: "
              + ', '.join(resume_differs))
    raw_model = raw_model.to(proc.dev)
    optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), proc.device_type)
    scaler = torch.amp.GradScaler(proc.device_type, enabled=(proc.dtype_name == 'float16'))
    bin_dtype = np.dtype(meta['dtype'])
    train_batches = Batches(os.path.join(data_path, 'train.bin'), bin_dtype, block_size, proc.micro_batch, seed)
    eval_sources = {name: Batches(os.path.join(data_path, f'{name}.bin'), bin_dtype, block_size, batch_size, 0)
                    for name in ('train', 'val', 'val_en', 'val_fr')}
    if ckpt is None:
        run = Progress({'model_type': model_type, 'config': config, 'machine': system.machine(proc.dev),
                        'train_loss': [], 'evals': []})
    else:
        written_by = restore_training(ckpt, optimizer, scaler, train_batches, proc.rank)
        run = Progress(ckpt['training_log'], ckpt['iter_num'], ckpt['best_val_loss'], ckpt['evaluated_at'])
        if written_by != proc.world and proc.master:
            print(f"note: checkpoint written by {written_by} process(es), resuming with {proc.world}: the batches "
                  f"are the same (at the same global batch size), the dropout masks are not")
        ckpt = None  # free the memory
    run_info = dict(config=config, model_type=model_type, model_args=asdict(raw_model.config), meta=meta)
    save = partial(save_resume_point, ckpt_path, raw_model, optimizer, scaler, train_batches, proc.world, run_info)

    model = eval_model = torch.compile(raw_model) if compile else raw_model
    if proc.ddp:
        model = DDP(model, device_ids=[proc.local_rank] if proc.device_type == 'cuda' else None)
    no_sync = model.no_sync if proc.ddp else nullcontext  # for the micro-steps before an iteration's last

    if proc.master:
        prepare_out_dir(data_path, existing)
        print(f"{model_type}: {raw_model.param_counts()['total']:,} parameters; "
              f"data {data_path} (vocab {meta['vocab_size']}); device {proc.dev} {proc.dtype_name}; "
              f"{proc.world} process(es) x {proc.accum} micro-steps x {proc.micro_batch} x {block_size} tokens per "
              f"iteration; evaluation every {eval_interval} iterations on 4 splits x {eval_iters} batches", flush=True)
        if batch_note:
            print(f"note: {batch_note}")
    trackers = open_trackers(config) if proc.master else []
    flops_per_iter = flops_per_token(model_type, raw_model.config, block_size) * proc.tokens_per_iter
    peak = accelerator_peak(proc)

    # ---- the loop: evaluate when due, stop when the run ends, else train one iteration
    agreed = (False, False)  # the (signal, time) stop flags that the ranks last agreed on (record_losses)
    pending = []  # the losses since the last log line, still on the device: the loop syncs only there
    run.start_clock()
    interval = (time.time(), run.iter_num)
    while True:
        why = stop_reason(agreed, proc.world, run)
        # evaluate at an iteration boundary where every rank is (and once more when the time is up)
        due = (run.iter_num % eval_interval == 0 or why == 'time') and run.iter_num != run.evaluated_at
        if due and why != 'signal':
            agreed = record_losses(run.log, pending, proc.world, proc.dev, run.iter_num, ckpt_path, why == 'time')
            if agreed[0] or not evaluate_and_save(run, eval_model, raw_model, eval_sources, tokenizer, proc,
                                                  trackers, run_info, save):
                why = 'signal'
            interval = (time.time(), run.iter_num)  # keep evaluation out of ms/iter
        if why:
            break
        loss = train_step(model, no_sync, optimizer, scaler, train_batches, proc, get_lr(run.iter_num),
                          lambda: stop_reason(agreed, proc.world, run) == 'signal')
        if loss is None:
            why = 'signal'
            break
        pending.append(loss)
        run.iter_num += 1
        if run.iter_num % log_interval == 0 or run.iter_num == max_iters:
            agreed = record_losses(run.log, pending, proc.world, proc.dev, run.iter_num, ckpt_path, past_budget(run))
            dt = (time.time() - interval[0]) / max(1, run.iter_num - interval[1])
            interval = (time.time(), run.iter_num)
            if proc.master:
                run.mfu = print_progress(run, dt, proc.tokens_per_iter, flops_per_iter, peak, proc.dev)

    end_run(run, why, pending, proc, trackers, save)
    if proc.ddp:
        # DDP's reducer holds the process group: freed at interpreter exit, gloo's threads can abort the rank
        # (SIGABRT, "terminate called without an active exception"), so free it now, once every rank is here
        del model, no_sync
        dist.barrier()
        dist.destroy_process_group()
    if _interrupted:  # Ctrl-C: the shell convention 128 + SIGINT, so that a script (set -e) stops too; SIGTERM
        sys.exit(128 + signal.SIGINT)  # (a preemption) exits 0 once saved, as a run to be resumed


if __name__ == '__main__':
    run_main(main)
