"""
The cost of an edit: the edit applied to every occurrence of some words in the val split; the val documents
that contain one (at most max_documents) are scored with and without it (a document without one is unchanged,
exactly), giving the change of their NLL and bits per byte and delta_bpb_val, the change of the whole val
file's bits per byte (exact when every affected document was scored: documents_scored == documents_affected).
check() recomputes what it can of a stored cost.
"""
import math
from pathlib import Path

import numpy as np
import torch

from experiments import metrics, perplexity
from experiments.interventions.edits import edited_loss
from experiments.interventions.words import encode_marked, word_pattern
from experiments.sentence import length_batches, pad


def val_cost(model, tok, device, lang, words, edit, max_documents=200):
    """The change that `edit` on every occurrence of `words` makes to the val split of `lang` (module
    docstring). Documents are re-encoded from their text so that the words' tokens are found by offsets
    ('retokenized' counts those whose ids differ from the .bin's)."""
    pattern = word_pattern(words)
    affected, retokenized = [], 0
    for text, doc in val_documents(tok, lang):
        if pattern.search(text):
            ids, mask = encode_marked(tok, lang, text, pattern)
            retokenized += ids != doc[:-1].tolist()
            affected.append((ids + [tok.eos_id], mask + [False], len(text.encode('utf-8'))))
    scored = affected[:max_documents]
    val_bytes = tok.meta['splits'][f'val_{lang}']['bytes']
    out = {'documents_affected': len(affected), 'documents_scored': len(scored), 'retokenized': retokenized,
           'edited_positions': sum(sum(m) for _, m, _ in scored), 'tokens_scored': 0, 'bytes_scored': 0,
           'val_bytes': val_bytes, 'nll_before': None, 'nll_after': None, 'bpb_before': None, 'bpb_after': None,
           'delta_bpb_val': 0.0}
    if not scored:
        return out
    docs = [(ids, mask) for ids, mask, _ in scored]
    before, n = document_nll_edited(model, docs, None, device)
    after, _ = document_nll_edited(model, docs, edit, device)
    n_bytes = sum(b for _, _, b in scored)
    out.update(tokens_scored=n, bytes_scored=n_bytes, nll_before=before / n, nll_after=after / n,
               bpb_before=metrics.bits_per_byte(before, n_bytes), bpb_after=metrics.bits_per_byte(after, n_bytes),
               delta_bpb_val=(after - before) / (val_bytes * math.log(2)))
    return out


def val_documents(tok, lang):
    """[(text, ids of the document as read)] of out_dir/val_{lang}.bin (perplexity.read_documents)."""
    docs = perplexity.read_documents(Path(tok.data_dir) / f'val_{lang}.bin', tok, lang)
    texts = tok.backend.decode_batch([d[1:-1].tolist() for d in docs], skip_special_tokens=False)
    return list(zip(texts, docs))


@torch.no_grad()
def document_nll_edited(model, docs, edit, device, batch_size=16):
    """Sum of -ln p over every predicted token of the documents [(ids, mask)] with `edit` at the marked
    positions, and the number of predicted tokens (perplexity.scoring_rows' windows)."""
    B = model.config.block_size
    rows = [(x, y, m) for ids, mask in docs
            for (x, y), (m, _) in zip(perplexity.scoring_rows(np.asarray(ids), B),
                                      perplexity.scoring_rows(np.asarray(mask, dtype=np.int64), B))]
    sum_nll, tokens = 0.0, 0
    for batch in length_batches([len(x) for x, _, _ in rows], batch_size):
        idx = pad([rows[r][0] for r in batch], 0).to(device)
        targets = pad([rows[r][1] for r in batch], -1).to(device)
        mask = pad([rows[r][2] for r in batch], 0).bool().to(device)
        n = int((targets != -1).sum())
        sum_nll += edited_loss(model, idx, mask, edit, targets).item() * n
        tokens += n
    return sum_nll, tokens


def check(c, cost, where):
    """A stored val_cost on verify_evaluation's Checks `c`: scored documents among the affected ones, each
    with an edited token, and finite NLL / bits per byte exactly when some were scored; the bits per byte and
    delta_bpb_val recomputed from the mean NLLs and the token and byte counts (bpb = nll tokens / (bytes ln 2))."""
    scored = cost['documents_scored']
    c.sanity(0 <= scored <= cost['documents_affected'] and cost['edited_positions'] >= scored,
             f'{where}: {scored} documents scored of {cost["documents_affected"]}, {cost["edited_positions"]} edited tokens')
    for key in ('nll_before', 'nll_after', 'bpb_before', 'bpb_after'):
        if scored:
            c.in_range(cost[key], 0, 64, f'{where}.{key}')
        else:
            c.check(cost[key] is None, f'{where}.{key}: {cost[key]!r} without a scored document')
    c.in_range(cost['delta_bpb_val'], -64, 64, f'{where}.delta_bpb_val')
    n_bytes, val_bytes = c.stored(cost, 'bytes_scored', where), c.stored(cost, 'val_bytes', where)
    if scored and n_bytes and val_bytes:
        sums = {key: cost[f'nll_{key}'] * cost['tokens_scored'] for key in ('before', 'after')}
        for key, nll in sums.items():
            c.same(cost[f'bpb_{key}'], nll / (n_bytes * math.log(2)), f'{where}.bpb_{key}')
        c.same(cost['delta_bpb_val'], (sums['after'] - sums['before']) / (val_bytes * math.log(2)),
               f'{where}.delta_bpb_val', abs_tol=1e-15)
    else:
        c.check(cost['delta_bpb_val'] == 0, f"{where}.delta_bpb_val = {cost['delta_bpb_val']} without a scored document")
