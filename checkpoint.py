"""
Checkpoints: written by train.py, read by evaluate.py, sample.py and compare_models.py.

out_dir/ckpt.pt  the resume point: model, optimizer, scaler, iteration, RNG and sampler states, log.
out_dir/best.pt  the weights with the best validation loss (what evaluation loads), plus what is
                 needed to rebuild the model and its tokenizer (model type and args, data meta).
Both are plain dicts of tensors and Python primitives, so `torch.load(path, weights_only=True)`
reads them, and both are written atomically (temp file + os.replace): an interrupted save never
leaves a truncated checkpoint behind.
"""
import json
import os
import tempfile

import torch

from model import BackpackLM, ModelConfig, StandardTransformerLM

MODEL_CLASSES = {'backpack': BackpackLM, 'transformer': StandardTransformerLM}


def atomic_write(path, write):
    """Call write(tmp_path), then move tmp_path onto path in one step."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_json(obj, path):
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def checkpoint_path(out_dir):
    """best.pt if present, else ckpt.pt; one clear error when out_dir holds neither."""
    for name in ('best.pt', 'ckpt.pt'):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no checkpoint in {out_dir!r} (expected best.pt or ckpt.pt written by train.py)")


def build_model(model_type, model_args):
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[model_type](ModelConfig(**model_args))


def load_model(out_dir, device='cpu'):
    """(model in eval mode on `device`, checkpoint dict without the weights) from best.pt or ckpt.pt."""
    ckpt = torch.load(checkpoint_path(out_dir), map_location='cpu', weights_only=True)
    model = build_model(ckpt['model_type'], ckpt['model_args'])
    model.load_state_dict(ckpt.pop('model'))
    ckpt.pop('optimizer', None)
    return model.to(device).eval(), ckpt
