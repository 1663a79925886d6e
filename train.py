"""
Train a Backpack LM (or its Transformer twin) on a prepared data dir.

One process (CPU smoke run, one GPU):
    python train.py --config train_europarl_tiny --device cpu
    python train.py --model_type backpack --config train_europarl_scratch --out_dir out/backpack_full \
        --data_dir europarl --init_from scratch --device cuda --dtype float16 --compile
Several GPUs on one node (DDP; gloo is used on CPU):
    torchrun --standalone --nproc_per_node=4 train.py --config train_europarl_scratch
Resume an interrupted run (restores weights, optimizer, scaler, iteration, RNG and sampler states):
    python train.py ... --init_from resume

`python train.py --help` lists every key. Settings come from the defaults below, then config/*.py,
then --key value (see configurator.py).
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP: spinning threads starve
                                                     # each other on small CPUs (8x slower at load 2)
import math
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import build_model, save_checkpoint, save_json
from configurator import configure
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
eval_interval = 500
eval_iters = 200             # batches per split at each evaluation (train, val, val_en, val_fr)
log_interval = 10
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
batch_size = 32              # per process, per micro-step
gradient_accumulation_steps = 1  # in total over all processes (split across DDP ranks)
max_iters = 50000
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
probe_words_en = ['bank', 'right', 'play', 'parliament']
probe_words_fr = ['droit', 'livre', 'temps', 'parlement']
probe_top_k = 5
# -----------------------------------------------------------------------------

# what train.py copies from the data dir into out_dir (tokenizer.load_tokenizer(out_dir) and the
# held-out evaluation then work from out_dir alone)
EVAL_FILES = ('meta.json', 'tokenizer', 'vocab_map.npy', 'words.json', 'test.en', 'test.fr',
              'val_en.bin', 'val_fr.bin', 'test_en.bin', 'test_fr.bin')

# dense bf16/fp16 tensor-core peaks, FLOP/s, for the MFU estimate
PEAK_FLOPS = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'A10G': 125e12, 'L4': 121e12,
              'V100': 125e12, 'T4': 65e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12}


def describe_keys(keys):
    return 'train.py settings (defaults; set with --key value or a config/ file):\n' + '\n'.join(
        f'  --{k} {globals()[k]!r}' for k in keys)


def resolve_data_dir(name):
    """`europarl` means data/europarl; any directory holding a meta.json works too."""
    for candidate in (name, os.path.join(REPO, 'data', name)):
        if os.path.isfile(os.path.join(candidate, 'meta.json')):
            return os.path.abspath(candidate)
    sys.exit(f"error: no prepared data in {name!r} or data/{name} (no meta.json); "
             f"run data/europarl/prepare.py --out_dir data/{name} first")


class Batches:
    """Random (x, y) windows of block_size tokens from one .bin file.

    The windows are drawn by a numpy Generator owned by this object; its state is saved in ckpt.pt
    so that a resumed run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, path, dtype, block_size, batch_size, seed):
        self.data = np.memmap(path, dtype=dtype, mode='r')
        if len(self.data) <= block_size + 1:
            sys.exit(f"error: {path} holds {len(self.data)} tokens, fewer than block_size+2 = {block_size + 2}; "
                     f"lower --block_size or prepare more data")
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def sample(self, rng=None):
        ix = (rng or self.rng).integers(0, len(self.data) - self.block_size - 1, size=self.batch_size)
        chunks = np.stack([self.data[i:i + self.block_size + 1] for i in ix]).astype(np.int64)
        chunks = torch.from_numpy(chunks)
        return chunks[:, :-1], chunks[:, 1:]

    def state_dict(self):
        return self.rng.bit_generator.state

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state


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


def rng_state():
    state = {'python': random.getstate(), 'torch': torch.get_rng_state()}
    np_state = np.random.get_state()
    state['numpy'] = (np_state[0], np_state[1].tolist()) + tuple(np_state[2:])
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    torch.set_rng_state(state['torch'])
    np_state = state['numpy']
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32)) + tuple(np_state[2:]))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def main():
    keys = [k for k, v in globals().items()
            if not k.startswith('_') and k.islower() and isinstance(v, (int, float, bool, str, list))
            and k not in ('REPO',)]
    configure(globals(), sys.argv[1:], describe=describe_keys)
    config = {k: globals()[k] for k in keys}

    # ---- processes, device, precision
    ddp = int(os.environ.get('RANK', -1)) != -1
    dev = device
    if dev == 'auto':
        dev = 'cuda' if torch.cuda.is_available() else ('mps' if torch.backends.mps.is_available() else 'cpu')
    if ddp:
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if dev.startswith('cuda'):
            dev = f'cuda:{local_rank}'
            torch.cuda.set_device(dev)
        dist.init_process_group(backend='nccl' if dev.startswith('cuda') else 'gloo')
    else:
        rank, local_rank, world = 0, 0, 1
    master = rank == 0
    if gradient_accumulation_steps % world:
        sys.exit(f"error: gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple "
                 f"of the number of processes ({world})")
    accum = gradient_accumulation_steps // world
    device_type = 'cuda' if dev.startswith('cuda') else dev
    ptdtype_name = dtype
    if ptdtype_name == 'auto':
        ptdtype_name = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if ptdtype_name not in ('float32', 'bfloat16', 'float16'):
        sys.exit(f"error: --dtype {ptdtype_name!r}: expected auto, float32, bfloat16 or float16")
    ptdtype = getattr(torch, ptdtype_name)
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed + rank)  # dropout masks differ between ranks

    # ---- data
    data_path = resolve_data_dir(data_dir)
    tokenizer = load_tokenizer(data_path)
    meta = tokenizer.meta
    bin_dtype = np.dtype(meta['dtype'])
    if model_type not in ('backpack', 'transformer'):
        sys.exit(f"error: --model_type {model_type!r}: expected backpack or transformer")
    if init_from not in ('scratch', 'resume', 'backpack-small'):
        sys.exit(f"error: --init_from {init_from!r}: expected scratch, resume or backpack-small")

    # ---- model
    ckpt = None
    if init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        if not os.path.isfile(ckpt_path):
            sys.exit(f"error: --init_from resume but {ckpt_path} does not exist")
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        if ckpt['model_type'] != model_type:
            sys.exit(f"error: {ckpt_path} holds a {ckpt['model_type']} model, but --model_type is {model_type}; "
                     f"resume it with --model_type {ckpt['model_type']} or use another --out_dir")
        if ckpt['meta']['vocab_size'] != meta['vocab_size'] or ckpt['meta']['tokenizer'] != meta['tokenizer']:
            sys.exit(f"error: {ckpt_path} was trained on data with another tokenizer/vocabulary than {data_path}")
        model_args = ckpt['model_args']
        model = build_model(model_type, model_args)
        model.load_state_dict(ckpt['model'])
    elif init_from == 'backpack-small':
        if model_type != 'backpack':
            sys.exit("error: --init_from backpack-small loads a Backpack; use --model_type backpack")
        if meta['tokenizer']['type'] != 'gpt2':
            sys.exit(f"error: --init_from backpack-small needs data prepared with the GPT-2 tokenizer "
                     f"(backpack-gpt2's vocabulary), but {data_path} uses {meta['tokenizer']['type']!r}; "
                     f"run data/europarl/prepare.py --tokenizer gpt2 --out_dir data/europarl_gpt2")
        try:
            model = from_pretrained_backpack(pretrained_path, dropout=dropout)
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f"error: {e}")
        if meta['vocab_size'] > model.config.vocab_size:
            sys.exit(f"error: data vocab {meta['vocab_size']} exceeds the pretrained vocab {model.config.vocab_size}")
        if block_size > model.config.block_size:
            sys.exit(f"error: --block_size {block_size} exceeds the pretrained model's {model.config.block_size}")
        model.crop_block_size(block_size)
        model_args = asdict(model.config)
    else:
        wanted = dict(block_size=block_size, vocab_size=meta['vocab_size'], n_layer=n_layer, n_head=n_head,
                      n_embd=n_embd, n_senses=n_senses, dropout=dropout, bias=bias,
                      sense_intermediate_scale=sense_intermediate_scale,
                      scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx)
        model_args = {f.name: wanted[f.name] for f in fields(ModelConfig) if f.name in wanted}
        model = build_model(model_type, model_args)
    model_cfg = model.config
    if model_cfg.block_size < block_size:
        sys.exit(f"error: --block_size {block_size} exceeds the model's block_size {model_cfg.block_size}")
    raw_model = model.to(dev)

    optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(ptdtype == torch.float16))
    train_batches = Batches(os.path.join(data_path, 'train.bin'), bin_dtype, block_size, batch_size, seed + rank)
    eval_sources = {name: Batches(os.path.join(data_path, f'{name}.bin'), bin_dtype, block_size, batch_size, 0)
                    for name in ('train', 'val', 'val_en', 'val_fr')}

    iter_num, best_val_loss, evaluated_at = 0, float('inf'), -1
    log = {'model_type': model_type, 'config': config, 'train_loss': [], 'evals': []}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
        iter_num, best_val_loss, evaluated_at = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['evaluated_at']
        log = ckpt['training_log']
        states = ckpt['rng']
        if len(states) != world and master:
            print(f"note: checkpoint written by {len(states)} process(es), resuming with {world}: "
                  f"the data order differs from an uninterrupted run")
        if rank < len(states):
            set_rng_state(states[rank]['rng'])
            train_batches.load_state_dict(states[rank]['sampler'])
        ckpt = None  # free the memory

    model = torch.compile(raw_model) if compile else raw_model
    eval_model = model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)

    if master:
        os.makedirs(out_dir, exist_ok=True)
        # out_dir carries the data's tokenizer and held-out files, so evaluation needs only out_dir
        for name in EVAL_FILES:
            src = os.path.join(data_path, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(out_dir, name), dirs_exist_ok=True)
            elif os.path.isfile(src):
                shutil.copy(src, os.path.join(out_dir, name))
        print(f"{model_type}: {raw_model.param_counts()['total']:,} parameters; "
              f"data {data_path} (vocab {meta['vocab_size']}); device {dev} {ptdtype_name}; "
              f"{world} process(es) x {accum} micro-steps x {batch_size} x {block_size} tokens per iteration")

    tokens_per_iter = accum * world * batch_size * block_size
    peak = peak_flops or next((v for k, v in PEAK_FLOPS.items()
                               if device_type == 'cuda' and ptdtype != torch.float32
                               and k in torch.cuda.get_device_name(dev)), 0.0)
    train_flops_per_iter = flops_per_token(model_type, model_cfg, block_size) * tokens_per_iter

    # ---- helpers that close over the run's state
    @torch.no_grad()
    def evaluate():
        eval_model.eval()
        out = {}
        for i, (name, source) in enumerate(eval_sources.items()):
            rng = np.random.default_rng(seed + 1000 * i)  # the same windows at every evaluation
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = source.sample(rng)
                with autocast:
                    _, loss = eval_model(X.to(dev), Y.to(dev))
                losses[k] = loss.item()
            out[name] = losses.mean().item()
        for lang in ('en', 'fr'):
            split = meta['splits'][f'val_{lang}']
            nll = out[f'val_{lang}']
            out[f'val_{lang}_ppl'] = math.exp(nll)
            out[f'val_{lang}_bpb'] = nll * split['tokens'] / split['bytes'] / math.log(2)
        if model_type == 'backpack':
            out['senses'] = probe_senses(raw_model)
        eval_model.train()
        return out

    lang_masks = {lang: torch.from_numpy(tokenizer.language_mask(lang)) for lang in ('en', 'fr')}

    @torch.no_grad()
    def probe_senses(m):
        """Top tokens pushed up by each sense of each probe word, in the probe's language.

        A word split into several pieces uses the mean of its pieces' sense vectors (Hewitt et al.)."""
        result = {}
        for lang, words in (('en', probe_words_en), ('fr', probe_words_fr)):
            for word in words:
                ids = tokenizer.encode_word(word)
                logits = m.sense_logits(torch.tensor(ids, device=dev)).float().mean(0)  # (k, V)
                logits = logits[:, :len(lang_masks[lang])].masked_fill(~lang_masks[lang].to(dev), float('-inf'))
                top = logits.topk(probe_top_k, dim=-1).indices.tolist()
                result[f'{lang}:{word}'] = [[tokenizer.token_str(t) for t in sense] for sense in top]
        return result

    def gathered_states():
        mine = {'rng': rng_state(), 'sampler': train_batches.state_dict()}
        if not ddp:
            return [mine]
        states = [None] * world
        dist.all_gather_object(states, mine)
        return states

    saved_at = {'iter': -1}

    def save(reason):
        if saved_at['iter'] == iter_num:  # e.g. the end of a run right after an improving evaluation
            return
        saved_at['iter'] = iter_num
        states = gathered_states()  # every rank takes part
        if master:
            save_checkpoint({
                'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(),
                'scaler': scaler.state_dict(), 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                'evaluated_at': evaluated_at, 'config': config, 'model_type': model_type,
                'model_args': asdict(model_cfg), 'meta': meta, 'training_log': log, 'rng': states,
            }, os.path.join(out_dir, 'ckpt.pt'))
            print(f"saved {os.path.join(out_dir, 'ckpt.pt')} at iter {iter_num} ({reason})")

    def flush_losses(pending):
        """Move this interval's losses to the log; stop the run on a non-finite loss."""
        if not pending:
            return
        values = torch.stack(pending).tolist()
        start = iter_num - len(values)
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                if master:
                    print(f"error: training loss is {v} at iter {start + i + 1}; stopping without saving. "
                          f"The last good checkpoint ({os.path.join(out_dir, 'ckpt.pt')}) is left intact.",
                          file=sys.stderr)
                sys.exit(1)
        log['train_loss'].extend(values)

    stop = {'requested': False}

    def request_stop(signum, frame):
        stop['requested'] = True
        signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    # ---- the loop
    pending = []
    t0, t_interval, it_interval = time.time(), time.time(), iter_num
    elapsed0 = log['evals'][-1]['elapsed_s'] if log['evals'] else 0.0
    evals_done = len(log['evals'])
    stop_now = False
    while True:
        if iter_num % eval_interval == 0 and iter_num != evaluated_at:
            flush_losses(pending)
            stats = evaluate() if master else None
            if ddp:
                box = [stats]
                dist.broadcast_object_list(box, src=0)
                stats = box[0]
            evaluated_at, evals_done = iter_num, evals_done + 1
            entry = {'iter': iter_num, 'lr': get_lr(iter_num), 'tokens_seen': iter_num * tokens_per_iter,
                     'elapsed_s': elapsed0 + time.time() - t0, **stats}
            log['evals'].append(entry)
            improved = stats['val'] < best_val_loss
            if master:
                print(f"eval {iter_num}: train {stats['train']:.4f} val {stats['val']:.4f} | "
                      f"val_en ppl {stats['val_en_ppl']:.2f} bpb {stats['val_en_bpb']:.3f} | "
                      f"val_fr ppl {stats['val_fr_ppl']:.2f} bpb {stats['val_fr_bpb']:.3f}")
                save_json(log, os.path.join(out_dir, 'training_log.json'))
            if improved:
                best_val_loss = stats['val']
                if master:
                    save_checkpoint({'model': raw_model.state_dict(), 'model_type': model_type,
                                     'model_args': asdict(model_cfg), 'config': config, 'meta': meta,
                                     'iter_num': iter_num, 'val_loss': best_val_loss},
                                    os.path.join(out_dir, 'best.pt'))
            if iter_num > 0 and (improved or evals_done % 5 == 0):
                save('val improved' if improved else 'periodic')
            t_interval, it_interval = time.time(), iter_num  # keep evaluation out of ms/iter
        if iter_num >= max_iters:
            break

        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group['lr'] = lr
        loss_sum = torch.zeros((), device=dev)
        for micro in range(accum):
            if ddp:
                model.require_backward_grad_sync = micro == accum - 1  # all-reduce once per iteration
            X, Y = train_batches.sample()
            with autocast:
                _, loss = model(X.to(dev), Y.to(dev))
                loss = loss / accum
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ddp:  # the logged loss is the mean over all ranks' micro-batches
            dist.all_reduce(loss_sum)  # gloo has no AVG
            loss_sum /= world
        pending.append(loss_sum)
        iter_num += 1

        if iter_num % log_interval == 0 or iter_num == max_iters:
            flush_losses(pending)
            dt = (time.time() - t_interval) / max(1, iter_num - it_interval)
            t_interval, it_interval = time.time(), iter_num
            if master:
                mfu = f"mfu {100 * train_flops_per_iter / dt / peak:.1f}%" if peak else \
                    f"{train_flops_per_iter / dt / 1e12:.2f} TFLOP/s"
                eta = (max_iters - iter_num) * dt
                print(f"iter {iter_num}: loss {log['train_loss'][-1]:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                      f"{tokens_per_iter / dt:,.0f} tok/s, {mfu}, eta {eta / 60:.1f} min")
        stop_now = stop['requested']
        if ddp:  # every rank stops at the same iteration
            flag = torch.tensor(float(stop_now), device=dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop_now = bool(flag.item())
        if stop_now:
            break

    flush_losses(pending)
    save('interrupted by signal' if stop_now else 'end of run')
    if master:
        save_json(log, os.path.join(out_dir, 'training_log.json'))
        if stop_now:
            print(f"stopped by signal at iter {iter_num}; continue with --init_from resume --out_dir {out_dir}")
        else:
            from experiments.plots import plot_loss_curves
            plot_loss_curves({model_type: log}, os.path.join(out_dir, 'loss_curve.png'))
    if ddp:
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
