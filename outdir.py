"""
A run's directory, as every script reads it: train.py's out_dir (best.pt or ckpt.pt, with the data's meta.json,
tokenizer and held-out files it copies) or an export of export_hf.py (config.json + model.safetensors, meta.json,
tokenizer, release.json). The model and the tokenizer it holds, the record of which checkpoint a result comes
from (so that results of a model retrained since are noticed), and its evaluation_results.json.

Below both evaluate.py and experiments/ (which must not import evaluate.py): evaluate.py re-exports these names,
so `from evaluate import load_model, load_tokenizer` works as the seed's snippets write it.
"""
import hashlib
import json
import os

import numpy as np

import checkpoint
import tokenizer as tokenizer_module
from errors import DataError, MissingFileError, UserError
from experiments import eval_data

def load_model(out_dir, device='cpu'):
    """(model in eval mode, data meta) from out_dir/best.pt, else out_dir/ckpt.pt, else from the export of
    export_hf.py that out_dir is (config.json + model.safetensors: checkpoint.load_export).

    Works for both model types and for backpack-small finetunes. The model also carries
    `model.info`: out_dir, model_type, iteration and validation loss of the loaded weights, and
    'checkpoint', the checkpoint_record of the file they came from (results record it); for an export
    with a release.json, 'run', the name of the run it was exported from (results are named by it)."""
    record = checkpoint_record(out_dir)  # before loading: the record is of the bytes about to be read
    model, ckpt = checkpoint.load_model(out_dir, device)
    model.info = {'out_dir': str(out_dir), 'model_type': ckpt['model_type'], 'iter_num': ckpt['iter_num'],
                  'val_loss': ckpt.get('val_loss', ckpt.get('best_val_loss')), 'config': ckpt['config'],
                  'model_args': ckpt['model_args'], 'checkpoint': record}
    release = checkpoint.read_release(out_dir) if checkpoint.is_export(out_dir) else None
    if release and release.get('run'):
        model.info['run'] = release['run']
    return model, ckpt['meta']


def load_tokenizer(out_dir, data_dir=None):
    """The tokenizer of the data `out_dir` was trained on (train.py copies it there, export_hf.py into an
    export); a data dir works too.

    data_dir: the prepared data dir whose held-out files the evaluations are to read (they read them from
    tokenizer.data_dir): its tokenizer is returned, after checking that it is out_dir's (the same
    tokenizer_record sha256), so that a model whose directory holds no data (an export) is evaluated on the
    data it was trained on, and a data dir of another tokenizer is refused in one line."""
    if not os.path.isfile(os.path.join(out_dir, 'meta.json')):
        raise MissingFileError(f"no meta.json in {str(out_dir)!r}: pass a training out_dir, an export of "
                               f"export_hf.py (re-export an older one: it copies meta.json) or a prepared data dir")
    tok = tokenizer_module.load_tokenizer(out_dir)
    if data_dir is None or os.path.realpath(data_dir) == os.path.realpath(out_dir):
        return tok
    if not os.path.isfile(os.path.join(data_dir, 'meta.json')):
        raise MissingFileError(f"--data_dir {data_dir}: no meta.json there; pass the data dir the model was "
                               f"trained on (written by data/europarl/prepare.py --out_dir DIR)")
    data = tokenizer_module.load_tokenizer(data_dir)
    if tokenizer_record(data)['sha256'] != tokenizer_record(tok)['sha256']:
        raise UserError(f"--data_dir {data_dir} was prepared with another tokenizer than the model of {out_dir} "
                        f"(tokenizer sha256 {tokenizer_record(data)['sha256'][:12]}, the model's "
                        f"{tokenizer_record(tok)['sha256'][:12]}): pass the data dir the model was trained on")
    return data


sha256_file = eval_data.sha256_file  # one definition: results record their inputs' sha256 with it too


def checkpoint_record(out_dir):
    """Which checkpoint a result comes from: {'file' (best.pt or ckpt.pt, the one load_model reads, or an
    export's model.safetensors, then with 'exported_from': the file and sha256 of the checkpoint it was
    exported from, when its release.json says), 'sha256', 'bytes', 'mtime'}. Results files store it, so that
    a model retrained since (even to the same iteration) is noticed by its content: verify_evaluation.py
    refuses such results and compare_models.py does not reuse them."""
    path = checkpoint.checkpoint_path(out_dir)
    stat = os.stat(path)
    record = {'file': os.path.basename(path), 'sha256': sha256_file(path), 'bytes': stat.st_size,
              'mtime': stat.st_mtime}
    release = checkpoint.read_release(out_dir) if checkpoint.is_export(out_dir) else None
    if release:  # an export's weights: the checkpoint they were exported from (its results record that one)
        record['exported_from'] = {k: release['source_checkpoint'][k] for k in ('file', 'sha256')}
    return record


def stale_results(results, out_dir):
    """None when `results` (a run_evaluations dict) were computed from out_dir's current checkpoint;
    else one line saying why they were not."""
    recorded = results['model'].get('checkpoint')
    if not recorded:
        return "it does not record which checkpoint it was computed from (written by an older version)"
    current = checkpoint_record(out_dir)
    if (recorded['file'], recorded['sha256']) == (current['file'], current['sha256']):
        return None
    return (f"it was computed from {recorded['file']} (sha256 {recorded['sha256'][:12]}, iteration "
            f"{results['model']['iter_num']}), and the checkpoint in {out_dir} has changed since "
            f"({current['file']}, sha256 {current['sha256'][:12]})")


def tokenizer_record(tok):
    """{'type', 'name', 'vocab_size', 'sha256'} of a tokenizer; the sha256 covers its meta.json entry, the
    special ids and its files (tokenizer.json, vocab_map.npy), so two BPEs trained on different data
    differ. Per-token numbers (perplexity) compare only between models with the same sha256."""
    info = tok.meta['tokenizer']
    ident = json.dumps([info, tok.meta['vocab_size'], tok.meta['special_ids']], sort_keys=True).encode()
    files = [os.path.join(tok.data_dir, info[key]) for key in ('file', 'vocab_map') if info.get(key)]
    digest = hashlib.sha256(ident)
    for path in files:
        digest.update(bytes.fromhex(sha256_file(path)))
    name = info['name_or_path']  # a hub name, or the local folder prepare.py read it from: named portably
    name = eval_data.portable_path(name) if os.path.isabs(name) else name
    return {'type': info['type'], 'name': name, 'vocab_size': tok.vocab_size,
            'sha256': digest.hexdigest()}


def read_results(path):
    """An evaluation_results.json as a dict. A missing file, invalid JSON or a file without the
    'model' and 'settings' objects of run_evaluations is a UserError naming the file."""
    rerun = f"run run_full_evaluation.py --out_dir {os.path.dirname(path) or '.'}"
    if not os.path.isfile(path):
        raise MissingFileError(f"{path} not found: {rerun} first")
    try:
        with open(path, encoding='utf-8') as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}): {rerun}") from None
    if not (isinstance(results, dict) and all(isinstance(results.get(k), dict) for k in ('model', 'settings'))):
        raise DataError(f"{path} is not an evaluation results file (no 'model' and 'settings' objects): {rerun}")
    return results


def check_vocabulary(model, tok):
    """`tok`, after checking that its ids are the model's token rows (model.n_tokens: the embedding rows
    that are token ids; a finetuned backpack-gpt2 has padding rows past them, which every evaluation
    leaves out by reading only model.input_embeddings(), model.sense_logits() and model.step())."""
    if model.n_tokens != tok.vocab_size:
        raise UserError(f"the model has {model.n_tokens} token ids and the tokenizer {tok.vocab_size}: "
                        f"they are not from the same training run; load both from the same out_dir")
    return tok


def to_json(obj):
    """numpy scalars/arrays and tuples -> plain JSON types (NaN stays NaN: verify_evaluation flags it)."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def headline_metrics(results):
    """The numbers a paper table reports, as {name: value}, from a run_evaluations() dict."""
    out = {}
    for key, r in results.get('perplexity', {}).items():
        out[f'ppl {key}'] = r['ppl']
        out[f'bits/byte {key}'] = r['bpb']
    for direction, r in results.get('translation', {}).items():
        if isinstance(r, dict) and 'bleu' in r:
            out[f'BLEU {direction}'] = r['bleu']
            out[f'chrF {direction}'] = r['chrf']
            out[f'word F1 {direction}'] = r['word_f1']
            out[f'char accuracy {direction}'] = r['char_accuracy']
            out[f'exact match {direction}'] = r['exact_match']
    for dataset, r in results.get('word_similarity', {}).items():
        for rep, value in r.get('spearman', {}).items():
            if not rep.startswith('sense_'):
                out[f'Spearman {dataset} {rep}'] = value
    for direction, r in results.get('bli', {}).items():
        for method in ('cosine', 'csls'):
            for rep, scores in r.get(method, {}).items():
                if not rep.startswith('sense_'):
                    out[f'BLI {direction} {method} {rep} P@1'] = scores['p@1']
                    if scores.get('p@1_non_identical') is not None:  # without the copies found for free
                        out[f'BLI {direction} {method} {rep} P@1 non-identical'] = scores['p@1_non_identical']
    for dataset, r in results.get('sentence_similarity', {}).items():
        for kind, scores in r.items():
            if isinstance(scores, dict) and 'p@1_x2y' in scores:
                out[f'retrieval {dataset} {kind} P@1 en->fr'] = scores['p@1_x2y']
                out[f'retrieval {dataset} {kind} P@1 fr->en'] = scores['p@1_y2x']
    for method, r in results.get('alignment', {}).get('methods', {}).items():  # (lower is better; on trial's choice)
        value = r['scores'][r['chosen_symmetrisation']]['test']['aer']
        if value is not None:
            out[f"alignment AER {method} {r['chosen_symmetrisation']}"] = value
    return out
