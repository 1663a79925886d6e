"""
Export a trained model (train.py's out_dir) as a Hugging Face model directory, and optionally push it.

    python export_hf.py --out_dir out/tiny_backpack --hf_dir hf/tiny_backpack
    python export_hf.py --out_dir out/tiny_transformer --hf_dir hf/tiny_transformer --push_to_hub user/name

A Backpack is written in the layout of stanfordnlp/backpack-gpt2 (config.json with the field names of its
BackpackGPT2Config, model.safetensors with its key names and GPT-2's Conv1D orientation) together with its own
modeling code: hf_backpack/modeling_backpack.py and configuration_backpack.py (torch and transformers only;
tests/test_hf_backpack.py checks them against model.py) are copied beside the weights, and config.json's
auto_map points at these copies, so that

    AutoModelForCausalLM.from_pretrained(hf_dir_or_hub_id, trust_remote_code=True)

runs with transformers 5 and 4.x, offline, and supports labels, attention_mask (left padding), the KV cache,
generate() and pipeline('text-generation'), output_hidden_states, and output_senses=True (the senses and
alpha). generation_config.json gives the EOS id and suppresses the embedding's padding rows (if any), which
are never tokens. pretrained.from_pretrained_backpack(hf_dir) reads the directory with this repo's
BackpackLM, and `train.py --init_from backpack-small --pretrained_path hf_dir` starts a new training run from it.

A backpack-gpt2 checkpoint (stanfordnlp/backpack-gpt2 itself, or any directory in its layout, pickle
pytorch_model.bin included) gets the same modeling code in one line:

    python export_hf.py --from_hf DIR [--hf_dir NEW_DIR]

checks its weights (pretrained.from_pretrained_backpack must load them), and writes model.safetensors (each
tensor once: the tied copies and GPT-2's attention-mask buffers left out), the two modeling files and its
config.json with our auto_map, into DIR itself (a pytorch_model.bin there is kept; safetensors is read first)
or, with --hf_dir, into a new directory with DIR's other files (tokenizer, README, ...).

The Transformer twin becomes a stock GPT2LMHeadModel (no remote code), which AutoModelForCausalLM and
pipeline('text-generation') load as it is. Where our model has no biases (bias=False), the export has zero
biases: GPT-2's and backpack-gpt2's modules always have one, and adding zero changes nothing.

Both get the tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json): AutoTokenizer
gives the ids of tokenizer.py, with `<en>`/`<fr>` as special tokens that swallow the spaces around them,
so "<en> Thank you. <fr>" encodes as tokenizer.encode_prompt("Thank you.", "en", "fr") does (one
difference: the EOS string, e.g. "</s>", typed in the text becomes the EOS id, as in GPT-2's tokenizer,
where ours keeps it as text). The model card (README.md) is generated from the out_dir's
evaluation_results.json (run_full_evaluation.py), which is copied beside it; results computed from
another checkpoint than the one exported are refused.

For this repository's own code the export is self-contained: it carries the out_dir's meta.json and our
tokenizer files (tokenizer/tokenizer.json, vocab_map.npy when compacted; transformers' tokenizer files stay
as they are), so that evaluate.load_model / load_tokenizer, sample.py, evaluate.py and run_full_evaluation.py
take the export directory as their --out_dir (the held-out data come from --data_dir):

    python run_full_evaluation.py --out_dir hf/tiny_backpack --data_dir data/europarl_sample \
        --results_dir out/reeval/tiny_backpack

and release.json records what the export is (release_record): the checkpoint it was made from, exactly as
evaluation_results.json's model.checkpoint records it; the sha256 of each weight file and of the
evaluation_results.json copied; model_type, iteration, validation loss and the ModelConfig (model_args),
from which the model is rebuilt bit for bit (a bias=False model drops the zero biases again); and a check
slice, the token ids of the first 32 documents (CHECK_DOCUMENTS) of val_en.bin and val_fr.bin with their text
and its UTF-8 bytes, which the results' per-document NLLs (perplexity doc_nll) score: anyone holding the
export can check that it reproduces the evaluation without the data (tests/test_cpu_reference.py), and
verify_evaluation.py --committed checks the export beside committed results (<run>/hf) against them.

The directory is written under a temporary name and renamed into place: an export stopped half-way
leaves no hf_dir. --push_to_hub then uploads the finished directory with huggingface_hub; if that fails
(no network, no token, no rights), one error line says so and the local export stays as written.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import argparse
import json
import os
import secrets
import shutil
from pathlib import Path

import torch
import torch.nn as nn

import evaluate
from checkpoint import RELEASE, json_text, load_model
from errors import MissingFileError, UserError, run_main
from experiments.eval_data import portable_path
from experiments.perplexity import read_documents
from model import is_backpack
from tokenizer import TAG_NAMES, copy_tokenizer, load_tokenizer, tokenizer_files

BACKPACK_GPT2 = 'stanfordnlp/backpack-gpt2'  # the official Backpack, whose layout and config fields exports keep
# the Backpack's modeling code, copied beside the weights of a Backpack export; auto_map's "module.Class" names
# a module of the model's own directory (transformers' dynamic_module_utils)
HF_CODE_DIR = Path(__file__).resolve().parent / 'hf_backpack'
HF_CODE_FILES = ('configuration_backpack.py', 'modeling_backpack.py')
AUTO_MAP = {'AutoConfig': 'configuration_backpack.BackpackGPT2Config',
            'AutoModel': 'modeling_backpack.BackpackGPT2Model',
            'AutoModelForCausalLM': 'modeling_backpack.BackpackGPT2LMHeadModel'}
# our key prefix -> the Hugging Face one: for a Backpack, the inverse of pretrained._convert_hf_state_dict's renames
BACKPACK_KEYS = [('transformer.', 'backpack.gpt2_model.'), ('sense_network.', 'backpack.sense_network.'),
                 ('sense_weight_net.', 'backpack.sense_weight_net.c_attn.')]
GPT2_KEYS = [('transformer.', 'transformer.')]
CHECK_DOCUMENTS = 32  # documents of val_en.bin and of val_fr.bin in release.json's check slice (~20 KB)
HF_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--out_dir', help='training output dir (best.pt or ckpt.pt, evaluation_results.json, '
                                          'meta.json and the tokenizer, val_en.bin and val_fr.bin)')
    source.add_argument('--from_hf', metavar='DIR', help='a backpack-gpt2 checkpoint directory (config.json + '
                                                         'model.safetensors or pytorch_model.bin): give it our '
                                                         'modeling code and safetensors weights, in place or in --hf_dir')
    p.add_argument('--hf_dir', help='the directory to write: config.json, model.safetensors, the modeling code '
                                    '(Backpack), the tokenizer (Hugging Face\'s and ours, with meta.json), '
                                    'evaluation_results.json, README.md, release.json. Required with --out_dir; '
                                    'with --from_hf, a new directory instead of DIR itself')
    p.add_argument('--overwrite', action='store_true', help='replace an existing, non-empty hf_dir')
    p.add_argument('--push_to_hub', metavar='REPO_ID', help='then upload hf_dir to this hub repository (user/name)')
    p.add_argument('--private', action='store_true', help='with --push_to_hub: create the repository private')
    args = p.parse_args(argv)
    if args.out_dir and not args.hf_dir:
        raise UserError('--hf_dir is required with --out_dir (the directory to write)')

    hf_dir = Path(args.hf_dir) if args.hf_dir else None
    if hf_dir is not None:
        if hf_dir.exists() and not hf_dir.is_dir():
            raise UserError(f"--hf_dir {hf_dir} is a file, not a directory")
        if hf_dir.is_dir() and any(hf_dir.iterdir()) and not args.overwrite:
            raise UserError(f"--hf_dir {hf_dir} already holds files: pass --overwrite to replace them, or another "
                            f"--hf_dir")
    if args.from_hf:
        hf_dir = convert_backpack_gpt2(args.from_hf, hf_dir)
        print(f"wrote {hf_dir}: {', '.join(sorted(f.name for f in hf_dir.iterdir()))}")
        if args.push_to_hub:
            print(f"pushed {hf_dir} to {push_to_hub(hf_dir, args.push_to_hub, args.private)}")
        return
    model, ckpt = load_model(args.out_dir)
    tok = load_tokenizer(args.out_dir)
    results_path = os.path.join(args.out_dir, 'evaluation_results.json')
    results = evaluate.read_results(results_path)  # one line when missing: run run_full_evaluation.py first
    stale = evaluate.stale_results(results, args.out_dir)
    if stale:
        raise UserError(f"{results_path} cannot describe the exported model: {stale}; "
                        f"run run_full_evaluation.py --out_dir {args.out_dir} again")
    checks = check_slice(tok, args.out_dir)

    def write(directory):
        write_model(model, tok, directory)
        shutil.copy(results_path, directory / 'evaluation_results.json')
        (directory / 'README.md').write_text(model_card(model, ckpt, tok, results, args.push_to_hub or args.hf_dir),
                                             encoding='utf-8')
        release = release_record(ckpt, results, directory, checks)
        (directory / RELEASE).write_text(json_text(release) + '\n', encoding='utf-8')

    write_directory(hf_dir, write)
    print(f"wrote {hf_dir}: {ckpt['model_type']} from {results['model']['checkpoint']['file']} "
          f"(iter {ckpt['iter_num']}), {', '.join(sorted(f.name for f in hf_dir.iterdir()))}")
    if args.push_to_hub:
        url = push_to_hub(hf_dir, args.push_to_hub, args.private)
        print(f"pushed {hf_dir} to {url}")


# ----------------------------------------------------------------------------------------------------
# weights

def write_model(model, tok, directory):
    """What transformers (and lm_eval's hf model) load: config.json and the weights (with the modeling code of a
    Backpack), the Hugging Face tokenizer, and our own tokenizer with the out_dir's meta.json."""
    if is_backpack(model):
        write_backpack(model, tok, directory)
    else:
        write_gpt2(model, tok, directory)
    write_tokenizer(tok, model.config.block_size, directory)
    copy_own_tokenizer(tok, directory)


def hf_state_dict(model, prefixes):
    """Our weights under Hugging Face names: Conv1D weights transposed to (in, out) (as
    pretrained._convert_hf_state_dict reads them back), a zero bias for each LayerNorm and Linear built
    without one, the tied LM head left out (Hugging Face ties it to the token embedding on load)."""
    sd = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.Linear)) and module is not model.lm_head and module.bias is None:
            sd[f'{name}.bias'] = torch.zeros(module.weight.shape[0], dtype=module.weight.dtype)
    out = {}
    for key, tensor in sd.items():
        if key == 'lm_head.weight':
            continue
        old, new = next((old, new) for old, new in prefixes if key.startswith(old))
        conv1d = key.endswith('.weight') and ('.attn.c_' in key or 'mlp.c_' in key)  # GPT-2's Conv1D modules
        out[new + key[len(old):]] = (tensor.t() if conv1d else tensor).detach().cpu().contiguous()
    return out


def backpack_config(cfg, eos_id):
    """config.json of stanfordnlp/backpack-gpt2: GPT2Config's fields plus num_senses and
    sense_intermediate_scale, under model_type backpack-gpt2, with auto_map at the modeling code beside it."""
    return {'architectures': ['BackpackGPT2LMHeadModel'], 'auto_map': AUTO_MAP, 'model_type': 'backpack-gpt2',
            'vocab_size': cfg.vocab_size, 'n_positions': cfg.block_size, 'n_embd': cfg.n_embd,
            'n_layer': cfg.n_layer, 'n_head': cfg.n_head, 'n_inner': None, 'num_senses': cfg.n_senses,
            'sense_intermediate_scale': cfg.sense_intermediate_scale,
            'scale_attn_by_inverse_layer_idx': cfg.scale_attn_by_inverse_layer_idx, 'scale_attn_weights': True,
            'reorder_and_upcast_attn': False, 'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5,
            'resid_pdrop': cfg.dropout, 'embd_pdrop': cfg.dropout, 'attn_pdrop': cfg.dropout,
            'initializer_range': 0.02, 'bos_token_id': eos_id, 'eos_token_id': eos_id, 'use_cache': True,
            'tie_word_embeddings': True, 'torch_dtype': 'float32'}


def generation_config(eos_id, n_tokens, vocab_size):
    """generation_config.json: EOS (also BOS and padding, as GPT-2's), and the embedding's rows past the token
    ids suppressed, so that generate() picks among tokens only, as generation.py does."""
    config = {'bos_token_id': eos_id, 'eos_token_id': eos_id, 'pad_token_id': eos_id}
    if n_tokens < vocab_size:
        config['suppress_tokens'] = list(range(n_tokens, vocab_size))
    return config


def copy_backpack_code(directory):
    """The modeling code that config.json's auto_map names, beside the weights."""
    for name in HF_CODE_FILES:
        shutil.copy(HF_CODE_DIR / name, directory / name)


def write_backpack(model, tok, directory):
    """config.json + model.safetensors in backpack-gpt2's layout, the modeling code and generation_config.json.
    Each tensor is stored once, as save_pretrained stores tied weights: lm_head.weight and the
    backpack.word_embeddings / backpack.position_embeddings aliases are the same parameters as the GPT-2
    embeddings."""
    from safetensors.torch import save_file
    save_file(hf_state_dict(model, BACKPACK_KEYS), str(directory / 'model.safetensors'), metadata={'format': 'pt'})
    (directory / 'config.json').write_text(json.dumps(backpack_config(model.config, tok.eos_id), indent=2) + '\n')
    generation = generation_config(tok.eos_id, model.n_tokens, model.config.vocab_size)
    (directory / 'generation_config.json').write_text(json.dumps(generation) + '\n')
    copy_backpack_code(directory)


WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def convert_backpack_gpt2(src, hf_dir=None):
    """`--from_hf src`: a backpack-gpt2 checkpoint directory given our modeling code. Its weights must load into
    BackpackLM (pretrained.from_pretrained_backpack: every key known, tied copies equal); model.safetensors
    gets each tensor once, config.json keeps every field and gets our auto_map. In place (hf_dir None; each
    file written under a temporary name and renamed, a pytorch_model.bin left as it is) or into a new hf_dir
    holding src's other files too. Returns the directory written."""
    from safetensors.torch import save_file

    import pretrained
    src = Path(src)
    if not src.is_dir():  # (a hub id: download it first, e.g. `hf download stanfordnlp/backpack-gpt2 --local-dir DIR`)
        raise UserError(f"--from_hf {src}: no such directory (a local backpack-gpt2 checkpoint: config.json and "
                        f"model.safetensors or pytorch_model.bin)")
    try:
        pretrained.from_pretrained_backpack(src)
        weights = pretrained._read_weights(src)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--from_hf {src}: not a backpack-gpt2 checkpoint this repository reads ({reason})") from None
    aliases = pretrained.HF_LAYOUTS['backpack-gpt2'][1]
    weights = {k: t.contiguous() for k, t in weights.items()
               if k not in aliases and not k.endswith(('.attn.bias', '.attn.masked_bias'))}
    config = json.loads((src / 'config.json').read_text(encoding='utf-8'))
    config.update({'architectures': ['BackpackGPT2LMHeadModel'], 'auto_map': AUTO_MAP, 'model_type': 'backpack-gpt2'})
    config.pop('use_cache', None)  # the official config says False: the cache works now (the default, True)

    def write(directory, suffix=''):
        save_file(weights, str(directory / f'model.safetensors{suffix}'), metadata={'format': 'pt'})
        (directory / f'config.json{suffix}').write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')
        for name in HF_CODE_FILES:
            shutil.copy(HF_CODE_DIR / name, directory / f'{name}{suffix}')

    if hf_dir is None:
        suffix = f'.{os.getpid()}.{secrets.token_hex(4)}.tmp'
        try:
            write(src, suffix)
            usual_mode(src.glob(f'*{suffix}'))
            for name in ('model.safetensors', 'config.json', *HF_CODE_FILES):
                os.replace(src / f'{name}{suffix}', src / name)
        finally:
            for path in src.glob(f'*{suffix}'):
                path.unlink()
        return src

    def write_new(directory):
        for path in src.iterdir():
            if path.name not in (*WEIGHT_FILES, 'config.json', *HF_CODE_FILES):
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, directory / path.name)
        write(directory)

    write_directory(hf_dir, write_new)
    return hf_dir


def write_gpt2(model, tok, directory):
    """The Transformer twin as transformers' own GPT2LMHeadModel, saved by save_pretrained (config.json,
    generation_config.json, model.safetensors); every weight is checked to have been loaded."""
    import transformers
    cfg = model.config
    config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, activation_function='gelu_new', layer_norm_epsilon=1e-5,
        scale_attn_by_inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx, resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id,
        pad_token_id=tok.eos_id, tie_word_embeddings=True)
    hf = transformers.GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(hf_state_dict(model, GPT2_KEYS), strict=False)
    if unexpected or set(missing) != {'lm_head.weight'}:  # the LM head is the tied token embedding
        raise AssertionError(f"GPT2LMHeadModel does not match the twin: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    hf.save_pretrained(directory)


# ----------------------------------------------------------------------------------------------------
# tokenizer

def write_tokenizer(tok, block_size, directory):
    """tokenizer.json (our tokenizer with EOS and the tags added as special tokens, at our ids) and the
    config files of a PreTrainedTokenizerFast, written by hand so that transformers 4.x (which the
    Backpack's remote code needs) reads them as well as transformers 5."""
    from tokenizers import AddedToken, Tokenizer
    backend = Tokenizer.from_str(tok.backend.to_str())
    eos = backend.id_to_token(tok.eos_id)  # the EOS piece of the vocabulary ('</s>', '<|endoftext|>', ...)
    tags = [TAG_NAMES[lang] for lang in ('en', 'fr')]
    # a tag swallows the spaces around it, so "<en> text <fr>" encodes the text as tokenizer.encode(text) does
    backend.add_special_tokens([AddedToken(eos, special=True, normalized=False)] +
                               [AddedToken(t, special=True, normalized=False, lstrip=True, rstrip=True) for t in tags])
    wanted = {eos: tok.eos_id, tags[0]: tok.lang_id('en'), tags[1]: tok.lang_id('fr')}
    got = {name: backend.token_to_id(name) for name in wanted}
    if got != wanted:  # the tags are the ids after the backend's vocabulary (tokenizer.py): adding them keeps that
        raise AssertionError(f"the Hugging Face tokenizer would give the special tokens other ids: {got} != {wanted}")
    backend.save(str(directory / 'tokenizer.json'))
    special = {'eos_token': eos, 'additional_special_tokens': tags}
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', **special, 'model_max_length': block_size,
              'clean_up_tokenization_spaces': False}
    (directory / 'tokenizer_config.json').write_text(json.dumps(config, indent=2, ensure_ascii=False) + '\n')
    (directory / 'special_tokens_map.json').write_text(json.dumps(special, indent=2, ensure_ascii=False) + '\n')


def copy_own_tokenizer(tok, directory):
    """The out_dir's meta.json and the tokenizer files it names (tokenizer/tokenizer.json, vocab_map.npy), at
    the same relative paths: what tokenizer.load_tokenizer reads, so that our code loads the export alone.
    meta.json's source folder (the one machine path it holds) is named relative to the repository, as results
    name their inputs: an export is committed and published. The tokenizer's record (evaluate.tokenizer_record,
    which --data_dir is checked against) does not depend on it."""
    clash = set(tokenizer_files(tok.meta)) & set(HF_TOKENIZER_FILES)
    if clash:  # (prepare.py writes tokenizer/tokenizer.json: never the case)
        raise AssertionError(f"our tokenizer files {sorted(clash)} would overwrite the Hugging Face ones")
    copy_tokenizer(tok.data_dir, directory)
    meta = json.loads((directory / 'meta.json').read_text(encoding='utf-8'))
    src_dir = meta.get('source', {}).get('src_dir')
    if src_dir and os.path.isabs(src_dir):
        meta['source']['src_dir'] = portable_path(src_dir)
        (directory / 'meta.json').write_text(json_text(meta) + '\n', encoding='utf-8')


# ----------------------------------------------------------------------------------------------------
# release.json

def check_slice(tok, out_dir, n=CHECK_DOCUMENTS):
    """{'documents': n, 'val_en': {'ids', 'text', 'bytes'}, 'val_fr': ...}: the first n documents
    `<lang> text EOS` of out_dir's val_{lang}.bin (experiments/perplexity.py read_documents), their text (the
    decoding of the ids between tag and EOS: the raw sentence, for a byte-level BPE; prepare.py keeps no val
    text file) and its UTF-8 bytes. The results' per-document NLLs (perplexity val_{lang}.doc_nll) of these
    documents, summed over these bytes, are what a copy of the export must reproduce."""
    out = {'documents': n}
    for lang in ('en', 'fr'):
        path = Path(out_dir) / f'val_{lang}.bin'
        if not path.is_file():
            raise MissingFileError(f"{path} not found: the check slice of release.json is read from it (train.py "
                                   f"copies it from the data dir; copy it from there, e.g. data/<name>/val_{lang}.bin)")
        docs = read_documents(path, tok, lang)[:n]
        texts = [tok.backend.decode(d[1:-1].tolist(), skip_special_tokens=False) for d in docs]
        out[f'val_{lang}'] = {'ids': [d.tolist() for d in docs], 'text': texts,
                              'bytes': [len(t.encode('utf-8')) for t in texts]}
    return out


def release_record(ckpt, results, directory, checks):
    """release.json: what the export in `directory` is and what it must reproduce (module docstring). The
    training settings are left out (they hold machine paths; training_log.json has them)."""
    weights = sorted(p.name for p in directory.iterdir() if p.suffix == '.safetensors')
    return {'written_by': 'export_hf.py', 'run': results['model'].get('run'), 'model_type': ckpt['model_type'],
            'iter_num': ckpt['iter_num'], 'val_loss': ckpt.get('val_loss', ckpt.get('best_val_loss')),
            'model_args': ckpt['model_args'], 'source_checkpoint': results['model']['checkpoint'],
            'weights': {name: evaluate.sha256_file(directory / name) for name in weights},
            'evaluation_results': {'file': 'evaluation_results.json',
                                   'sha256': evaluate.sha256_file(directory / 'evaluation_results.json')},
            'check_slice': checks}


# ----------------------------------------------------------------------------------------------------
# model card

# what each headline metric (evaluate.headline_metrics) is, by the start of its name; README.md of the
# repository ("What every number means") has the full definitions
DEFINITIONS = {
    'ppl': "perplexity exp(Σ NLL / tokens) on the held-out split named, each sentence scored as the document "
           "`<lang> sentence </s>`, every token after the tag predicted once (it counts the probability the "
           "model gives to non-token padding rows, if any, as lost)",
    'bits/byte': "Σ NLL / (UTF-8 bytes of the raw text · ln 2), the same sums: comparable across tokenizers",
    'BLEU': "sacreBLEU corpus BLEU (13a tokenisation, mixed case, exp smoothing, 0-100) of the translations of "
            "the held-out test pairs; prompt `<src> source <tgt>`, output up to the first EOS or tag",
    'chrF': "sacreBLEU corpus chrF2 (character 6-grams, β = 2, 0-100) of the same translations",
    'word F1': "mean unigram F1 between output and reference (13a tokens)",
    'char accuracy': "mean of 1 - Levenshtein(output, reference) / max(length of both), in characters",
    'exact match': "fraction of outputs identical to their reference",
    'Spearman': "Spearman ρ between cosine similarities and gold scores of a word-similarity set (Multi-SimLex "
                "EN/FR, their EN-FR reconstruction, SimLex-999), then the representation: `embedding` (input "
                "embedding), `mean_sense`/`flat`/`sim_min` (Backpack senses)",
    'BLI': "bilingual lexicon induction on the MUSE test dictionaries: precision@1 of the nearest target-language "
           "training word (cosine or CSLS) of each source word",
    'retrieval': "sentence retrieval: precision@1 of finding the translation of a held-out sentence among N by "
                 "the cosine of mean sentence vectors (`hidden`: final hidden states, `o`: the Backpack's output "
                 "vectors, `embedding`: bag of input embeddings)",
}


def backpack_snippet(name, max_new_tokens=40):
    """The model card's five lines: load a Backpack export (model and tokenizer: the tokenizer reads config.json
    too, hence trust_remote_code for both), translate, print the top tokens of each sense of a word
    (tests/test_hf_backpack.py runs them)."""
    return ['from transformers import pipeline',
            f"generate = pipeline('text-generation', model='{name}', trust_remote_code=True)  # the model and its tokenizer",
            f"print(generate('<en> Thank you, Mr President. <fr>', max_new_tokens={max_new_tokens}, do_sample=False, "
            "return_full_text=False)[0]['generated_text'])",
            'model, tok = generate.model, generate.tokenizer',
            "print([tok.convert_ids_to_tokens(sense[:len(tok)].topk(5).indices) "
            "for sense in model.sense_logits(tok('Parliament').input_ids[:1])[0]])  # sense_logits: (words, k, vocab)"]


def model_card(model, ckpt, tok, results, name):
    """README.md: data, tokenizer, size, the evaluation (values and definitions), how to load the model and
    how to prompt a translation."""
    backpack = is_backpack(model)
    cfg, meta, config = model.config, tok.meta, ckpt['config']
    params = model.param_counts()
    source, splits = meta['source'], meta['splits']
    data = {'hf': f"the Hugging Face dataset `{source.get('dataset')}`",
            'local': f"the files of `{os.path.basename(str(source.get('src_dir')))}`",
            'sample': 'the Europarl sample bundled with the training repository'}.get(source['kind'], source['kind'])
    kind = 'Backpack language model (Hewitt et al., 2023)' if backpack else \
        'Transformer (GPT-2 architecture): the contextual network of this repository\'s Backpack used directly'
    how = {'scratch': 'trained from scratch', 'backpack-small': f"finetuned from `{config.get('pretrained_path')}`"}
    eos = tok.backend.id_to_token(tok.eos_id)
    checkpoint = results['model']['checkpoint']
    lines = ['---', 'language:', '- en', '- fr', 'library_name: transformers', 'pipeline_tag: text-generation',
             'tags:', '- translation', f"- {'backpack' if backpack else 'gpt2'}", '---', '', f"# {name}", '',
             f"A French-English {kind}, {how.get(config.get('init_from'), 'trained')} with a nanoGPT-style trainer "
             f"(`train.py`) on {meta['language_pair']} parallel text. Exported by `export_hf.py` from "
             f"`{checkpoint['file']}` (sha256 `{checkpoint['sha256'][:16]}`), iteration {ckpt['iter_num']}, "
             f"validation loss {ckpt.get('val_loss', ckpt.get('best_val_loss')):.4f} nats/token.", '',
             '## Load it', '']
    if backpack:
        lines += [
            f"The weights are in the layout of [`{BACKPACK_GPT2}`](https://huggingface.co/{BACKPACK_GPT2}), and the "
            "modeling code `auto_map` points to is beside them (`modeling_backpack.py`, `configuration_backpack.py`: "
            "torch and transformers only, transformers 4.x or 5): `generate()`, `pipeline('text-generation', "
            "trust_remote_code=True)`, `labels`, `attention_mask` (left padding), the KV cache, and "
            "`output_senses=True` (each position's senses `senses` and their weights α `contextualization`). Load "
            "the model and its tokenizer, translate, and print the top tokens of each sense of a word:", '',
            '```python', *backpack_snippet(name, min(40, cfg.block_size // 2)), '```', '',
            "Without remote code, in the training repository: `from model import from_pretrained_backpack; "
            f"model = from_pretrained_backpack('{name}')`, also a starting point for training: "
            f"`python train.py --init_from backpack-small --pretrained_path {name} ...`.", '']
    else:
        lines += [
            'A stock `GPT2LMHeadModel` (no remote code):', '', '```python',
            'from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline',
            f"model = AutoModelForCausalLM.from_pretrained('{name}').eval()",
            f"tok = AutoTokenizer.from_pretrained('{name}')", '```', '']
    lines += [
        '## Prompting a translation', '',
        f"Training documents are `<en> English sentence <fr> French sentence {eos}` and the reverse (`<en>`, `<fr>` "
        f"and `{eos}` are single special tokens). To translate, give the source after its language tag and end the "
        "prompt with the target's tag; the model continues in the target language up to the end-of-document "
        "token (the evaluation below keeps the output up to the first end-of-document token or tag, decoding "
        "greedily).", '',
        '```python', "prompt = '<en> Thank you, Mr President. <fr>'",
        "ids = tok(prompt, return_tensors='pt').input_ids",
        "stop = [tok.eos_token_id] + tok.convert_tokens_to_ids(['<en>', '<fr>'])"]
    new = min(100, cfg.block_size // 2)  # prompt and output within the learned positions
    lines += [
        f'out = model.generate(ids, max_new_tokens={new}, do_sample=False, eos_token_id=stop)',
        "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        f"# or: pipeline('text-generation', model='{name}'{', trust_remote_code=True' if backpack else ''})"
        f"(prompt, max_new_tokens={new}, do_sample=False)"]
    directions = 'both directions' if meta['directions'] == 'both' else meta['directions']
    lines += [
        '```', '', '## Data', '',
        f"{meta['language_pair']} pairs from {data}: {source['pairs']['train']:,} training pairs "
        f"({splits['train']['tokens']:,} tokens, documents in {directions}), {source['pairs']['valid']:,} "
        f"validation and {source['pairs']['test']:,} test pairs, split before any document was made; "
        f"{source.get('dropped_overlap', 0)} training pairs whose English or French side equals a held-out side "
        "were dropped.", '',
        '## Tokenizer', '',
        f"`{meta['tokenizer']['type']}` ({meta['tokenizer']['name_or_path']}), {tok.vocab_size:,} ids; language "
        f"tags `<en>` = {tok.lang_id('en')}, `<fr>` = {tok.lang_id('fr')}, end of document `{eos}` = {tok.eos_id}. "
        "`AutoTokenizer` gives the training ids and adds no BOS/EOS.", '',
        '## Model', '',
        f"{cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size} tokens"
        + (f", {cfg.n_senses} sense vectors per token" if backpack else '') + f"; {params['total']:,} parameters ("
        + ', '.join(f"{k.replace('_', ' ')} {v:,}" for k, v in params.items() if k != 'total') + ').'
        + (f" The embedding has {cfg.vocab_size:,} rows for {model.n_tokens:,} token ids: the rows past them are "
           "padding (from backpack-gpt2), never a token." if model.n_tokens < cfg.vocab_size else ''), '',
        '## Evaluation', '',
        "From `evaluation_results.json` (beside this card: every number with its settings, data files and "
        f"per-item outputs), run on {results['machine'].get('device', 'cpu')} with the settings "
        f"`{json.dumps({k: v for k, v in results['settings'].items() if k != 'device'})}`.", '',
        '| metric | value |', '|---|---:|']
    headline = evaluate.headline_metrics(results)
    lines += [f"| {metric} | {value:.4g} |" for metric, value in headline.items()]
    for direction, r in results.get('translation', {}).items():
        if isinstance(r, dict) and 'copy_baseline' in r:
            lines.append(f"| baseline: copy the source, BLEU / chrF {direction} | "
                         f"{r['copy_baseline']['bleu']:.4g} / {r['copy_baseline']['chrf']:.4g} |")
    lines += ['', 'What each number is:', '']
    lines += [f"- **{prefix}**: {text}." for prefix, text in DEFINITIONS.items()
              if any(metric.startswith(prefix + ' ') for metric in headline)]
    own = [f"`{meta['tokenizer'][key]}`" for key in ('file', 'vocab_map') if meta['tokenizer'].get(key)]
    lines += ['', '## Files', '',
              '`config.json`, `model.safetensors`, `generation_config.json`'
              + (', `modeling_backpack.py`, `configuration_backpack.py`' if backpack else '')
              + ', `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `evaluation_results.json`, '
              'this `README.md`; for the training repository\'s own code, `meta.json` (the data\'s description) and '
              f"{', '.join(own)} (its tokenizer); `release.json`: the checkpoint this was exported from, the sha256 "
              "of the weights and of `evaluation_results.json`, and a check slice (the first validation documents' "
              "ids and text) whose per-document NLLs the results hold. In the training repository, "
              "`python run_full_evaluation.py --out_dir <this directory> --data_dir <its prepared data> "
              "--results_dir <new directory>` evaluates it again.", '']
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------
# writing and pushing

def write_directory(hf_dir, write):
    """Call write(directory) on a new directory beside hf_dir, then move it onto hf_dir (an old hf_dir is
    removed only once the new one is complete); nothing is left behind if write fails."""
    hf_dir = hf_dir.absolute()
    hf_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = hf_dir.parent / f'.{hf_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp'
    old = hf_dir.parent / f'.{hf_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.old'
    tmp.mkdir()  # the usual mode (0777 less the umask)
    try:
        write(tmp)
        usual_mode(tmp.rglob('*'))
        if hf_dir.exists():
            os.replace(hf_dir, old)
        os.replace(tmp, hf_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not hf_dir.exists():
            os.replace(old, hf_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def usual_mode(paths):
    """safetensors writes its files 0600: give every file the usual mode (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def push_to_hub(hf_dir, repo_id, private=False):
    """Upload the finished hf_dir to the hub (huggingface_hub's create_repo + upload_folder); returns the
    commit URL. Any failure (network, token, rights, HF_HUB_OFFLINE) is one UserError line that keeps the
    local export and says how to upload it later."""
    from huggingface_hub import HfApi
    try:
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(hf_dir),
                                 commit_message=f"export_hf.py: {hf_dir.name}").commit_url
    except Exception as e:  # every hub failure ends the same way: the export is there, push it later
        reason = (str(e).strip().splitlines() or [''])[0]
        raise UserError(f"could not push {hf_dir} to the Hugging Face hub as {repo_id} ({type(e).__name__}: "
                        f"{reason}); the export in {hf_dir} is complete: upload it later with "
                        f"`hf upload {repo_id} {hf_dir}` (after `hf auth login`)") from None


if __name__ == '__main__':
    run_main(main)
