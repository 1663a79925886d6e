"""
Pretrained weights: stanfordnlp/backpack-gpt2 (a local Hugging Face directory, or the hub when it is
reachable) and the exports of export_hf.py (backpack-gpt2's layout, or a stock GPT-2 for the
Transformer), read into model.py's models. No remote code runs: the state dict is renamed key by key
(GPT-2's Conv1D weights transposed), every tied copy checked equal to the tensor it aliases, and a bias
our model lacks (bias=False) checked zero and dropped.
"""
import json
import re
from pathlib import Path

import torch

from model import BackpackLM, ModelConfig, StandardTransformerLM, is_backpack


def from_pretrained_backpack(path_or_name='stanfordnlp/backpack-gpt2', dropout=None):
    """BackpackLM with the weights of a HF backpack-gpt2 checkpoint: a local directory (config.json +
    model.safetensors or pytorch_model.bin), or a hub name when the hub is reachable. No remote code
    runs. `dropout` overrides the checkpoint's resid_pdrop (e.g. for finetuning)."""
    directory = Path(path_or_name)
    if not directory.is_dir():
        if not HUB_ID.fullmatch(str(path_or_name)):  # a path (/x, ./x, a/b/c), which no hub id looks like
            raise FileNotFoundError(f"--pretrained_path {path_or_name}: no such directory (a local backpack-gpt2 "
                                    f"is a directory with config.json and model.safetensors or pytorch_model.bin)")
        directory = _download(str(path_or_name))
    hf = _read_hf_config(directory, 'backpack-gpt2')
    model = BackpackLM(_hf_model_config(hf, dropout))
    model.load_state_dict(_convert_hf_state_dict(_read_weights(directory), model), strict=True)
    return model


HF_MODEL_TYPES = {'backpack-gpt2': 'backpack', 'gpt2': 'transformer'}  # config.json's model_type -> ours


def from_export(directory, model_args=None):
    """(our model_type, model on the CPU in train mode) of a Hugging Face directory in one of export_hf.py's
    layouts (config.json + model.safetensors or pytorch_model.bin): model_type backpack-gpt2 gives a BackpackLM,
    gpt2 (a stock GPT2LMHeadModel) a StandardTransformerLM.

    model_args, the ModelConfig fields of the model that was exported (export_hf.py records them in
    release.json), rebuild that very model: with bias=False the zero biases the export had to add are checked
    zero and dropped, so the weights, and every number computed from them, are the trained model's bit for bit.
    Their shapes must be those of config.json. Without model_args the config comes from config.json, with
    biases (as from_pretrained_backpack)."""
    directory = Path(directory)
    hf = _read_hf_config(directory)
    model_type = HF_MODEL_TYPES[hf['model_type']]
    derived = _hf_model_config(hf)
    config = derived if model_args is None else ModelConfig(**model_args)
    shape = ['block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd', 'scale_attn_by_inverse_layer_idx'] + \
        (['n_senses', 'sense_intermediate_scale'] if model_type == 'backpack' else [])
    differ = [f"{name} {getattr(config, name)} (config.json: {getattr(derived, name)})" for name in shape
              if getattr(config, name) != getattr(derived, name)]
    if differ:
        raise ValueError(f"{directory}: the recorded model_args do not describe config.json's model: {', '.join(differ)}")
    model = (BackpackLM if model_type == 'backpack' else StandardTransformerLM)(config)
    model.load_state_dict(_convert_hf_state_dict(_read_weights(directory), model), strict=True)
    return model_type, model


def _read_hf_config(directory, model_type=None):
    """config.json of a Hugging Face directory, checked to be a layout this file reads (model_type, when given,
    the one expected) with GPT-2's activation, LayerNorm epsilon and MLP width."""
    path = Path(directory) / 'config.json'
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a Hugging Face "
                                f"{model_type or 'backpack-gpt2 or GPT-2'} directory")
    hf = json.loads(path.read_text())
    hf.setdefault('model_type', model_type or 'backpack-gpt2')
    if hf['model_type'] not in ((model_type,) if model_type else HF_MODEL_TYPES):
        raise ValueError(f"{path}: model_type {hf['model_type']!r}, expected "
                         f"{model_type or ' or '.join(HF_MODEL_TYPES)}")
    if hf.get('activation_function', 'gelu_new') != 'gelu_new' or hf.get('layer_norm_epsilon', 1e-5) != 1e-5 \
            or hf.get('n_inner') not in (None, 4 * hf.get('n_embd', 768)):
        raise ValueError(f"{path}: only gelu_new, layer_norm_epsilon 1e-5 and n_inner 4*n_embd are supported")
    if hf['model_type'] == 'gpt2' and not (hf.get('tie_word_embeddings', True) and hf.get('scale_attn_weights', True)
                                           and not hf.get('reorder_and_upcast_attn', False)):
        raise ValueError(f"{path}: only a GPT-2 with tied embeddings, scaled attention weights and no "
                         f"reorder_and_upcast_attn is our Transformer")
    return hf


def _hf_model_config(hf, dropout=None):
    """The ModelConfig of a config.json (the defaults are backpack-gpt2's), with biases as GPT-2 has them."""
    return ModelConfig(
        block_size=hf.get('n_positions', 512), vocab_size=hf.get('vocab_size', 50264),
        n_layer=hf.get('n_layer', 12), n_head=hf.get('n_head', 12), n_embd=hf.get('n_embd', 768),
        n_senses=hf.get('num_senses', 16), sense_intermediate_scale=hf.get('sense_intermediate_scale', 4),
        scale_attn_by_inverse_layer_idx=hf.get('scale_attn_by_inverse_layer_idx', hf['model_type'] != 'gpt2'),
        bias=True, dropout=hf.get('resid_pdrop', 0.1) if dropout is None else dropout)


HUB_ID = re.compile(r'[\w][\w.-]*(/[\w][\w.-]*)?')  # 'name' or 'namespace/name', as the hub allows


def _download(name):
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, allow_patterns=['config.json', '*.safetensors', 'pytorch_model.bin']))
    except Exception as e:
        raise FileNotFoundError(
            f"cannot get '{name}' from the Hugging Face hub ({type(e).__name__}), and there is no local directory "
            f"of that name; offline, pass a local directory with its config.json and model.safetensors or "
            f"pytorch_model.bin instead") from None


def _read_weights(directory):
    if (directory / 'model.safetensors').exists():
        from safetensors.torch import load_file
        return load_file(directory / 'model.safetensors')
    if (directory / 'pytorch_model.bin').exists():
        return torch.load(directory / 'pytorch_model.bin', map_location='cpu', weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


# per layout: HF key prefix -> ours, and the HF keys that are tied copies of one of our tensors
HF_LAYOUTS = {
    'backpack-gpt2': ([('backpack.gpt2_model.', 'transformer.'), ('backpack.sense_network.', 'sense_network.'),
                       ('backpack.sense_weight_net.c_attn.', 'sense_weight_net.')],
                      {'lm_head.weight': 'transformer.wte.weight',
                       'backpack.word_embeddings.weight': 'transformer.wte.weight',
                       'backpack.position_embeddings.weight': 'transformer.wpe.weight'}),
    'gpt2': ([('transformer.', 'transformer.')], {'lm_head.weight': 'transformer.wte.weight'}),
}


def _convert_hf_state_dict(sd, model):
    """HF key -> our key, in backpack-gpt2's layout for a Backpack and GPT2LMHeadModel's for the Transformer;
    GPT-2 Conv1D weights are stored (in, out) and are transposed, the weight head (an nn.Linear) is not. Tied
    copies (lm_head, the word/position embedding aliases) must equal the tensor they alias. A bias our model
    lacks (bias=False) must be zero, as export_hf.py writes it, and is dropped: a non-zero one means other
    weights than the model's. Every other key is used, the attention mask buffers excepted."""
    renames, aliases = HF_LAYOUTS['backpack-gpt2' if is_backpack(model) else 'gpt2']
    ours_keys = set(model.state_dict())
    out, tied, unknown = {}, [], []
    for key, tensor in sd.items():
        if key.endswith(('.attn.bias', '.attn.masked_bias')):
            continue
        if key in aliases:
            tied.append((key, tensor))
            continue
        ours = next((new + key[len(old):] for old, new in renames if key.startswith(old)), None)
        if ours is not None and ours not in ours_keys and ours.endswith('.bias') and not model.config.bias:
            if tensor.any():
                raise ValueError(f"{key} is not zero, and the model it is loaded into has no biases (bias=False): "
                                 f"these are not the weights of that model")
            continue
        if ours is None:
            unknown.append(key)
            continue
        conv1d = ours.endswith('.weight') and ('.attn.c_' in ours or 'mlp.c_' in ours)
        out[ours] = tensor.t() if conv1d else tensor
    expected = ours_keys - {'lm_head.weight'}
    missing = sorted(expected - set(out))
    unknown += sorted(set(out) - expected)
    if unknown or missing:
        raise ValueError(f"the checkpoint does not match {type(model).__name__}: unexpected keys {unknown[:5]}, "
                         f"missing keys {missing[:5]}")
    for key, tensor in tied:
        if not torch.equal(tensor, out[aliases[key]]):
            raise ValueError(f"the checkpoint's {key}, a tied copy of {aliases[key]}, differs from it")
    out['lm_head.weight'] = out['transformer.wte.weight']
    return out
