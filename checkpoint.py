"""
Checkpoints: written by train.py, read by evaluate.py, sample.py and compare_models.py.

out_dir/ckpt.pt  the resume point: model, optimizer, scaler, iteration, RNG and sampler states, log.
out_dir/best.pt  the weights with the best validation loss (what evaluation loads), plus what is
                 needed to rebuild the model and its tokenizer (model type and args, data meta).
An export_hf.py directory (config.json + model.safetensors, with its release.json and meta.json) is read
as a checkpoint too: load_model rebuilds from it the model that was exported (load_export).
Both are plain dicts of tensors and Python primitives, so `torch.load(path, weights_only=True)`
reads them. Both, and training_log.json, are written atomically and durably (temp file, fsync,
os.replace, fsync of the directory): a save interrupted at any moment, even by SIGKILL or a power
loss, leaves the previous file whole. They get the mode of any new file (0666 less the umask).
"""
import dataclasses
import errno
import json
import math
import os
import random
import secrets

import numpy as np
import torch
import torch.distributed as dist

from errors import MissingFileError, OutOfSpaceError, UserError
from model import BackpackLM, ModelConfig, StandardTransformerLM
from pretrained import from_export

MODEL_CLASSES = {'backpack': BackpackLM, 'transformer': StandardTransformerLM}


# ----------------------------------------------------------------------------------------------------
# writing

def atomic_write(path, write, size=None):
    """Call write(f) on a new binary file beside `path`, make it durable, then move it onto `path`.

    A full disk (or quota) is one OutOfSpaceError naming the directory and the MB needed (`size` bytes,
    when the caller knows it, else what was written before the disk filled up); like any failure, it
    leaves `path` as it was and no temp file behind."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    try:
        with open(tmp, 'xb') as f:  # a plain new file: mode 0666 & ~umask (mkstemp would give 0600)
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the content is on disk before the name points to it
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {os.path.basename(path)} is left whole" if os.path.exists(path) else \
                "nothing was written"
            full = OutOfSpaceError(f"no space left on {directory} ({math.ceil((size or written) / 2**20):,} MB "
                                   f"needed); {kept}: free some space and run again")
            full.errno = e.errno
            raise full from None
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # and so is the new name
    finally:
        os.close(fd)


def tensor_bytes(obj):
    """The bytes of the tensors in a nested dict/list: about what torch.save writes of it."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(map(tensor_bytes, obj.values()))
    if isinstance(obj, (list, tuple)):
        return sum(map(tensor_bytes, obj))
    return 0


def save_checkpoint(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f), size=tensor_bytes(obj))


def save_json(obj, path):
    data = json_text(obj).encode()
    atomic_write(path, lambda f: f.write(data + b'\n'), size=len(data) + 1)


def json_text(obj, level=0):
    """json.dumps(obj, indent=1), except that a list of plain values (numbers, strings, bools, nulls) stays on
    one line: the per-item outputs of a results file (hits, cosines, hypotheses) would otherwise take a line each,
    and the file three times its size."""
    pad = ' ' * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f'{pad}{json.dumps({k: 0})[1:-4]}: {json_text(v, level + 1)}' for k, v in obj.items()]
        return '{\n' + ',\n'.join(items) + '\n' + ' ' * level + '}'
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return '[\n' + ',\n'.join(pad + json_text(v, level + 1) for v in obj) + '\n' + ' ' * level + ']'
    return json.dumps(obj)


class OutDirLock:
    """`with OutDirLock(out_dir, 'run_full_evaluation.py'):` one such writer in out_dir at a time.

    The lock is out_dir/.<script>.lock, created atomically (O_CREAT | O_EXCL) holding the owner's pid and
    removed on leaving the block. A second writer meets it and gets one UserError naming the owner; a lock
    whose process is gone (killed, or its machine rebooted) is stale and taken over."""

    def __init__(self, out_dir, script):
        self.script = script
        self.path = os.path.join(out_dir, f'.{os.path.splitext(os.path.basename(script))[0]}.lock')

    def owner(self):
        """The pid in the lock file, if that process is alive; None for a stale lock."""
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
        return pid

    def __enter__(self):
        for _ in range(3):  # a stale lock is removed and the creation tried again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pid = self.owner()
                if pid is not None:
                    raise UserError(f"{os.path.dirname(self.path)} is being written by another {self.script} "
                                    f"(pid {pid}, lock {self.path}): wait for it to end, or use another --out_dir")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(f'{os.getpid()}\n')
            return self
        raise UserError(f"cannot take the lock {self.path}: other processes keep taking it; try again")

    def __exit__(self, *exc):
        if self.owner() == os.getpid():
            os.remove(self.path)


# ----------------------------------------------------------------------------------------------------
# what train.py saves and restores besides the weights: every process's RNGs and the batch sampler

def rng_state():
    """This process's Python, numpy, torch (and its CUDA device's) RNG states, as weights_only-loadable
    values. Only the current device's CUDA state: a process draws on its own GPU alone, and a resume on
    a host with fewer GPUs must not need the others'."""
    state = {'python': random.getstate(), 'torch': torch.get_rng_state()}
    np_state = np.random.get_state()
    state['numpy'] = (np_state[0], np_state[1].tolist()) + tuple(np_state[2:])
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    torch.set_rng_state(state['torch'])
    np_state = state['numpy']
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32)) + tuple(np_state[2:]))
    if 'cuda' in state and torch.cuda.is_available():
        cuda, index = state['cuda'], torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):  # written before: every visible GPU's state, in device order
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def gather_rng_states(sampler_state, world):
    """[{'rng', 'sampler'}] of every rank, in rank order. A collective under DDP: every rank calls it."""
    mine = {'rng': rng_state(), 'sampler': sampler_state}
    if world == 1:
        return [mine]
    states = [None] * world
    dist.all_gather_object(states, mine)
    return states


def resume_checkpoint(model, optimizer, scaler, rng, *, iter_num, best_val_loss, evaluated_at, training_log,
                      config, model_type, model_args, meta):
    """The dict ckpt.pt holds: everything --init_from resume needs to continue the run exactly."""
    return {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
            'rng': rng, 'iter_num': iter_num, 'best_val_loss': best_val_loss, 'evaluated_at': evaluated_at,
            'training_log': training_log, 'config': config, 'model_type': model_type, 'model_args': model_args,
            'meta': meta}


def best_checkpoint(model, *, iter_num, val_loss, config, model_type, model_args, meta):
    """The dict best.pt holds: the weights and what evaluation needs to rebuild the model."""
    return {'model': model.state_dict(), 'iter_num': iter_num, 'val_loss': val_loss, 'config': config,
            'model_type': model_type, 'model_args': model_args, 'meta': meta}


def restore_training(ckpt, optimizer, scaler, sampler, rank):
    """Load ckpt.pt's optimizer, scaler, this rank's RNGs and the sampler; returns the number of
    processes that wrote it. The sampler draws every rank's batch, so rank 0's state serves all."""
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    states = ckpt['rng']
    if rank < len(states):
        set_rng_state(states[rank]['rng'])
    sampler.load_state_dict(states[0]['sampler'])
    return len(states)


# ----------------------------------------------------------------------------------------------------
# reading

EXPORT_WEIGHTS = 'model.safetensors'  # the weights of an export_hf.py directory, beside its config.json
RELEASE = 'release.json'  # what export_hf.py records of an export (export_hf.release_record)


def checkpoint_path(out_dir):
    """best.pt if present, else ckpt.pt, else the model.safetensors of an export_hf.py directory (with its
    config.json); one clear error when out_dir holds none of them."""
    for name in ('best.pt', 'ckpt.pt'):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            return path
    path = os.path.join(out_dir, EXPORT_WEIGHTS)
    if os.path.isfile(path) and os.path.isfile(os.path.join(out_dir, 'config.json')):
        return path
    raise MissingFileError(f"no checkpoint in {str(out_dir)!r} (expected best.pt or ckpt.pt written by train.py, "
                           f"or config.json + {EXPORT_WEIGHTS} written by export_hf.py)")


def is_export(out_dir):
    """Whether out_dir's weights are an export's (export_hf.py), not a train.py checkpoint."""
    return os.path.basename(checkpoint_path(out_dir)) == EXPORT_WEIGHTS


def read_release(out_dir):
    """An export's release.json as a dict, None when it has none (an export made before release.json existed,
    or a Hugging Face directory from elsewhere); a file that is not JSON is a UserError naming it."""
    path = os.path.join(out_dir, RELEASE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): export the model again with export_hf.py") from None


def read_checkpoint(path):
    """torch.load(path, weights_only=True), with a one-line error naming a truncated or corrupt file."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path} does not exist")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # arbitrary bytes fail in many ways (KeyError, UnpicklingError, BadZipFile, ...)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path} is truncated or corrupt ({reason}); train again or use another "
                        f"checkpoint") from None
    if not isinstance(ckpt, dict) or not {'model', 'model_type', 'model_args', 'meta'} <= set(ckpt):
        raise UserError(f"{path} is not a checkpoint written by train.py")
    return ckpt


def build_model(model_type, model_args):
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[model_type](ModelConfig(**model_args))


def model_from_checkpoint(ckpt):
    """The model of a checkpoint dict, weights loaded (on the CPU, in train mode).

    A model may have more embedding rows than its tokenizer has ids (backpack-gpt2 pads GPT-2's
    50,257 + our tags to 50,264); ModelConfig.tokenizer_vocab_size says how many are real ids.
    Checkpoints written before that field existed get it here, from the data meta they carry."""
    args = dict(ckpt['model_args'])
    if 'tokenizer_vocab_size' not in args:
        n_ids = ckpt['meta']['vocab_size']
        args['tokenizer_vocab_size'] = n_ids if n_ids < args['vocab_size'] else 0
    ckpt['model_args'] = args
    model = build_model(ckpt['model_type'], args)
    model.load_state_dict(ckpt['model'])
    return model


def load_model(out_dir, device='cpu'):
    """(model in eval mode on `device`, checkpoint dict without the weights) from best.pt or ckpt.pt, or from
    an export_hf.py directory (load_export)."""
    if is_export(out_dir):
        model, ckpt = load_export(out_dir)
        return model.to(device).eval(), ckpt
    ckpt = read_checkpoint(checkpoint_path(out_dir))
    model = model_from_checkpoint(ckpt)
    ckpt.pop('model')
    ckpt.pop('optimizer', None)
    return model.to(device).eval(), ckpt


def load_export(out_dir):
    """(model on the CPU, the checkpoint dict best.pt would give without its weights) of an export_hf.py
    directory. Its release.json gives the ModelConfig (model_args), iteration and validation loss, so that the
    model rebuilt is the one exported, bit for bit (pretrained.from_export); its meta.json is the data meta. The
    training settings are not part of an export ('config' is empty: the run's training_log.json has them). An
    export without release.json loads with the config of its config.json (iteration and loss unknown: None)."""
    release = read_release(out_dir) or {}
    meta_path = os.path.join(out_dir, 'meta.json')
    meta = None
    if os.path.isfile(meta_path):
        with open(meta_path, encoding='utf-8') as f:
            meta = json.load(f)
    try:
        model_type, model = from_export(out_dir, release.get('model_args'))
    except (ValueError, KeyError, OSError, RuntimeError) as e:  # a bad config.json or weights file: say which
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{out_dir} is not an export this repository can load ({reason}); export the model "
                        f"again with export_hf.py") from None
    if release.get('model_type', model_type) != model_type:
        raise UserError(f"{out_dir}: release.json says {release['model_type']}, config.json holds a {model_type}: "
                        f"export the model again with export_hf.py")
    if 'model_args' not in release and meta and meta['vocab_size'] < model.config.vocab_size:
        model.config.tokenizer_vocab_size = meta['vocab_size']  # the rows past the tokenizer's ids are padding
    return model, {'model_type': model_type, 'model_args': dataclasses.asdict(model.config),
                   'iter_num': release.get('iter_num'), 'val_loss': release.get('val_loss'),
                   'config': {}, 'meta': meta}
