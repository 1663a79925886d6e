"""
Per-language perplexity and bits per byte on the held-out monolingual files, in one deterministic pass.

`{split}_{lang}.bin` (written by data/europarl/prepare.py, copied into a training out_dir) is a stream of
documents `<lang> text EOS`, one per val/test sentence. Each document is scored on its own (no context
crosses a document boundary): every token after the tag, the text tokens and the EOS, is predicted
from the tag and the tokens before it. Over all documents of the file,
    sum_nll = sum of -ln p(token | prefix)         (nats; every predicted token exactly once)
    tokens  = number of predicted tokens           (the file's ids minus one tag per document)
    ppl     = exp(sum_nll / tokens)                 (metrics.ppl: exp of the mean, not a mean of exps)
    bpb     = sum_nll / (bytes * ln 2)              (metrics.bits_per_byte)
with bytes the UTF-8 bytes of the raw sentences (meta.json splits[f'{split}_{lang}']['bytes'], no tags,
no separators), so bits per byte compares models with different tokenizers.

The per-document sums are kept too, `doc_nll` (one per document, in file order, rounded to 9 significant
digits: a float32 forward pass has fewer), and sum_nll is their exact sum (math.fsum of the stored values),
so that ppl, nll and bpb are recomputed exactly from what the results hold (verify_evaluation.py does), and
any subset of documents (a release's check slice, export_hf.py) is scored against the same numbers.

A document of more than block_size + 1 tokens does not fit the model's context. Its first
block_size + 1 tokens are scored as one window; each later token is scored once, in a window of
block_size input tokens that slides forward block_size // 2 tokens at a time, so it still sees at least
block_size - block_size // 2 tokens of context (no token is dropped, and bytes stay those of the whole
text). Such documents are counted as 'truncated' (their later tokens see a truncated context).

    results = evaluate_perplexity(model, tok, 'cpu')    # results['test_fr']['ppl'], ['bpb'], ...
"""
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from errors import warn
from experiments.metrics import bits_per_byte, ppl
from experiments.sentence import length_batches, pad, require_eval


def evaluate_perplexity(model, tokenizer, device, splits=('val', 'test'), languages=('en', 'fr'), batch_size=16):
    """{f'{split}_{lang}': {'file', 'nll' (mean nats per predicted token), 'sum_nll', 'ppl', 'bpb',
    'tokens' (predicted), 'bytes', 'documents', 'truncated' (documents longer than block_size + 1
    tokens, scored with the sliding window), 'doc_nll' (each document's summed NLL, in file order)}} for
    every split and language. The files are
    `{split}_{lang}.bin` in tokenizer.data_dir; a missing file or a .bin that disagrees with
    meta.json raises."""
    require_eval(model)
    if tokenizer.data_dir is None:
        raise ValueError("the tokenizer has no data_dir: load it from a training out_dir or a prepared data dir")
    results = {}
    for split in splits:
        for lang in languages:
            name = f'{split}_{lang}'
            path = Path(tokenizer.data_dir) / f'{name}.bin'
            docs = read_documents(path, tokenizer, lang)
            stats = tokenizer.meta['splits'].get(name)
            if stats is None:
                raise ValueError(f"meta.json in {tokenizer.data_dir} has no splits['{name}'] byte count for {path}")
            if stats['tokens'] != sum(len(d) for d in docs) or stats['sentences'] != len(docs):
                raise ValueError(f"{path} holds {sum(len(d) for d in docs)} tokens in {len(docs)} documents but "
                                 f"meta.json says {stats['tokens']} in {stats['sentences']}: stale files")
            n_long = sum(len(d) > model.config.block_size + 1 for d in docs)
            if n_long:
                warn(f"{path.name}: {n_long} of {len(docs)} documents are longer than the context "
                     f"({model.config.block_size} tokens): their later tokens are scored in a sliding window")
            doc_nll = rounded(document_nll(model, docs, device, batch_size, desc=f'perplexity {name}'))
            sum_nll, tokens = math.fsum(doc_nll), sum(len(d) - 1 for d in docs)
            results[name] = {'file': str(path), 'nll': sum_nll / tokens, 'sum_nll': sum_nll,
                             'ppl': ppl(sum_nll, tokens), 'bpb': bits_per_byte(sum_nll, stats['bytes']),
                             'tokens': tokens, 'bytes': stats['bytes'], 'documents': len(docs),
                             'truncated': n_long, 'doc_nll': doc_nll}
    return results


def rounded(values, digits=9):
    """Floats rounded to `digits` significant digits: what results store of per-document NLLs (a float32
    forward pass gives about 7; the JSON is about half the size of the full repr's)."""
    return [float(f'{v:.{digits}g}') for v in values]


def read_documents(path, tokenizer, lang):
    """The documents `<lang> text EOS` of a monolingual .bin, as int64 arrays (each ending with EOS)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: it is written by data/europarl/prepare.py "
                                f"(and copied into the out_dir by train.py)")
    stream = np.fromfile(path, dtype=tokenizer.meta['dtype']).astype(np.int64)
    ends = np.flatnonzero(stream == tokenizer.eos_id) + 1
    if len(stream) == 0 or len(ends) == 0 or ends[-1] != len(stream):
        raise ValueError(f"{path} does not end with EOS (id {tokenizer.eos_id}): not a document stream")
    docs = np.split(stream, ends[:-1])
    bad = [i for i, d in enumerate(docs) if len(d) < 2 or d[0] != tokenizer.lang_id(lang)]
    if bad:
        raise ValueError(f"{path}: document {bad[0]} does not start with the <{lang}> tag "
                         f"(id {tokenizer.lang_id(lang)}) ({len(bad)} such documents)")
    return docs


LOGITS_PER_PASS = 2 ** 25  # at most this many logits (128 MB in fp32) exist at a time


@torch.no_grad()
def document_nll(model, docs, device, batch_size, desc=None):
    """[sum of -ln p over every predicted token of document i, for each i] (floats, in document order): every
    token after the tag predicted once, a long document's windows (scoring_rows) summed."""
    rows = [(d, x, y) for d, doc in enumerate(docs) for x, y in scoring_rows(doc, model.config.block_size)]
    nll = np.zeros(len(docs))
    for batch in tqdm(length_batches([len(x) for _, x, _ in rows], batch_size), desc=desc, leave=False,
                      disable=None):
        idx = pad([rows[r][1] for r in batch], 0).to(device)
        targets = pad([rows[r][2] for r in batch], -1).to(device)
        # per row, so each document gets its own sum; a few rows at a time when the vocabulary is large
        step = max(1, LOGITS_PER_PASS // (idx.size(1) * model.config.vocab_size))
        for r0 in range(0, len(batch), step):
            logits, _ = model(idx[r0:r0 + step], return_logits=True)  # over all vocab_size rows, as the loss
            per_token = F.cross_entropy(logits.float().flatten(0, 1), targets[r0:r0 + step].flatten(),
                                        ignore_index=-1, reduction='none').view(logits.shape[:2])
            np.add.at(nll, [rows[r][0] for r in batch[r0:r0 + step]], per_token.double().sum(1).cpu().numpy())
    return nll.tolist()


def scoring_rows(doc, block_size):
    """[(inputs, targets)] that predict each of doc[1:] exactly once (targets -1 where not counted):
    the whole document when it fits in block_size inputs, else the sliding windows described above."""
    L = len(doc)
    if L <= block_size + 1:
        return [(doc[:-1], doc[1:])]
    rows = [(doc[:block_size], doc[1:block_size + 1])]
    stride, done = max(1, block_size // 2), block_size  # done: index of the last token scored so far
    while done < L - 1:
        end = min(done + stride, L - 1)  # score doc[done+1 .. end]
        start = end - block_size          # from inputs doc[start:end]
        targets = doc[start + 1:end + 1].copy()
        targets[:done - start] = -1
        rows.append((doc[start:end], targets))
        done = end
    return rows
