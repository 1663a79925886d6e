"""Word alignment from exact sense attribution (issue 23), scored by AER on the WPT-03 English-French Hansards.

The Backpack's logit of the next token is a sum over the prefix, with no approximation: in the teacher-forced
document `<src> SOURCE <tgt> TARGET` (ids x_0..x_{T-1}), the logit at position p of the token that follows it is
    logit_p[x_{p+1}] = (E o_p)[x_{p+1}] = sum_{j<=p} contrib[p, j],
    contrib[p, j]    = sum_l alpha_{l,p,j} (E C(x_j)_l)[x_{p+1}]                       (attribution_matrix)
so a target piece x_t is "explained" by each prefix position j through contrib[t-1, j]. Word level
(word_scores): a source word's score is the sum over its pieces j; a target word of several pieces takes the
row of its first piece, of its last, or the sum of its pieces' rows ('agg', chosen on the trial set; the mean
is the sum divided by the piece count: same argmax and same share). Each target word is linked to its
highest-scoring source word unless that word's share of the logit,
    share = score / sum_{j<=p} |contrib[p, j]|       (all prefix positions: tags, source and target so far)
is below a NULL threshold tau (chosen on trial; tau = 0 always links).

Directions: 'en-fr' is the prompt <en> EN <fr> FR (each French word linked to an English word), 'fr-en' the
prompt <fr> FR <en> EN; links are always (English index, French index), 0-based on the gold's whitespace
tokens. The two are symmetrised by intersection, union and grow-diag-final (Koehn et al. 2003, as in Moses).
Gold tokens map to pieces word by word (encode_words): the first word as the start of a text, every other
after a space, so that the pieces concatenate to the encoding of the space-joined sentence (counted where not).

Baselines on the same sentences: the twin Transformer's attention (mean over heads of one layer, the row of the
position predicting the piece or of the one reading it, layer, row, agg and tau chosen on trial:
attention_matrices); IBM Model 1 by EM (ibm1_train, numpy, both directions, trained on Europarl pairs
tokenized like the Hansards plus the unlabelled Hansards sentences themselves, as is usual for unsupervised
aligners; its NULL word decides unaligned words); the diagonal (diagonal_links).

Scores (aer): over a set of sentences, with A the predicted links, S the sure and P the possible gold links
(S within P), summed over sentences as the workshop's scorer does,
    AER = 1 - (|A n S| + |A n P|) / (|A| + |S|),   precision = |A n P| / |A|,   recall = |A n S| / |S|,
each with a percentile bootstrap interval over test sentences (metrics.bootstrap_ci). The results store every
method's directional links per sentence, so verify_evaluation.py (check) recomputes every symmetrisation and
every score from them and the gold files.

    python experiments/alignment.py --out_dir out/backpack --twin_dir out/transformer --output alignment.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import system  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from errors import DataError, MissingFileError  # noqa: E402
from experiments import eval_data, metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOLD_DIR = REPO / 'data' / 'word_alignment'
SPLITS = {'trial': 'hansards_wpt03_trial', 'test': 'hansards_wpt03'}
GOLD_SUFFIXES = ('en', 'fr', 'sure', 'possible')
DIRECTIONS = ('en-fr', 'fr-en')
SYMMETRISATIONS = ('intersection', 'union', 'grow_diag_final')
ALIGNMENTS = DIRECTIONS + SYMMETRISATIONS
THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
AGGREGATIONS = ('first', 'last', 'sum')
EUROPARL_DIR = REPO.parent / 'shared' / 'data' / 'europarl_v7_fr_en'
SAMPLE_DIR = REPO / 'data' / 'europarl' / 'sample'
NULL = '<NULL>'
IBM1_TOKENIZATION = 'hansards-like v2'  # lower-cased; punctuation split; French elisions and du/au/aux/des expanded


# ----------------------------------------------------------------------------------------------------- gold

def gold_files(split, gold_dir=GOLD_DIR) -> dict:
    """{suffix: path} of one split's four converted files (`<stem>.en/.fr/.sure/.possible`)."""
    return {suffix: Path(gold_dir) / f'{SPLITS[split]}.{suffix}' for suffix in GOLD_SUFFIXES}


def parse_links(text: str) -> set:
    """'0-0 1-2' -> {(0, 0), (1, 2)} (English index, French index)."""
    return {(int(i), int(j)) for i, j in (link.split('-') for link in text.split())}


def format_links(links) -> str:
    """{(1, 2), (0, 0)} -> '0-0 1-2' (sorted)."""
    return ' '.join(f'{i}-{j}' for i, j in sorted(links))


def read_gold(split, gold_dir=GOLD_DIR) -> list[dict]:
    """The sentence pairs of a split: [{'en': tokens, 'fr': tokens, 'sure': {(i, j)}, 'possible': {(i, j)}}]; the
    possible links include the sure ones. A missing file is one MissingFileError line; a malformed one a DataError."""
    files = gold_files(split, gold_dir)
    for path in files.values():
        if not path.is_file():
            raise MissingFileError(f"no {path.name} in {gold_dir}: the WPT-03 Hansards gold alignments (bundled in "
                                   f"data/word_alignment/, see its PROVENANCE.md)")
    lines = {s: p.read_text(encoding='utf-8').split('\n') for s, p in files.items()}
    for s in lines:
        if lines[s] and lines[s][-1] == '':
            lines[s].pop()
    if len({len(v) for v in lines.values()}) != 1:
        raise DataError(f"{gold_dir}: the {split} files have different line counts "
                        f"({ {s: len(v) for s, v in lines.items()} })")
    pairs = []
    for n, (en, fr, sure, possible) in enumerate(zip(*(lines[s] for s in GOLD_SUFFIXES))):
        item = {'en': en.split(), 'fr': fr.split(), 'sure': parse_links(sure), 'possible': parse_links(possible)}
        item['possible'] |= item['sure']
        if any(not (0 <= i < len(item['en']) and 0 <= j < len(item['fr'])) for i, j in item['possible']):
            raise DataError(f"{files['possible']}: line {n + 1} has a link outside the sentence")
        pairs.append(item)
    return pairs


# ----------------------------------------------------------------------------------------------------- scores

def link_counts(pred, sure, possible) -> tuple[int, int, int, int]:
    """(|A n S|, |A n P|, |A|, |S|) of one sentence: A the predicted links, S sure, P possible."""
    pred = set(pred)
    return len(pred & set(sure)), len(pred & (set(possible) | set(sure))), len(pred), len(set(sure))


def aer(preds, sures, possibles) -> dict:
    """Corpus AER, precision and recall over sentences, the counts summed over them (the WPT-03 scorer's):
    AER = 1 - (|A n S| + |A n P|) / (|A| + |S|), precision = |A n P| / |A|, recall = |A n S| / |S|
    (None where a denominator is 0: results hold no NaN). Returns {'aer', 'precision', 'recall', 'n_links', 'n_sure',
    'n'}."""
    counts = np.array([link_counts(a, s, p) for a, s, p in zip(preds, sures, possibles)], dtype=np.int64).reshape(-1, 4)
    defined = {k: None if math.isnan(v) else v for k, v in _scores(counts.sum(0)).items()}
    return {**defined, 'n_links': int(counts[:, 2].sum()), 'n_sure': int(counts[:, 3].sum()),
            'n': len(counts)}


def _scores(total) -> dict:
    a_s, a_p, a, s = (float(x) for x in total)
    return {'aer': 1 - (a_s + a_p) / (a + s) if a + s else math.nan,
            'precision': a_p / a if a else math.nan, 'recall': a_s / s if s else math.nan}


def aer_stats(preds, sures, possibles) -> dict:
    """{'aer', 'precision', 'recall'}: bootstrap statistics over sentences (stat(idx) = the corpus score of the
    sentences idx, with repeats; each with a .batch for metrics.bootstrap_ci)."""
    counts = np.array([link_counts(a, s, p) for a, s, p in zip(preds, sures, possibles)], dtype=np.float64).reshape(-1, 4)
    out = {}
    for name in ('aer', 'precision', 'recall'):
        def stat(idx, name=name):
            return _scores(counts[idx].sum(0))[name]

        def batch(rows, name=name):
            t = counts[rows].sum(1)  # (R, 4)
            a_s, a_p, a, s = t.T
            with np.errstate(invalid='ignore', divide='ignore'):
                return {'aer': 1 - (a_s + a_p) / (a + s), 'precision': a_p / a, 'recall': a_s / s}[name]
        stat.batch = batch
        out[name] = stat
    return out


def scores_with_intervals(preds, sures, possibles, n_resamples=1000, seed=0) -> dict:
    """aer() plus '<metric>_ci' for aer, precision and recall: metrics.bootstrap_ci over the sentences (None where
    the metric is undefined, or fewer than 2 sentences)."""
    out = aer(preds, sures, possibles)
    for name, stat in aer_stats(preds, sures, possibles).items():
        out[f'{name}_ci'] = (metrics.bootstrap_ci(stat, len(preds), n_resamples=n_resamples, seed=seed)
                             if len(preds) >= 2 and out[name] is not None else None)
    return out


# ----------------------------------------------------------------------------------------------------- symmetrisation

NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def grow_diag_final(e2f, f2e, n_en, n_fr) -> set:
    """Koehn, Och and Marcu (2003) / Moses' grow-diag-final of two directional alignments (sets of (e, f)):
        A = e2f n f2e; U = e2f u f2e
        GROW-DIAG: repeat until nothing is added: for e = 0..n_en-1, f = 0..n_fr-1 with (e, f) in A, for each of
            the 8 neighbours (e', f') (horizontal, vertical, diagonal): if e' or f' is not aligned in A and
            (e', f') in U, add it to A;
        FINAL(e2f), then FINAL(f2e): for e' = 0..n_en-1, f' = 0..n_fr-1: if e' or f' is not aligned in A and
            (e', f') is in that directional alignment, add it.
    (The scans run in that order over the current A, as in Koehn's pseudo-code.)"""
    e2f, f2e = set(e2f), set(f2e)
    union = e2f | f2e
    A = e2f & f2e
    aligned_e = {e for e, _ in A}
    aligned_f = {f for _, f in A}

    def add(e, f):
        A.add((e, f))
        aligned_e.add(e)
        aligned_f.add(f)

    added = True
    while added:
        added = False
        for e in range(n_en):
            for f in range(n_fr):
                if (e, f) not in A:
                    continue
                for de, df in NEIGHBOURS:
                    e2, f2 = e + de, f + df
                    if (e2 not in aligned_e or f2 not in aligned_f) and (e2, f2) in union and (e2, f2) not in A:
                        add(e2, f2)
                        added = True
    for direction in (e2f, f2e):
        for e in range(n_en):
            for f in range(n_fr):
                if (e not in aligned_e or f not in aligned_f) and (e, f) in direction:
                    add(e, f)
    return A


def symmetrise(e2f, f2e, method, n_en, n_fr) -> set:
    """Combine the 'en-fr' links e2f and the 'fr-en' links f2e (both as (English, French) index pairs):
    'intersection' e2f n f2e, 'union' e2f u f2e, 'grow_diag_final' (grow_diag_final)."""
    if method == 'intersection':
        return set(e2f) & set(f2e)
    if method == 'union':
        return set(e2f) | set(f2e)
    if method == 'grow_diag_final':
        return grow_diag_final(e2f, f2e, n_en, n_fr)
    raise ValueError(f"unknown symmetrisation {method!r}; expected one of {SYMMETRISATIONS}")


def all_alignments(e2f_links, f2e_links, gold) -> dict:
    """{alignment: [set of links per sentence]} for both directions and every symmetrisation."""
    out = {'en-fr': list(e2f_links), 'fr-en': list(f2e_links)}
    for method in SYMMETRISATIONS:
        out[method] = [symmetrise(a, b, method, len(g['en']), len(g['fr'])) for a, b, g in zip(e2f_links, f2e_links, gold)]
    return out


# ----------------------------------------------------------------------------------------------------- pieces

def encode_words(tok, words) -> list[list[int]]:
    """The pieces of each whitespace token: the first as the start of a text (tok.encode), every other as a word
    after a space (tok.encode_word: ' ' + word for byte-level BPE, the word itself for XLM-R's Metaspace)."""
    return [tok.encode(w) if k == 0 else tok.encode_word(w) for k, w in enumerate(words)]


def build_prompt(tok, src_words, tgt_words, src, tgt) -> dict:
    """The teacher-forced document <src> SOURCE <tgt> TARGET as ids, from the word-by-word pieces: {'ids',
    'src_spans' (positions of each source word's pieces), 'tgt_spans' (of each target word's), 'retokenised'
    (whether the concatenated pieces differ from encoding the space-joined texts)}."""
    src_pieces, tgt_pieces = encode_words(tok, src_words), encode_words(tok, tgt_words)
    ids, src_spans, tgt_spans = [tok.lang_id(src)], [], []
    for pieces in src_pieces:
        src_spans.append(list(range(len(ids), len(ids) + len(pieces))))
        ids += pieces
    ids.append(tok.lang_id(tgt))
    for pieces in tgt_pieces:
        tgt_spans.append(list(range(len(ids), len(ids) + len(pieces))))
        ids += pieces
    flat = lambda pieces: [i for p in pieces for i in p]  # noqa: E731
    retokenised = (flat(src_pieces) != tok.encode(' '.join(src_words))
                   or flat(tgt_pieces) != tok.encode(' '.join(tgt_words)))
    return {'ids': ids, 'src_spans': src_spans, 'tgt_spans': tgt_spans, 'retokenised': bool(retokenised)}


# ----------------------------------------------------------------------------------------------------- model scores

@torch.no_grad()
def attribution_matrix(model, ids, device='cpu', return_error=False):
    """The Backpack's exact decomposition of each next-token logit over the prefix, in float64:
        contrib[p, j] = sum_l alpha[l, p, j] * (E C(x_j)_l)[x_{p+1}]    (p = 0..T-2; 0 for j > p)
    with alpha = model.contextualization (softmax over j <= p), C = model.sense_vectors, E the tied embedding
    (lm_head.weight), so that sum_j contrib[p, j] = logits_p[x_{p+1}] (logits_p = E o_p,
    o_p = sum_l sum_j alpha_lpj C(x_j)_l). Returns contrib (T-1, T) numpy; with return_error also
    max_p |sum_j contrib[p, j] - model(x).logits[p, x_{p+1}]| (the model's own float32 forward)."""
    x = torch.tensor([ids], dtype=torch.long, device=device)
    alpha = model.contextualization(x)[0].double()  # (k, T, T)
    C = model.sense_vectors(x[0]).double()  # (T, k, d)
    Ey = model.lm_head.weight[x[0, 1:]].double()  # (T-1, d): E[x_{p+1}]
    pushes = torch.einsum('jld,pd->pjl', C, Ey)  # (E C(x_j)_l)[x_{p+1}]  (T-1, T, k)
    contrib = torch.einsum('lpj,pjl->pj', alpha[:, :-1, :], pushes)
    if not return_error:
        return contrib.cpu().numpy()
    logits, _ = model(x, return_logits=True)
    target_logits = logits[0, :-1].gather(1, x[0, 1:, None])[:, 0].double()
    return contrib.cpu().numpy(), float((contrib.sum(1) - target_logits).abs().max())


@torch.no_grad()
def attention_matrices(model, ids, device='cpu') -> np.ndarray:
    """A[layer, i, j] = mean over heads h of softmax_{j<=i}(scale * q_hi . k_hj): the attention probabilities of
    each layer (those F.scaled_dot_product_attention applies), recomputed from the layer's input ln_1(x), caught by
    a forward pre-hook on its attention module, and its own c_attn projection; model.py's numerics are untouched.
    Returns (n_layer, T, T) numpy."""
    x = torch.tensor([ids], dtype=torch.long, device=device)
    caught = []
    hooks = [block.attn.register_forward_pre_hook(lambda module, args: caught.append((module, args[0])))
             for block in model.transformer.h]
    try:
        model.transformer(x)
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for module, h in caught:
        B, T, Cd = h.shape
        q, key, _ = module.c_attn(h).split(module.n_embd, dim=2)
        q, key = (t.view(B, T, module.n_head, Cd // module.n_head).transpose(1, 2).double() for t in (q, key))
        scores = (q @ key.transpose(-1, -2)) * module.scale
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        out.append(torch.softmax(scores.masked_fill(future, float('-inf')), dim=-1)[0].mean(0))
    return torch.stack(out).cpu().numpy()


def word_scores(M, src_spans, tgt_spans, agg='first', row_shift=1):
    """Word-level scores from a piece-level matrix M (rows: positions that score, columns: prefix positions).
    The target piece at position t is scored by row r(t) = t - row_shift (1: the position predicting it, 0: the
    one reading it). Per target piece, R[t, b] = sum_{j in src_spans[b]} M[r(t), j] and Z[t] = sum_{j<=r(t)}
    |M[r(t), j]|; per target word a with pieces t_1..t_m: agg 'first' W[a] = R[t_1], 'last' R[t_m], 'sum'
    sum_i R[t_i], with Z taken the same way, and share[a, b] = W[a, b] / Z[a]. Returns (W, share),
    (n_tgt_words, n_src_words) each."""
    M = np.asarray(M, dtype=np.float64)
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown agg {agg!r}; expected one of {AGGREGATIONS}")
    pieces = np.array([t for span in tgt_spans for t in span], dtype=np.int64)
    rows = pieces - row_shift
    Mr = M[rows]  # (pieces, columns)
    onehot = np.zeros((M.shape[1], len(src_spans)))
    for b, span in enumerate(src_spans):
        onehot[span, b] = 1.0
    causal = np.arange(M.shape[1])[None, :] <= rows[:, None]
    R, Zp = Mr @ onehot, np.where(causal, np.abs(Mr), 0.0).sum(1)
    sizes = np.array([len(span) for span in tgt_spans], dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    if agg == 'sum':
        W, Z = np.add.reduceat(R, starts, axis=0), np.add.reduceat(Zp, starts)
    else:
        pick = starts if agg == 'first' else starts + sizes - 1
        W, Z = R[pick], Zp[pick]
    with np.errstate(invalid='ignore', divide='ignore'):
        share = np.where(Z[:, None] > 0, W / Z[:, None], 0.0)
    return W, share


def align_words(W, share, tau) -> list[tuple[int, int]]:
    """[(a, b)]: each target word a linked to b = argmax_b W[a, b] (the first on ties) when share[a, b] >= tau;
    a word whose share is below tau is left unaligned (NULL)."""
    if W.shape[1] == 0:
        return []
    best = W.argmax(1)
    return [(a, int(b)) for a, b in enumerate(best) if share[a, b] >= tau]


def oriented(links, direction) -> set:
    """Target/source word links (a, b) of a direction as (English, French): 'en-fr' targets are French, so
    (a, b) -> (b, a); 'fr-en' targets are English: unchanged."""
    return {(b, a) for a, b in links} if direction == 'en-fr' else set(links)


def diagonal_links(n_src, n_tgt) -> list[tuple[int, int]]:
    """The diagonal baseline: target word a linked to source word b = min(n_src - 1, floor((a + 1/2) n_src / n_tgt))."""
    if n_src == 0:
        return []
    return [(a, min(n_src - 1, int((a + 0.5) * n_src / n_tgt))) for a in range(n_tgt)]


# ----------------------------------------------------------------------------------------------------- IBM Model 1

ELISION = re.compile(r"\b(l|d|j|qu|n|s|c|m|t|jusqu|lorsqu|puisqu|quoiqu)['’]", re.IGNORECASE)
FR_CONTRACTIONS = {'du': 'de le', 'au': 'à le', 'aux': 'à les', 'des': 'de les'}
TOKEN = re.compile(r"'s\b|\w+'?|[^\w\s]")


def hansards_tokens(text, lang) -> list[str]:
    """Europarl text tokenized like the WPT-03 Hansards, lower-cased: French elisions expanded (l' -> le, d' ->
    de, qu' -> que, ...), du/au/aux/des -> de le/à le/à les/de les; English 's split off; punctuation split."""
    text = text.lower().replace('’', "'")
    if lang == 'fr':
        text = ELISION.sub(lambda m: m.group(1) + 'e ', text)
        return [t for w in TOKEN.findall(text) for t in FR_CONTRACTIONS.get(w, w).split()]
    return TOKEN.findall(re.sub(r"'s\b", " 's", text))


def _cooccurrences(src, tgt, n_tgt):
    """For pairs of id arrays (source ids >= 1, 0 = NULL prepended here): keys e * n_tgt + f of every (source token,
    target token) of each pair, grouped by target token (each group: NULL + the pair's source tokens), and the
    group sizes."""
    le = np.array([len(s) + 1 for s in src], dtype=np.int64)
    lf = np.array([len(t) for t in tgt], dtype=np.int64)
    e_all = np.concatenate([np.concatenate([[0], s]) for s in src]).astype(np.int64)
    f_all = np.concatenate([np.asarray(t, dtype=np.int64) for t in tgt]) if lf.sum() else np.zeros(0, np.int64)
    e_start = np.cumsum(le) - le
    pair_of_f = np.repeat(np.arange(len(src)), lf)
    size = le[pair_of_f]
    group_start = np.cumsum(size) - size
    within = np.arange(size.sum()) - np.repeat(group_start, size)
    e_idx = np.repeat(e_start[pair_of_f], size) + within
    return e_all[e_idx] * n_tgt + np.repeat(f_all, size), size


def ibm1_train(src, tgt, n_src, n_tgt, iterations=5, chunk=50000, progress=None):
    """IBM Model 1 (Brown et al. 1993) by EM: t(f | e) for target ids f in [0, n_tgt) given source ids e in [1,
    n_src) or e = 0, the NULL word prepended to every source sentence. From t uniform, each iteration:
        E: c(f, e) = sum over pairs and target tokens f_j of  t(f_j | e) / sum_{i in NULL, e_1..e_I} t(f_j | e_i)
           (summed over the occurrences of e in the pair);
        M: t(f | e) = c(f, e) / sum_f' c(f', e).
    Only co-occurring (e, f) have t > 0. src, tgt: lists of int arrays (one pair each). Returns (keys, t): keys
    (U,) int64 sorted, e * n_tgt + f of each co-occurring pair, t (U,) float64."""
    pieces = [_cooccurrences(src[s:s + chunk], tgt[s:s + chunk], n_tgt) for s in range(0, len(src), chunk)]
    all_keys = np.concatenate([k for k, _ in pieces]) if pieces else np.zeros(0, np.int64)
    bounds = np.cumsum([0] + [len(k) for k, _ in pieces])
    sizes = [size for _, size in pieces]
    del pieces
    # keys and each co-occurrence's index among them, by one sort (np.unique(return_inverse) is slower here)
    order = np.argsort(all_keys)
    sorted_keys = all_keys[order]
    del all_keys
    new = np.ones(len(sorted_keys), dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    keys = sorted_keys[new]
    del sorted_keys
    inverse = np.empty(len(order), dtype=np.int32 if len(keys) < 2 ** 31 else np.int64)
    inverse[order] = np.cumsum(new) - 1
    del order, new
    cached = [(inverse[bounds[i]:bounds[i + 1]], size) for i, size in enumerate(sizes)]
    e_of_key = keys // n_tgt
    t = np.ones(len(keys))
    for it in range(iterations):
        counts = np.zeros(len(keys))
        for idx, size in cached:
            tv = t[idx]
            starts_ = np.cumsum(size) - size
            denom = np.add.reduceat(tv, starts_) if len(tv) else tv
            counts += np.bincount(idx, weights=tv / np.repeat(denom, size), minlength=len(keys))
        total = np.bincount(e_of_key, weights=counts, minlength=n_src)
        t = counts / total[e_of_key]
        if progress:
            progress(it)
    return keys, t


def read_training_pairs(files, max_pairs, max_len=80):
    """(English token lists, French token lists, n_read, n_dropped) of the first max_pairs line pairs of the
    (en, fr) gzip or text file pairs, hansards_tokens, pairs with an empty side or more than max_len tokens on a
    side dropped (counted)."""
    en_out, fr_out, read, dropped = [], [], 0, 0
    opener = lambda p: gzip.open(p, 'rt', encoding='utf-8') if str(p).endswith('.gz') else open(p, encoding='utf-8')  # noqa: E731
    for en_path, fr_path in files:
        with opener(en_path) as fe, opener(fr_path) as ff:
            for en_line, fr_line in zip(fe, ff):
                if max_pairs is not None and read >= max_pairs:
                    return en_out, fr_out, read, dropped
                read += 1
                e, f = hansards_tokens(en_line, 'en'), hansards_tokens(fr_line, 'fr')
                if not e or not f or len(e) > max_len or len(f) > max_len:
                    dropped += 1
                    continue
                en_out.append(e)
                fr_out.append(f)
    return en_out, fr_out, read, dropped


def default_training_files():
    """The Europarl training pairs of ../shared (train.00-04.{en,fr}.gz), else the bundled sample."""
    shared = [(EUROPARL_DIR / f'train.0{i}.en.gz', EUROPARL_DIR / f'train.0{i}.fr.gz') for i in range(5)]
    if all(p.is_file() for pair in shared for p in pair):
        return shared
    return [(SAMPLE_DIR / 'train.en.gz', SAMPLE_DIR / 'train.fr.gz')]


class IBM1Table:
    """Trained IBM 1 translation tables of both directions, kept for the words of the gold sentences:
    t['en-fr'][(e, f)] = t(f | e) (French words given English ones, e may be NULL), t['fr-en'][(f, e)] = t(e | f)."""

    def __init__(self, tables, meta):
        self.tables, self.meta = tables, meta

    def align(self, src_words, tgt_words, direction) -> list[tuple[int, int]]:
        """[(a, b)]: target word a linked to argmax_b t(tgt_a | src_b) over NULL and the source words (lower-cased;
        NULL first, so it wins ties), none when NULL wins (a pair never seen has t = 0)."""
        table = self.tables[direction]
        src = [NULL] + [w.lower() for w in src_words]
        links = []
        for a, w in enumerate(tgt_words):
            w = w.lower()
            probs = [table.get((s, w), 0.0) for s in src]
            b = int(np.argmax(probs))
            if b > 0:
                links.append((a, b - 1))
        return links

    def save(self, path):
        payload = {'meta': self.meta, 'tables': {d: [[s, t, p] for (s, t), p in table.items()]
                                                 for d, table in self.tables.items()}}
        with gzip.open(path, 'wt', encoding='utf-8') as f:
            json.dump(payload, f, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        with gzip.open(path, 'rt', encoding='utf-8') as f:
            payload = json.load(f)
        return cls({d: {(s, t): p for s, t, p in rows} for d, rows in payload['tables'].items()}, payload['meta'])


def train_ibm1(files=None, max_pairs=100000, iterations=5, max_len=80, gold_dir=GOLD_DIR, log=print) -> IBM1Table:
    """IBM 1 in both directions on the first max_pairs training pairs (hansards_tokens) plus every gold sentence
    pair (trial and test, without their links: unsupervised), kept for the gold sentences' words."""
    files = files or default_training_files()
    t0 = time.time()
    en, fr, read, dropped = read_training_pairs(files, max_pairs, max_len)
    gold = [g for split in SPLITS for g in read_gold(split, gold_dir)]
    en += [[w.lower() for w in g['en']] for g in gold]
    fr += [[w.lower() for w in g['fr']] for g in gold]
    vocab = {}
    ids = {}
    for lang, sents in (('en', en), ('fr', fr)):
        v = {NULL: 0}
        ids[lang] = [np.array([v.setdefault(w, len(v)) for w in s], dtype=np.int64) for s in sents]
        vocab[lang] = v
    log(f"IBM 1: {len(en):,} pairs ({read:,} read, {dropped:,} dropped, + {len(gold)} gold pairs), "
        f"vocab {len(vocab['en']):,} en / {len(vocab['fr']):,} fr, read in {time.time() - t0:.0f} s")
    keep = {lang: {vocab[lang][w.lower()] for g in gold for w in g[lang]} | {0} for lang in ('en', 'fr')}
    tables = {}
    for direction, (s, t) in {'en-fr': ('en', 'fr'), 'fr-en': ('fr', 'en')}.items():
        t1 = time.time()
        keys, prob = ibm1_train(ids[s], ids[t], len(vocab[s]), len(vocab[t]), iterations)
        n_t = len(vocab[t])
        src_id, tgt_id = keys // n_t, keys % n_t
        mask = np.isin(src_id, list(keep[s])) & np.isin(tgt_id, list(keep[t]))
        words = {lang: list(vocab[lang]) for lang in vocab}
        tables[direction] = {(words[s][a], words[t][b]): float(p) for a, b, p in
                             zip(src_id[mask], tgt_id[mask], prob[mask])}
        log(f"IBM 1 {direction}: {len(keys):,} co-occurring pairs, {iterations} EM iterations in {time.time() - t1:.0f} s")
    meta = {'files': [[eval_data.portable_path(a), eval_data.portable_path(b)] for a, b in files],
            'max_pairs': max_pairs, 'pairs_read': read, 'pairs_dropped': dropped, 'pairs_trained': len(en),
            'gold_pairs_added': len(gold), 'iterations': iterations, 'max_len': max_len,
            'tokenization': IBM1_TOKENIZATION, 'seconds': round(time.time() - t0, 1)}
    return IBM1Table(tables, meta)


def cached_ibm1(path, files=None, max_pairs=100000, iterations=5, max_len=80, gold_dir=GOLD_DIR, log=print):
    """The IBM 1 table cached at `path` when it was trained with these settings, else trained and saved there."""
    files = files or default_training_files()
    wanted = {'files': [[eval_data.portable_path(a), eval_data.portable_path(b)] for a, b in files],
              'max_pairs': max_pairs, 'iterations': iterations, 'max_len': max_len, 'tokenization': IBM1_TOKENIZATION}
    path = Path(path)
    if path.is_file():
        table = IBM1Table.load(path)
        if all(table.meta.get(k) == v for k, v in wanted.items()):
            log(f"IBM 1: cached table {path}")
            return table
    table = train_ibm1(files, max_pairs, iterations, max_len, gold_dir, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table


# ----------------------------------------------------------------------------------------------------- evaluation

def _prompts(tok, gold, direction):
    src, tgt = direction.split('-')
    return [build_prompt(tok, g[src], g[tgt], src, tgt) for g in gold]


def _model_candidates(model, tok, device, gold, kind, block_size):
    """{direction: [per sentence {option key: (W, share)} or None where the document exceeds block_size]}, and
    (max exactness error, retokenised count)."""
    out, max_error, retokenised = {}, 0.0, 0
    for direction in DIRECTIONS:
        rows = []
        for prompt in _prompts(tok, gold, direction):
            retokenised += prompt['retokenised']
            if len(prompt['ids']) > block_size:
                rows.append(None)
                continue
            spans = prompt['src_spans'], prompt['tgt_spans']
            options = {}
            if kind == 'attribution':
                M, err = attribution_matrix(model, prompt['ids'], device, return_error=True)
                max_error = max(max_error, err)
                for agg in AGGREGATIONS:
                    options[(('agg', agg),)] = word_scores(M, *spans, agg=agg, row_shift=1)
            else:
                A = attention_matrices(model, prompt['ids'], device)
                for layer in range(len(A)):
                    for row, shift in (('predicting', 1), ('reading', 0)):
                        for agg in AGGREGATIONS:
                            options[(('layer', layer), ('row', row), ('agg', agg))] = word_scores(
                                A[layer], *spans, agg=agg, row_shift=shift)
            rows.append(options)
        out[direction] = rows
    return out, max_error, retokenised


def _select(candidates, gold, direction, thresholds):
    """The option and tau with the lowest AER of `direction` on these (trial) sentences (the first on ties), and the
    grid [{option..., 'tau', 'aer'}]."""
    grid, best = [], None
    for key in candidates[0]:
        for tau in thresholds:
            links = [oriented(align_words(*c[key], tau), direction) for c in candidates]
            score = aer(links, [g['sure'] for g in gold], [g['possible'] for g in gold])['aer']
            grid.append({**dict(key), 'tau': tau, 'aer': score})
            if best is None or _nan_last(score) < _nan_last(best[0]):
                best = (score, key, tau)
    return {**dict(best[1]), 'tau': best[2]}, best[1], grid


def _method_result(links, gold, sentences, n_resamples, seed, description, options=None, grid=None):
    """Scores of every alignment on each split from the directional links {direction: {split: [set]}}."""
    result = {'description': description, 'scores': {}, 'links': {}}
    if options is not None:
        result['options'] = options
        result['trial_grid'] = grid
    for split in SPLITS:
        g = [gold[split][i] for i in sentences[split]]
        alignments = all_alignments(links['en-fr'][split], links['fr-en'][split], g)
        for name, preds in alignments.items():
            sures, possibles = [x['sure'] for x in g], [x['possible'] for x in g]
            result['scores'].setdefault(name, {})[split] = (
                scores_with_intervals(preds, sures, possibles, n_resamples, seed) if split == 'test'
                else aer(preds, sures, possibles))
        for direction in DIRECTIONS:
            result['links'].setdefault(direction, {})[split] = [format_links(x) for x in links[direction][split]]
    result['chosen_symmetrisation'] = min(SYMMETRISATIONS, key=lambda m: _nan_last(result['scores'][m]['trial']['aer']))
    return result


def _nan_last(x):
    return math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else x


def evaluate_alignment(model, tok, device, twin=None, twin_tok=None, ibm1=None, gold_dir=GOLD_DIR,
                       thresholds=THRESHOLDS, n_resamples=1000, seed=0, max_sentences=None, verbose=False):
    """AER, precision and recall on the WPT-03 Hansards test set of: `model`'s own alignment (a Backpack: exact
    sense attribution, 'attribution'; a Transformer: its attention, 'attention'), the twin's attention
    ('twin_attention', when `twin` is given, with its tokenizer twin_tok, default tok), IBM 1 ('ibm1', when `ibm1`,
    an IBM1Table, is given) and the diagonal ('diagonal'), each in both directions and symmetrised (see the module
    docstring). Options (agg; layer and row for attention; the NULL threshold tau) are chosen per direction on the
    trial set, as is each method's 'chosen_symmetrisation'. Every method is scored on the same sentences: those
    whose document fits in the context of every model given ('sentences', indices per split; max_sentences: the
    first ones of each split only, for tests). Returns a JSON-able dict: 'methods' {name: {'description',
    'options', 'trial_grid', 'scores' {alignment: {'test': aer() + intervals, 'trial': aer()}},
    'chosen_symmetrisation', 'links' {direction: {split: ['i-j ...' per sentence]}}}}, 'sentences', 'n_skipped',
    'files' (the gold files), 'exactness' (Backpack: 'max_abs_error', the largest |sum of contributions - logit|
    over every position of every document, against the model's own float32 forward; 'max_abs_error_float64', the
    same in a float64 copy of the model on the trial documents), 'retokenised', 'settings'."""
    from model import is_backpack  # (the module stays importable without torch models for its pure functions)
    from experiments.sentence import require_eval
    require_eval(model)
    gold = {split: read_gold(split, gold_dir)[:max_sentences] for split in SPLITS}
    models = [('attribution' if is_backpack(model) else 'attention', model, tok)]
    if twin is not None:
        require_eval(twin)
        models.append(('twin_attention', twin, twin_tok or tok))
    cands, exactness, retokenised = {}, None, {}
    for name, m, t in models:
        t0 = time.time()
        kind = 'attribution' if name == 'attribution' else 'attention'
        cands[name] = {}
        for split in SPLITS:
            cands[name][split], err, retok = _model_candidates(m, t, device, gold[split], kind, m.config.block_size)
            retokenised[name] = retokenised.get(name, 0) + retok
            if kind == 'attribution':
                exactness = max(exactness or 0.0, err)
        if verbose:
            print(f"alignment: {name} scored in {time.time() - t0:.1f} s", flush=True)
    if exactness is not None:  # the same decomposition in float64 (a double copy of the model), trial documents
        import copy
        model64 = copy.deepcopy(model).double()
        model64.clear_sense_table()
        errors64 = [attribution_matrix(model64, p['ids'], device, return_error=True)[1]
                    for d in DIRECTIONS for p in _prompts(tok, gold['trial'], d) if len(p['ids']) <= model.config.block_size]
        exactness = {'max_abs_error': exactness, 'max_abs_error_float64': max(errors64), 'n_float64_documents': len(errors64)}
        del model64
    sentences = {split: [i for i in range(len(gold[split]))
                         if all(cands[n][split][d][i] is not None for n in cands for d in DIRECTIONS)]
                 for split in SPLITS}
    for split in SPLITS:
        if not sentences[split]:
            raise DataError(f"no {split} sentence pair fits in the context of the model ({model.config.block_size} "
                            f"tokens): word alignment needs a longer block_size")
    methods = {}
    for name in cands:
        options, links, grid = {}, {}, {}
        for direction in DIRECTIONS:
            trial = [cands[name]['trial'][direction][i] for i in sentences['trial']]
            chosen, key, grid[direction] = _select(trial, [gold['trial'][i] for i in sentences['trial']],
                                                   direction, thresholds)
            options[direction] = chosen
            links[direction] = {split: [oriented(align_words(*cands[name][split][direction][i][key], chosen['tau']),
                                                 direction) for i in sentences[split]] for split in SPLITS}
        description = ('exact sense attribution: contrib(j -> target piece) = sum_l alpha_l,t-1,j (E C(x_j)_l)[x_t]'
                       if name == 'attribution' else 'attention probabilities, mean over heads of one layer')
        methods[name] = _method_result(links, gold, sentences, n_resamples, seed, description, options, grid)
    fixed = {}
    if ibm1 is not None:
        fixed['ibm1'] = (lambda g, d: ibm1.align(g[d[:2]], g[d[3:]], d),
                         f"IBM Model 1, EM, both directions, NULL word ({ibm1.meta['pairs_trained']:,} pairs, "
                         f"{ibm1.meta['iterations']} iterations)")
    fixed['diagonal'] = (lambda g, d: diagonal_links(len(g[d[:2]]), len(g[d[3:]])),
                         'target word a -> source word floor((a + 1/2) n_src / n_tgt)')
    for name, (fn, description) in fixed.items():
        links = {d: {split: [oriented(fn(gold[split][i], d), d) for i in sentences[split]] for split in SPLITS}
                 for d in DIRECTIONS}
        methods[name] = _method_result(links, gold, sentences, n_resamples, seed, description)
        if name == 'ibm1':
            methods[name]['training'] = ibm1.meta
    files = {f'{split}.{suffix}': eval_data.portable_path(path) for split in SPLITS for suffix, path in gold_files(split, gold_dir).items()}
    return {'methods': methods, 'sentences': sentences,
            'n_skipped': {split: len(gold[split]) - len(sentences[split]) for split in SPLITS},
            'n_gold': {split: len(gold[split]) for split in SPLITS},
            'files': files, 'exactness': exactness,
            'retokenised': retokenised,
            'settings': {'thresholds': list(thresholds), 'aggregations': list(AGGREGATIONS), 'n_resamples': n_resamples,
                         'seed': seed, 'max_sentences': max_sentences,
                         'block_size': {name: m.config.block_size for name, m, _ in models}}}


# ----------------------------------------------------------------------------------------------------- verification

def check(c, section, out_dir=None, where='alignment'):
    """verify_evaluation's check of an alignment section on its Checks `c`: the gold read again (from the recorded
    files; check_inputs compares their sha256), every method's symmetrisations recomputed from its stored
    directional links, every AER, precision and recall and each test interval recomputed, the chosen
    symmetrisation the best on trial; the Backpack's attribution exact (sum of contributions = logit, 1e-4)."""
    gold = {}
    for split in SPLITS:
        paths = {suffix: section['files'][f'{split}.{suffix}'] for suffix in GOLD_SUFFIXES}
        local = {suffix: eval_data.resolve_input(p, out_dir or '.') for suffix, p in paths.items()}
        if not c.check(all(p.is_file() for p in local.values()),
                       f"{where}: gold files of {split} not found ({', '.join(map(str, paths.values()))})"):
            return
        directory = local['en'].parent
        stem = local['en'].name[:-len('.en')]
        if stem != SPLITS[split]:
            c.check(False, f"{where}: unexpected gold file {paths['en']}")
            return
        all_gold = read_gold(split, directory)
        c.check(len(all_gold[:section['settings']['max_sentences']]) == section['n_gold'][split],
                f"{where}.n_gold.{split}: {section['n_gold'][split]}, the gold file has {len(all_gold)} pairs")
        idx = section['sentences'][split]
        gold[split] = [all_gold[i] for i in idx]
        c.check(section['n_skipped'][split] == section['n_gold'][split] - len(idx),
                f"{where}.n_skipped.{split}: {section['n_skipped'][split]}, {len(idx)} of {section['n_gold'][split]} kept")
    settings = section['settings']
    for name, method in section['methods'].items():
        at = f'{where}.methods.{name}'
        for split in SPLITS:
            g = gold[split]
            stored = {d: method['links'][d][split] for d in DIRECTIONS}
            if not c.check(all(len(v) == len(g) for v in stored.values()),
                           f"{at}.links.{split}: {[len(v) for v in stored.values()]} sentences for {len(g)}"):
                continue
            links = {d: [parse_links(x) for x in v] for d, v in stored.items()}
            c.check(all(i < len(x['en']) and j < len(x['fr']) for d in DIRECTIONS for ls, x in zip(links[d], g)
                        for i, j in ls), f"{at}.links.{split}: a link outside its sentence")
            sures, possibles = [x['sure'] for x in g], [x['possible'] for x in g]
            for alignment, preds in all_alignments(links['en-fr'], links['fr-en'], g).items():
                recorded = method['scores'][alignment][split]
                again = aer(preds, sures, possibles)
                for key in ('aer', 'precision', 'recall'):
                    if again[key] is None or recorded[key] is None:  # undefined (no links): stored as None
                        c.check(recorded[key] is again[key] is None, f'{at}.scores.{alignment}.{split}.{key}: '
                                f'recorded {recorded[key]!r}, recomputed {again[key]!r}')
                    else:
                        c.same(recorded[key], again[key], f'{at}.scores.{alignment}.{split}.{key}')
                c.check(recorded['n_links'] == again['n_links'], f"{at}.scores.{alignment}.{split}.n_links: "
                        f"{recorded['n_links']}, recomputed {again['n_links']}")
                if split == 'test' and len(g) >= 2:
                    stats = aer_stats(preds, sures, possibles)
                    for key in [k for k in ('aer', 'precision', 'recall') if again[k] is not None]:
                        ci = recorded.get(f'{key}_ci')
                        if isinstance(ci, dict) and ci.get('n_resamples') != settings['n_resamples']:
                            c.check(False, f"{at}.scores.{alignment}.test.{key}_ci: {ci.get('n_resamples')} resamples, "
                                           f"settings say {settings['n_resamples']}")
                        c.interval(ci, stats[key], len(g), f'{at}.scores.{alignment}.test.{key}')
                if recorded['aer'] is not None:
                    c.in_range(recorded['aer'], 0, 1, f'{at}.scores.{alignment}.{split}.aer')
        best = min(SYMMETRISATIONS, key=lambda m: _nan_last(method['scores'][m]['trial']['aer']))
        c.check(method['chosen_symmetrisation'] == best,
                f"{at}.chosen_symmetrisation: {method['chosen_symmetrisation']}, the best on trial is {best}")
        for direction, grid in (method.get('trial_grid') or {}).items():
            chosen = method['options'][direction]
            best_row = min(grid, key=lambda row: _nan_last(row['aer']))
            c.sanity(math.isclose(_nan_last(best_row['aer']), _nan_last(method['scores'][direction]['trial']['aer']),
                                  abs_tol=1e-12)
                     and all(best_row[k] == v for k, v in chosen.items()),
                     f"{at}.options.{direction}: not the best of its trial grid, or not the trial AER scored")
    if section.get('exactness'):
        c.sanity(section['exactness']['max_abs_error_float64'] < 1e-9, f"{where}.exactness.max_abs_error_float64 = "
                                                              f"{section['exactness']['max_abs_error_float64']}: contributions do "
                                                              f"not sum to the logit")


# ----------------------------------------------------------------------------------------------------- report

METHOD_NAMES = {'attribution': 'Backpack sense attribution', 'attention': 'Transformer attention',
                'twin_attention': 'twin Transformer attention', 'ibm1': 'IBM Model 1', 'diagonal': 'diagonal'}


def _fmt(x, digits):
    return '–' if x is None else f'{x:.{digits}f}'


def report_lines(section) -> list[str]:
    """A Markdown table: each method's test AER (95 % interval), precision, recall per alignment."""
    n = len(section['sentences']['test'])
    skipped = ' (the rest do not fit the context)' if section['n_skipped']['test'] else ''
    lines = [f"Test: {n} of {section['n_gold']['test']} WPT-03 Hansards sentence pairs{skipped}, options chosen on the "
             f"{len(section['sentences']['trial'])} of {section['n_gold']['trial']} trial pairs; AER (95 % bootstrap "
             f"interval over sentences) / precision / recall; * = the symmetrisation chosen on trial.", '',
             '| method | ' + ' | '.join(ALIGNMENTS) + ' |', '|---|' + '---:|' * len(ALIGNMENTS)]
    for name, method in section['methods'].items():
        cells = []
        for alignment in ALIGNMENTS:
            s = method['scores'][alignment]['test']
            ci = s.get('aer_ci') or {}
            star = '*' if alignment == method['chosen_symmetrisation'] else ''
            cells.append(f"{_fmt(s['aer'], 3)}{star} ({_fmt(ci.get('low'), 3)}–{_fmt(ci.get('high'), 3)}) / "
                         f"{_fmt(s['precision'], 2)} / {_fmt(s['recall'], 2)}")
        lines.append(f"| {METHOD_NAMES.get(name, name)} | " + ' | '.join(cells) + ' |')
    lines.append('')
    for name, method in section['methods'].items():
        if 'options' in method:
            lines.append(f"- {METHOD_NAMES.get(name, name)} options (trial): " + '; '.join(
                f"{d}: " + ', '.join(f'{k} {v}' for k, v in o.items()) for d, o in method['options'].items()))
        if 'training' in method:
            t = method['training']
            lines.append(f"- IBM Model 1: {t['pairs_trained']:,} pairs ({t['max_pairs']} Europarl pairs asked, "
                         f"{t['pairs_dropped']} dropped, + {t['gold_pairs_added']} unlabelled gold pairs), "
                         f"{t['iterations']} EM iterations, {t['seconds']} s")
    if section.get('exactness'):
        e = section['exactness']
        lines.append(f"- attribution exactness: max |sum of contributions − logit| = {e['max_abs_error']:.2e} against "
                     f"the model's float32 forward, {e['max_abs_error_float64']:.2e} in a float64 copy "
                     f"({e['n_float64_documents']} trial documents)")
    return lines


def main(argv=None):
    import outdir
    from errors import resolve_device
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a trained model (train.py out_dir or an export): a Backpack for '
                                                    'sense attribution, or a Transformer for its attention')
    p.add_argument('--twin_dir', help='the twin Transformer, for the attention baseline')
    p.add_argument('--device', default='cpu')
    p.add_argument('--gold_dir', default=str(GOLD_DIR), help='the converted WPT-03 files (default: the bundled copy)')
    p.add_argument('--ibm1_pairs', type=int, default=100000, help='Europarl training pairs for IBM 1 (0: no IBM 1)')
    p.add_argument('--ibm1_iterations', type=int, default=5)
    p.add_argument('--ibm1_max_len', type=int, default=80, help='drop training pairs with a longer side')
    p.add_argument('--ibm1_table', help='cache of the trained IBM 1 table (default: beside --output, ibm1_<pairs>.json.gz)')
    p.add_argument('--max_sentences', type=int, help='only the first N pairs of each split (a quick check)')
    p.add_argument('--n_resamples', type=int, default=1000)
    p.add_argument('--output', help='the results JSON (default: OUT_DIR/alignment.json)')
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    output = Path(args.output or Path(args.out_dir) / 'alignment.json')
    for split in SPLITS:  # the gold first: a missing file is one line, before anything is loaded
        read_gold(split, args.gold_dir)
    model, _ = outdir.load_model(args.out_dir, device)
    tok = outdir.load_tokenizer(args.out_dir)
    twin = twin_tok = None
    if args.twin_dir:
        twin, _ = outdir.load_model(args.twin_dir, device)
        twin_tok = outdir.load_tokenizer(args.twin_dir)
    ibm1 = None
    t0 = time.time()
    if args.ibm1_pairs:
        table_path = args.ibm1_table or output.parent / f'ibm1_{args.ibm1_pairs}.json.gz'
        ibm1 = cached_ibm1(table_path, max_pairs=args.ibm1_pairs, iterations=args.ibm1_iterations,
                           max_len=args.ibm1_max_len, gold_dir=args.gold_dir)
    t1 = time.time()
    result = evaluate_alignment(model, tok, device, twin=twin, twin_tok=twin_tok, ibm1=ibm1, gold_dir=args.gold_dir,
                                n_resamples=args.n_resamples, max_sentences=args.max_sentences, verbose=True)
    result['inputs'] = eval_data.record_inputs(result)  # the gold files as portable paths, with their sha256
    result['timing_s'] = {'ibm1': round(t1 - t0, 1), 'alignment': round(time.time() - t1, 1)}
    result['model'] = {'checkpoint': outdir.checkpoint_record(args.out_dir), 'run': Path(args.out_dir).name,
                       'twin': outdir.checkpoint_record(args.twin_dir) if args.twin_dir else None}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    print('\n'.join(report_lines(result)))
    print(f"wrote {output} (IBM 1 {result['timing_s']['ibm1']} s, alignment {result['timing_s']['alignment']} s)")


if __name__ == '__main__':
    from errors import run_main
    run_main(main)
