"""Pure evaluation metrics (no model code): translation, similarity, lexicon induction, sentence
retrieval, perplexity and sense-analysis helpers. Each docstring gives the exact definition.

Vectors may be numpy arrays or torch tensors; results are Python floats / numpy arrays.
Scales: BLEU, chrF and sentence BLEU are 0–100 (sacreBLEU); every other score is a fraction 0–1.
"""
from __future__ import annotations

import math
import statistics
import unicodedata
from collections import Counter

import numpy as np
import torch
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from scipy.stats import rankdata, spearmanr

EPS = 1e-12
TOKENIZE_13A = Tokenizer13a()


# ----------------------------------------------------------------------------- translation

def check_parallel(hyps, refs) -> None:
    """Raise ValueError unless hyps and refs are non-empty and equally long."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no sentences to score (empty input)")


def sacrebleu_corpus_score(metric, hyps: list[str], refs: list[str]) -> dict:
    """{'score', 'signature'} of a sacreBLEU metric object on hyps against one reference each."""
    check_parallel(hyps, refs)
    return {"score": metric.corpus_score(list(hyps), [list(refs)]).score,
            "signature": str(metric.get_signature())}


def corpus_bleu(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU of detokenised hypotheses against one reference each, by sacreBLEU's
    `BLEU()` with its defaults (13a tokenisation, mixed case, exponential smoothing, 4-grams).
    Returns {'score': 0–100, 'signature': sacreBLEU signature string}."""
    return sacrebleu_corpus_score(BLEU(), hyps, refs)


def corpus_chrf(hyps: list[str], refs: list[str]) -> dict:
    """Corpus chrF2 by sacreBLEU's `CHRF()` defaults (character 6-grams, no word n-grams, β = 2).
    Returns {'score': 0–100, 'signature': sacreBLEU signature string}."""
    return sacrebleu_corpus_score(CHRF(), hyps, refs)


def sentence_bleu_stats(hyps: list[str], refs: list[str]) -> dict:
    """Sentence-level BLEU of each pair, by sacreBLEU `BLEU(effective_order=True).sentence_score`
    (13a tokenisation, exponential smoothing 'exp' — sacreBLEU's default and what
    `sacrebleu.sentence_bleu` uses — with effective n-gram order so short sentences are not 0 by
    construction). Returns {'mean', 'median', 'min', 'max'} on 0–100 and the 'signature'."""
    check_parallel(hyps, refs)
    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(h, [r]).score for h, r in zip(hyps, refs)]
    return {"mean": statistics.fmean(scores), "median": statistics.median(scores),
            "min": min(scores), "max": max(scores), "signature": str(bleu.get_signature())}


def exact_match(hyps: list[str], refs: list[str]) -> float:
    """Fraction (0–1) of pairs whose strings are identical after stripping surrounding whitespace."""
    check_parallel(hyps, refs)
    return sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / len(hyps)


def unigram_f1(hyp: str, ref: str) -> float:
    """Word-level accuracy: multiset unigram F1 between the 13a tokens (sacreBLEU's default
    tokeniser, case-sensitive) of hyp and ref. overlap = Σ_w min(count_hyp(w), count_ref(w)),
    P = overlap/|hyp|, R = overlap/|ref|, F1 = 2PR/(P+R) (0 when overlap = 0).
    Both token lists empty -> 1.0; exactly one empty -> 0.0."""
    h, r = TOKENIZE_13A(hyp.strip()).split(), TOKENIZE_13A(ref.strip()).split()
    if not h and not r:
        return 1.0
    if not h or not r:
        return 0.0
    overlap = sum((Counter(h) & Counter(r)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(h), overlap / len(r)
    return 2 * precision * recall / (precision + recall)


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions, each cost 1) between the NFC
    normal forms of a and b, so an accented letter is one character whether it was written
    precomposed or with a combining accent. Row-by-row dynamic programme: O(len(a)·len(b)) time,
    O(len(b)) memory; the insertion recurrence of each row is a running minimum (numpy)."""
    a, b = unicodedata.normalize("NFC", a), unicodedata.normalize("NFC", b)
    if len(a) > len(b):  # loop over the shorter string, vectorise over the longer one
        a, b = b, a
    if not a:
        return len(b)
    b_codes = np.array([ord(c) for c in b])
    cols = np.arange(len(b) + 1)
    prev = cols.copy()
    for i, ch in enumerate(a, start=1):
        # best without an insertion in this row: deletion (prev[j] + 1) or substitution/match
        row = np.empty_like(prev)
        row[0] = i
        row[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (b_codes != ord(ch)))
        # insertions: row[j] = min_k<=j row[k] + (j - k)
        prev = np.minimum.accumulate(row - cols) + cols
    return int(prev[-1])


def char_accuracy(hyp: str, ref: str) -> float:
    """Character-level accuracy = 1 − levenshtein(hyp, ref) / max(len(hyp), len(ref)), lengths in
    NFC characters; in [0, 1]; both empty -> 1.0."""
    longest = max(len(unicodedata.normalize("NFC", hyp)), len(unicodedata.normalize("NFC", ref)))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(hyp, ref) / longest


def translation_scores(hyps: list[str], refs: list[str]) -> dict:
    """All translation metrics of one system output against one reference per sentence:
    {'bleu', 'bleu_signature', 'chrf', 'chrf_signature', 'sentence_bleu': {mean, median, min, max,
    signature}, 'exact_match', 'word_f1' (mean unigram_f1), 'char_accuracy' (mean char_accuracy),
    'n'}. Empty input or a length mismatch raises ValueError."""
    check_parallel(hyps, refs)
    bleu, chrf = corpus_bleu(hyps, refs), corpus_chrf(hyps, refs)
    return {
        "bleu": bleu["score"], "bleu_signature": bleu["signature"],
        "chrf": chrf["score"], "chrf_signature": chrf["signature"],
        "sentence_bleu": sentence_bleu_stats(hyps, refs),
        "exact_match": exact_match(hyps, refs),
        "word_f1": statistics.fmean(unigram_f1(h, r) for h, r in zip(hyps, refs)),
        "char_accuracy": statistics.fmean(char_accuracy(h, r) for h, r in zip(hyps, refs)),
        "n": len(hyps),
    }


# ----------------------------------------------------------------------------- similarity

def spearman(pred, gold) -> dict:
    """Spearman rank correlation ρ (scipy.stats.spearmanr: Pearson correlation of the ranks, ties
    get their average rank) between model similarities and gold scores. Returns {'rho', 'p', 'n'};
    rho is nan when either list is constant. Fewer than 2 pairs or unequal lengths -> ValueError."""
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"spearman needs two equally long 1-D lists, got {pred.shape} and {gold.shape}")
    if len(pred) < 2:
        raise ValueError(f"spearman needs at least 2 pairs, got {len(pred)}")
    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return {"rho": math.nan, "p": math.nan, "n": len(pred)}
    result = spearmanr(pred, gold)
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(pred)}


def as_matrix(x) -> torch.Tensor:
    """A float64 CPU tensor view of a numpy array / tensor / nested list."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm (a zero row stays zero, so its cosines are 0)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def cosine(a, b) -> float:
    """cos(a, b) = a·b / (|a| |b|); 0.0 when either vector is zero."""
    a, b = as_matrix(a).reshape(-1), as_matrix(b).reshape(-1)
    return float(normalize_rows(a) @ normalize_rows(b))


def cosine_matrix(A, B) -> np.ndarray:
    """(n, m) matrix of cosines between the rows of A (n, d) and of B (m, d); zero rows give 0."""
    return (normalize_rows(as_matrix(A)) @ normalize_rows(as_matrix(B)).T).numpy()


def pairwise_cosine(V) -> np.ndarray:
    """(k, k) cosine similarities between the k rows of V (e.g. the k sense vectors of a word)."""
    return cosine_matrix(V, V)


# ----------------------------------------------------------------------------- lexicon induction

FLOAT32_UNIT = 2.0 ** -24  # unit roundoff of float32
SCREEN_GROUP = 32  # columns per group of the float32 screen (a max over 32 contiguous floats vectorises, 16: 3x slower)
SCORE_PAIRS = 65536  # (row, group) pairs scored in float64 at a time: 65536 x d gathered floats, 16 MB of scores
TILE_GROUPS = (16, 64)  # float32 tiles of (16 x 64) x (32 x 32) = 512 x 2048 scores, 4 MB: they stay in cache


def screen_margin(d: int, scale: float = 1.0) -> float:
    """Twice a bound on |X32 − X| for X = scale·cos − bias (|bias| ≤ 1) computed in float32 from
    float64 unit vectors of dimension d, so that two scores compared in float32 are in the float64
    order unless they are within the margin: rounding the inputs and a d-term dot product in any
    summation order err by at most (d + 2)·u·|x|·|y| (u = 2⁻²⁴; Higham's γ_d, +1 % for its
    denominator), the bias and the subtraction by 4u more. margin = 2.02·(|scale|·(d + 2) + 4)·u
    (1.6e-5 for d = 128, scale 1; 3.2e-5 for scale 2)."""
    return 2.02 * (abs(scale) * (d + 2) + 4) * FLOAT32_UNIT


def padded(x: torch.Tensor, multiple: int, value=None) -> torch.Tensor:
    """x with rows appended up to a multiple of `multiple` rows: copies of its last row (so that a
    group's maximum is always some real row's score), or `value`."""
    pad = -x.shape[0] % multiple
    return torch.cat([x, x[-1:].expand(pad, *x.shape[1:]) if value is None else x.new_full((pad, *x.shape[1:]), value)])


def block_maxima(A32, B32, g: int, scale: float = 1.0, neg_bias32=None, both: bool = True):
    """Group maxima of the float32 scores X = scale·A32 B32ᵀ + neg_bias32[None, :] (rows of A32 and
    B32 padded to a multiple of g by `padded`): (M_A (nA, nB/g), M_B (nB, nA/g) or None unless `both`),
    M_A[i, c] = max over the g rows j of group c of B of X[i, j], M_B[j, c] = max over group c of A.
    X is computed a tile of TILE_GROUPS groups at a time (it stays in cache while the maxima are
    taken) and never kept."""
    nA, nB = A32.shape[0], B32.shape[0]
    tile_a, tile_b = (n * g for n in TILE_GROUPS)
    M_A_T, M_B = torch.empty(nB // g, nA), torch.empty(nB, nA // g) if both else None
    for i in range(0, nA, tile_a):
        a = A32[i:i + tile_a].T
        for j in range(0, nB, tile_b):
            x = (B32[j:j + tile_b] @ a if neg_bias32 is None and scale == 1 else  # (rows of B, rows of A)
                 torch.addmm(neg_bias32[j:j + tile_b, None], B32[j:j + tile_b], a, alpha=scale))
            M_A_T[j // g:(j + x.shape[0]) // g, i:i + x.shape[1]] = x.view(-1, g, x.shape[1]).amax(dim=1)
            if both:
                M_B[j:j + x.shape[0], i // g:(i + x.shape[1]) // g] = x.view(x.shape[0], -1, g).amax(dim=2)
    return M_A_T.T.contiguous(), M_B  # rows contiguous: the top-k over groups runs along them


def group_scores(R, C, groups, g: int, n_c: int, scale: float = 1.0, bias=None) -> torch.Tensor:
    """float64 scores scale·R_i·C_j − bias_j of each row i of R against the rows j of C (padded to whole
    groups of g) in its groups (nR, p) of C: (nR, p·g), the g columns of each group in turn; padding
    rows (j ≥ n_c) score −inf. One small product per group of C, with the rows that chose it (taken in
    group order, so that each product fills a contiguous slice, put in place once at the end)."""
    n_r, p = groups.shape
    flat = groups.flatten()
    order = torch.argsort(flat, stable=True)
    rows = torch.index_select(R, 0, order // p)  # (n_r·p, d): row i once for each of its groups, by group
    by_group = torch.empty(n_r * p, g, dtype=torch.float64)
    start, threads = 0, torch.get_num_threads()
    torch.set_num_threads(1)  # products this small run ~3x faster on one thread than on two (measured, MKL)
    try:
        for c, count in enumerate(torch.bincount(flat, minlength=C.shape[0] // g).tolist()):
            if count:
                torch.mm(rows[start:start + count], C[c * g:(c + 1) * g].T, out=by_group[start:start + count])
                start += count
    finally:
        torch.set_num_threads(threads)
    scores = torch.empty_like(by_group).index_copy_(0, order, by_group)
    if scale != 1:
        scores *= scale
    # bias by group, +inf on padding rows: (n_r·p, g) at once, without a (n_r, p·g) table of column indices
    per_column = torch.full((C.shape[0],), math.inf, dtype=torch.float64)
    per_column[:n_c] = 0 if bias is None else bias
    return scores.sub_(per_column.view(-1, g)[flat]).view(n_r, p * g)


def chunks_by_width(widths: torch.Tensor, budget: int):
    """Runs of the rows sorted by width (ascending), each with at most `budget` row·width cells when
    every row of the run is given its widest row's width (one row alone may exceed it): [(rows, width)]."""
    order = torch.argsort(widths, stable=True)
    sorted_widths = widths[order].tolist()
    runs, start = [], 0
    while start < len(order):
        end = min(len(order), start + max(1, budget // max(sorted_widths[start], 1)))
        while end - start > 1 and (end - start) * sorted_widths[end - 1] > budget:
            end = start + max(1, budget // sorted_widths[end - 1])  # widths ascend: this run now fits
        runs.append((order[start:end], sorted_widths[end - 1]))
        start = end
    return runs


def top_k_from_groups(R, C, n_c: int, M, k: int, scale: float = 1.0, bias=None, ordered: bool = True):
    """Exact float64 top k of each row of X = scale·R Cᵀ − bias (R, C float64 unit rows, C padded to
    whole groups by `padded`, n_c its real rows; bias (n_c,) float64 or None), best first, ties by
    lower column index, given M (nR, groups): the float32 maxima of X over each group of SCREEN_GROUP
    rows of C (block_maxima), each within e = margin/2 of float64 (margin = screen_margin).
    Every group whose maximum is ≥ b − margin, b the row's k-th largest group maximum, is scored in
    float64 (group_scores): the k best groups hold k columns scoring ≥ b − e in float64, and every
    column of another group scores < b − margin + e = b − e, below them, so the top k is exact, ties
    included. Returns (values (nR, k) float64, indices (nR, k) long); ordered=False: the same values,
    best first, the indices of tied values in any order (cheaper, for means of the top k)."""
    g, (n_r, n_groups) = SCREEN_GROUP, M.shape
    k = min(k, n_c)
    keep = M >= M.topk(min(k, n_groups), dim=1).values[:, -1:] - screen_margin(R.shape[1], scale)
    C_padded = torch.cat([C, C[-1:].expand(g, -1)])  # + a group of padding, for rows with fewer groups
    values, indices = torch.empty(n_r, k, dtype=torch.float64), torch.empty(n_r, k, dtype=torch.long)
    for rows, width in chunks_by_width(keep.sum(1), SCORE_PAIRS):
        row, group = keep[rows].nonzero(as_tuple=True)  # row-major: each row's groups ascending
        groups = torch.full((len(rows), width), n_groups)
        groups[row, torch.arange(len(row)) - torch.searchsorted(row, row)] = group
        scores = group_scores(R[rows], C_padded, groups, g, n_c, scale, bias)
        # positions ascend with columns (groups ascend), so ties by lower position are ties by lower column
        best = top_columns(scores, k) if ordered else scores.topk(k, dim=1).indices
        values[rows], indices[rows] = scores.gather(1, best), groups.gather(1, best // g) * g + best % g
    return values, indices


def distinct_rows(x: torch.Tensor):
    """(rows, inverse): the distinct rows of float64 x in order of first occurrence and, for each row of
    x, the index of its copy among them (x = rows[inverse]); inverse is None when every row is distinct
    (checked first by an exact integer hash of the bits, so that the common case costs one pass)."""
    weights = (2 * torch.arange(x.shape[1]) + 1) * 6364136223846793005  # odd, wrapping: equal rows hash equal
    if len(torch.unique((x.contiguous().view(torch.int64) * weights).sum(1))) == len(x):
        return x, None
    rows, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((len(rows),), len(x)).scatter_reduce_(0, inverse, torch.arange(len(x)), "amin")
    rank = torch.empty_like(first).scatter_(0, torch.argsort(first), torch.arange(len(rows)))
    return rows[torch.argsort(first)], rank[inverse]


def expand_ties(values, columns, inverse, k: int):
    """The top k over the original columns, from (values, columns) the top k over the distinct ones
    (best first), where original column j is a copy of distinct column inverse[j] and so has its score:
    each distinct column stands for its first k copies, which are ranked with ties by lower original
    column index (top_columns). This is what makes exact copies tie exactly: a product computes one
    score per distinct vector, never two that differ in the last bit by their place in a BLAS kernel."""
    k, n = min(k, len(inverse)), len(inverse)
    copies = torch.argsort(inverse, stable=True)  # original columns by distinct column, ascending within
    counts = torch.bincount(inverse)
    slot = torch.arange(k)
    table = copies[((counts.cumsum(0) - counts)[:, None] + slot).clamp_max(n - 1)]
    table[slot >= counts[:, None]] = n  # past a column's copies: sorts last, scores −inf
    candidates, position = table[columns].flatten(1).sort(dim=1)
    scores = values.repeat_interleave(k, dim=1).gather(1, position).masked_fill_(candidates == n, -math.inf)
    best = top_columns(scores, k)
    return scores.gather(1, best), candidates.gather(1, best)


def undistinct(values, indices, row_inverse, column_inverse, k: int):
    """A top k computed on distinct rows and columns, back on the original rows and columns."""
    if column_inverse is not None:
        values, indices = expand_ties(values, indices, column_inverse, k)
    if row_inverse is not None:
        values, indices = values[row_inverse], indices[row_inverse]
    return values, indices


def exact_top_k(Q: torch.Tensor, K: torch.Tensor, k: int, scale: float = 1.0, bias=None):
    """The k highest entries of each row of X = scale·Q Kᵀ − bias[None, :], where Q (n, d) and K (m, d)
    are float64 with unit (or zero) rows and bias (m,) float64 (default 0): (values (n, k) float64,
    indices (n, k) long), best first, ties by lower column index (as top_columns of the dense float64 X,
    identical columns tying exactly: expand_ties); k is capped at m. X is never built: a float32 screen
    by tiles (block_maxima), then float64 on the best groups of columns (top_k_from_groups)."""
    g = SCREEN_GROUP
    Q_d, q_inverse = distinct_rows(Q)
    keys, k_inverse = distinct_rows(K if bias is None else torch.cat([K, bias[:, None]], dim=1))
    K_d, bias_d = padded(keys if bias is None else keys[:, :-1], g), None if bias is None else keys[:, -1]
    neg_bias32 = None if bias is None else padded(-bias_d.float(), g, -math.inf)  # padding columns never win
    M, _ = block_maxima(padded(Q_d.float(), g), K_d.float(), g, scale, neg_bias32, both=False)
    top = top_k_from_groups(Q_d, K_d, len(keys), M[:len(Q_d)], k, scale, bias_d)
    return undistinct(*top, q_inverse, k_inverse, k)


def mutual_top_k(A: torch.Tensor, B: torch.Tensor, k: int, ordered: bool = True):
    """Both ways at once, for float64 unit (or zero) rows A (nA, d) and B (nB, d): ((values, indices) of
    the k highest cos(A_i, B_j) over j for each row of A, (values, indices) of the k highest over i for
    each row of B), exact float64 values, best first, ties by lower index (k capped at nB, nA): as
    exact_top_k(A, B, k) and exact_top_k(B, A, k), from one float32 product A Bᵀ (block_maxima);
    ordered=False: tied values' indices in any order (top_k_from_groups)."""
    g = SCREEN_GROUP
    (A_d, a_inverse), (B_d, b_inverse) = distinct_rows(A), distinct_rows(B)
    n_a, n_b, A_d, B_d = len(A_d), len(B_d), padded(A_d, g), padded(B_d, g)
    M_A, M_B = block_maxima(A_d.float(), B_d.float(), g)
    top_a = top_k_from_groups(A_d[:n_a], B_d, n_b, M_A[:n_a], k, ordered=ordered)
    top_b = top_k_from_groups(B_d[:n_b], A_d, n_a, M_B[:n_b], k, ordered=ordered)
    return undistinct(*top_a, a_inverse, b_inverse, k), undistinct(*top_b, b_inverse, a_inverse, k)


def mean_topk_both(A: torch.Tensor, B: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_A, r_B) for float64 unit rows A, B: r_A(a) = (1/k') Σ of the k' = min(k, len(B)) highest
    cos(a, B_j), r_B(b) = the same over the rows of A (k' = min(k, len(A))), from mutual_top_k's exact
    float64 values."""
    (top_a, _), (top_b, _) = mutual_top_k(A, B, k, ordered=False)  # values only: ties need no order
    return top_a.mean(dim=1), top_b.mean(dim=1)


def csls_scores(S, T, k: int = 10, queries=None) -> np.ndarray:
    """Cross-domain similarity local scaling (Conneau et al., 2018):
    CSLS(x, y) = 2 cos(x, y) − r_T(x) − r_S(y), where r_T(x) is the mean cosine of source vector x
    to its k nearest target vectors (rows of T) and r_S(y) the mean cosine of target vector y to
    its k nearest source vectors (rows of S); k is capped at the size of the other space.
    Returns the dense (len(queries), len(T)) float64 matrix for the source rows `queries` (indices into
    S, default all rows); r_S always uses all of S, so pass the whole source vocabulary as S.
    For the best targets only, without the matrix, see bli_rankings."""
    S, T = normalize_rows(as_matrix(S)), normalize_rows(as_matrix(T))
    if k < 1:
        raise ValueError(f"CSLS needs k >= 1, got {k}")
    rows = slice(None) if queries is None else torch.as_tensor(queries, dtype=torch.long)
    r_t, r_s = mean_topk_both(S, T, k)
    return (2 * S[rows] @ T.T - r_t[rows, None] - r_s[None, :]).numpy()


def bli_rankings(S, T, queries, csls_k: int = 10, top: int = 5, r_s=None) -> dict:
    """The `top` best targets (rows of T) of each source row `queries` of S by cosine and by CSLS
    (csls_scores, k = csls_k), best first, ties by lower column index, as top_columns of
    cosine_matrix(S[queries], T) and of csls_scores(S, T, csls_k, queries) rank them, without either
    matrix (exact_top_k, mutual_top_k: float32 tiles, float64 candidates). r_s: r_S of each row
    of T when already known (mean_topk_both(S, T, csls_k)[1], e.g. from the reverse direction's product).
    Returns {'cosine', 'csls': (len(queries), top') column indices, top' = min(top, len(T));
    'cosine_scores', 'csls_scores': their float64 scores; 'r_t': r_T of each query; 'r_s': r_S of each
    row of T}."""
    if csls_k < 1:
        raise ValueError(f"CSLS needs k >= 1, got {csls_k}")
    S, T = normalize_rows(as_matrix(S)), normalize_rows(as_matrix(T))
    Q = S[torch.as_tensor(queries, dtype=torch.long)]
    cos_v, cos_i = exact_top_k(Q, T, max(csls_k, top))  # the first `top` of a longer list: same order
    r_t = cos_v[:, :csls_k].mean(dim=1)
    r_s = mean_topk_both(S, T, csls_k)[1] if r_s is None else r_s
    csls_v, csls_i = exact_top_k(Q, T, top, scale=2.0, bias=r_s)  # 2 cos − r_S: CSLS + r_T, same order
    return {"cosine": cos_i[:, :top], "cosine_scores": cos_v[:, :top], "csls": csls_i,
            "csls_scores": csls_v - r_t[:, None], "r_t": r_t, "r_s": r_s}


def top_columns(scores, k):
    """Column indices of the k highest scores of each row, best first, ties by lower column index:
    the first k of a stable descending sort, without sorting whole rows. Every column tied with
    the k-th value is kept as a candidate, then the candidates are sorted stably by index."""
    values, candidates = scores.topk(k, dim=1)
    m = int((scores >= values[:, -1:]).sum(1).max())
    if m > k:  # a tie at the k-th place somewhere: take every tied column
        candidates = scores.topk(m, dim=1).indices
    candidates = candidates.sort(dim=1).values
    ranked = torch.argsort(-scores.gather(1, candidates), dim=1, stable=True)[:, :k]
    return candidates.gather(1, ranked)


def precision_at_k(score_matrix, src_words: list[str], tgt_words: list[str],
                   gold: dict[str, set[str]], ks=(1, 5)) -> dict:
    """Bilingual lexicon induction precision. Row i of score_matrix scores source word
    src_words[i] against every target word tgt_words[j] (higher = better; cosine or CSLS).
    A source word is *covered* when it has a row and a gold entry; its k highest-scoring targets
    (ties broken by lower column index, top_columns) are scored by precision_from_ranking.
    Raises ValueError on shape mismatch, duplicate source words or no covered word."""
    scores = as_matrix(score_matrix)
    if tuple(scores.shape) != (len(src_words), len(tgt_words)):
        raise ValueError(f"score matrix is {tuple(scores.shape)}, expected "
                         f"({len(src_words)}, {len(tgt_words)}) = (source words, target words)")
    if len(set(src_words)) != len(src_words):
        raise ValueError("duplicate source words in precision_at_k")
    rows = [i for i, w in enumerate(src_words) if w in gold]
    if not rows:
        raise ValueError("no source word of the score matrix is in the gold dictionary")
    order = top_columns(scores[rows], min(max(ks), len(tgt_words))).tolist()
    return precision_from_ranking(order, [src_words[i] for i in rows], tgt_words, gold, ks, n_gold=len(gold))


def precision_from_ranking(ranking, queries: list[str], tgt_words: list[str], gold: dict[str, set[str]],
                           ks=(1, 5), n_gold: int | None = None) -> dict:
    """P@k of ranked translations: ranking[i] lists column indices into tgt_words, best first (at least
    max(ks) of them, or all of tgt_words), for the covered source word queries[i] (every query has a
    gold entry). A query is a hit at k when any of its first k targets is a gold translation.
    P@k = hits / len(queries) (fraction 0–1, MUSE convention: gold translations that are not among
    tgt_words simply cannot be hit).
    Returns {'p@k' for each k, 'hits@k' (1/0 per query, in queries order: what a paired comparison
    resamples and P@k's mean), 'p@1_ci' (bootstrap_ci over the queries; None for one query),
    'n_gold' (source words in gold, default len(gold)), 'n_covered' (queries), 'n_oov' (n_gold −
    n_covered), 'n_reachable' (queries with ≥1 gold translation in tgt_words)}.
    Raises ValueError on duplicate or no queries, or a query without a gold entry."""
    if not queries:
        raise ValueError("no queries to score")
    if len(set(queries)) != len(queries):
        raise ValueError("duplicate queries in precision_from_ranking")
    missing = [q for q in queries if q not in gold]
    if missing:
        raise ValueError(f"{len(missing)} queries have no gold entry, e.g. {missing[0]!r}")
    result = {}
    for k in ks:
        hits = [int(any(tgt_words[j] in gold[q] for j in top[:k])) for q, top in zip(queries, ranking)]
        result[f"p@{k}"] = sum(hits) / len(queries)
        result[f"hits@{k}"] = hits
        if k == 1:
            result["p@1_ci"] = bootstrap_ci(mean_stat(hits), len(hits)) if len(hits) > 1 else None
    n_gold = len(gold) if n_gold is None else n_gold
    tgt_set = set(tgt_words)
    result.update(n_gold=n_gold, n_covered=len(queries), n_oov=n_gold - len(queries),
                  n_reachable=sum(bool(gold[q] & tgt_set) for q in queries))
    return result


# ----------------------------------------------------------------------------- retrieval

def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation p of range(n) with p[i] != i for all i (one random n-cycle), n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    p = np.empty(n, dtype=np.int64)
    p[order] = np.roll(order, -1)
    return p


def retrieval_scores(X, Y, seed: int = 0) -> dict:
    """Cross-lingual sentence retrieval, where X[i] and Y[i] are vectors of a translation pair.
    C = cosine_matrix(X, Y). P@1 X->Y = fraction of i with argmax_j C[i, j] = i; P@1 Y->X =
    fraction of j with argmax_i C[i, j] = j (ties: lowest index). mean_true_cos = mean_i C[i, i];
    mean_random_cos = mean_i C[i, p(i)] for a seeded derangement p (non-matching pairs);
    margin = mean_true_cos − mean_random_cos. Returns those, n, 'p@1_x2y_ci', 'p@1_y2x_ci' (bootstrap_ci
    over the queries), 'rank_x2y', 'rank_y2x' (per query, the 1-based rank of its translation among all
    candidates: 1 + the number of candidates scored strictly higher, or equal with a lower index, as argmax
    breaks ties) and 'hits_x2y', 'hits_y2x' (1/0 per query: rank 1); needs n >= 2 pairs."""
    C = cosine_matrix(X, Y)
    n = C.shape[0]
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"retrieval needs as many X as Y vectors, got {C.shape[0]} and {C.shape[1]}")
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 pairs, got {n}")
    idx = np.arange(n)
    true_cos = float(np.mean(C[idx, idx]))
    random_cos = float(np.mean(C[idx, derangement(n, seed)]))
    hits_x2y, hits_y2x = C.argmax(axis=1) == idx, C.argmax(axis=0) == idx
    rank_x2y, rank_y2x = true_rank(C), true_rank(C.T)
    return {"rank_x2y": rank_x2y.tolist(), "rank_y2x": rank_y2x.tolist(),"p@1_x2y": float(np.mean(hits_x2y)), "p@1_y2x": float(np.mean(hits_y2x)),
            "p@1_x2y_ci": bootstrap_ci(mean_stat(hits_x2y), n), "p@1_y2x_ci": bootstrap_ci(mean_stat(hits_y2x), n),
            "hits_x2y": hits_x2y.astype(int).tolist(), "hits_y2x": hits_y2x.astype(int).tolist(),
            "mean_true_cos": true_cos, "mean_random_cos": random_cos,
            "margin": true_cos - random_cos, "n": n}


def true_rank(C) -> np.ndarray:
    """For each row i of a square score matrix, the 1-based rank of column i: 1 + #{j: C[i, j] > C[i, i]} +
    #{j < i: C[i, j] = C[i, i]} (ties go to the lower index, as argmax's do), so rank 1 = a retrieval hit."""
    diag = np.diag(C)[:, None]
    lower = np.arange(C.shape[1])[None, :] < np.arange(C.shape[0])[:, None]
    return 1 + (C > diag).sum(1) + ((C == diag) & lower).sum(1)


# ----------------------------------------------------------------------------- perplexity

def ppl(sum_nll: float, n_tokens: int) -> float:
    """Perplexity = exp(sum_nll / n_tokens): sum_nll is the total token negative log-likelihood in
    nats over one full pass (not a mean of per-batch perplexities)."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs n_tokens > 0, got {n_tokens}")
    return math.exp(sum_nll / n_tokens)


def bits_per_byte(sum_nll: float, n_bytes: int) -> float:
    """Bits per byte = sum_nll / (n_bytes · ln 2): total NLL in nats converted to bits, divided by
    the UTF-8 byte count of the raw text it predicts (tokenizer-independent)."""
    if n_bytes <= 0:
        raise ValueError(f"bits per byte needs n_bytes > 0, got {n_bytes}")
    return sum_nll / (n_bytes * math.log(2))


# ----------------------------------------------------------------------------- sense analysis

def softmax_entropy(logits) -> np.ndarray:
    """Entropy in nats of softmax(logits) along the last axis, one value per row:
    H = −Σ_v p_v log p_v (0 for a one-hot distribution, ln V for a uniform one)."""
    logp = torch.log_softmax(as_matrix(logits), dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))  # 0·log 0 = 0 (e.g. -inf logits)
    return (-plogp.sum(dim=-1)).numpy()


def topk_overlap(a_ids, b_ids) -> float:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the two sets of top-k ids (order is ignored; with
    equal-size top-k lists, 1 = same set, 0 = disjoint). Both empty -> ValueError."""
    a, b = set(np.asarray(a_ids).reshape(-1).tolist()), set(np.asarray(b_ids).reshape(-1).tolist())
    if not a and not b:
        raise ValueError("topk_overlap of two empty id lists")
    return len(a & b) / len(a | b)


# ----------------------------------------------------------------------------- uncertainty

def bootstrap_ci(stat, n: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap confidence interval of a statistic over n items (test sentences, word
    pairs, queries): stat(idx) is the statistic of the items idx (an int array, with repeats); it is
    computed on n_resamples draws of n items with replacement (numpy default_rng(seed)), and the
    interval is the (1 − level)/2 and (1 + level)/2 percentiles of those values (NaN draws, e.g. a
    constant resample under Spearman, are left out and counted). Returns {'value' (on all items, idx =
    0..n−1), 'low', 'high', 'level', 'n_resamples', 'seed', 'n', 'n_nan'}."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, got {n}")
    values = _resampled(stat, n, n_resamples, seed)
    return _interval(float(stat(np.arange(n))), values, level, n_resamples, seed, n)


def paired_bootstrap(stat_a, stat_b, n: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The bootstrap interval of the difference stat_a − stat_b of two systems scored on the same n
    items, each resample drawing the same items for both (paired). The difference is 'significant'
    when the interval excludes 0. Returns bootstrap_ci's dict for the difference plus 'significant'."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, got {n}")
    diff = lambda idx: stat_a(idx) - stat_b(idx)  # noqa: E731
    if hasattr(stat_a, "batch") and hasattr(stat_b, "batch"):  # a block of resamples at once, as _resampled does
        diff.batch = lambda rows: np.asarray(stat_a.batch(rows)) - np.asarray(stat_b.batch(rows))
    values = _resampled(diff, n, n_resamples, seed)
    out = _interval(float(diff(np.arange(n))), values, level, n_resamples, seed, n)
    out["significant"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def seed_bootstrap(stats, n: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean over training seeds of a statistic, with an interval that holds both sources of chance: which
    seeds were trained and which test items were drawn. stats[s](idx) is seed s's model scored on the items idx
    (all seeds on the same n items). Each resample draws S seeds with replacement and n items with replacement
    (one draw of items for all drawn seeds: they share the test set) and takes
        mean over the drawn seeds s of stats[s](items);
    the interval is the percentile interval of those values, as bootstrap_ci's. Beside it, the seeds alone:
    the t-interval over the S per-seed values on all items, mean ± t(S−1, (1+level)/2) · sd / √S (it treats
    the test set as fixed; NaN with one seed). Returns {'value' (mean of the per-seed values), 'low', 'high',
    'per_seed', 't_low', 't_high', 'n_seeds', 'level', 'n_resamples', 'seed', 'n', 'n_nan'}."""
    return seed_summary(*seed_resamples(stats, n, n_resamples, seed), level, n_resamples, seed, n)


def seed_paired_bootstrap(stats_a, stats_b, n: int, n_resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """seed_bootstrap of the difference a − b of two models trained with the same seeds (stats_a[s] and
    stats_b[s] paired by seed, scored on the same n items, each resample drawing the same seeds and items for
    both: the same draws as seed_resamples makes for each, so it is the difference of their resamples).
    'significant' when the interval excludes 0; 'same_sign' counts the seeds whose own difference has the sign
    of the mean difference."""
    if len(stats_a) != len(stats_b):
        raise ValueError(f"{len(stats_a)} seeds of one model and {len(stats_b)} of the other")
    return seed_paired_summary(seed_resamples(stats_a, n, n_resamples, seed),
                               seed_resamples(stats_b, n, n_resamples, seed), level, n_resamples, seed, n)


def seed_resamples(stats, n, n_resamples=1000, seed=0):
    """(per-seed values on all items, the n_resamples values of seed_bootstrap's draws). The draws depend only on
    (number of seeds, n, n_resamples, seed): two models with as many seeds on the same items get the same draws."""
    n_seeds = len(stats)
    if n_seeds < 1 or n < 2:
        raise ValueError(f"a seed bootstrap needs at least 1 seed and 2 items, got {n_seeds} and {n}")
    scorers = [_scorer(st) for st in stats]
    per_seed = np.array([score(np.arange(n)[None])[0] for score in scorers], dtype=np.float64)
    rng = np.random.default_rng(seed)
    # how often each seed is drawn in each resample; then the items of every resample
    counts = np.stack([np.bincount(row, minlength=n_seeds)
                       for row in rng.integers(0, n_seeds, size=(n_resamples, n_seeds))])
    values = np.zeros(n_resamples)
    block = max(1, min(n_resamples, 2_000_000 // n))
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, n, size=(min(block, n_resamples - start), n))
        block_values, block_counts = values[start:start + len(idx)], counts[start:start + len(idx)]  # views
        for s, score in enumerate(scorers):
            drawn = block_counts[:, s] > 0  # a seed not drawn adds nothing (and a NaN of it must not count)
            if drawn.any():
                block_values[drawn] += block_counts[drawn, s] * score(idx[drawn])
        block_values /= n_seeds
    return per_seed, values


def seed_summary(per_seed, values, level, n_resamples, seed, n):
    """seed_bootstrap's dict from seed_resamples' output."""
    from scipy.stats import t as student_t
    n_seeds = len(per_seed)
    out = _interval(float(np.mean(per_seed)), np.asarray(values), level, n_resamples, seed, n)
    if n_seeds > 1:
        half = float(student_t.ppf((1 + level) / 2, n_seeds - 1) * np.std(per_seed, ddof=1) / math.sqrt(n_seeds))
    else:
        half = math.nan  # one seed: no estimate of the seeds' spread
    return {**out, "per_seed": [float(v) for v in per_seed], "t_low": out["value"] - half,
            "t_high": out["value"] + half, "n_seeds": n_seeds}


def seed_paired_summary(resamples_a, resamples_b, level, n_resamples, seed, n):
    """seed_paired_bootstrap's dict from the seed_resamples of the two models (made with the same draws)."""
    (per_a, values_a), (per_b, values_b) = resamples_a, resamples_b
    out = seed_summary(per_a - per_b, values_a - values_b, level, n_resamples, seed, n)
    out["significant"] = bool(out["low"] > 0 or out["high"] < 0)
    out["same_sign"] = int(sum(np.sign(v) == np.sign(out["value"]) for v in out["per_seed"]))
    return out


def _scorer(stat):
    """rows of item indices -> the statistic of each row (stat.batch when it has one)."""
    batch = getattr(stat, "batch", None)
    return (lambda rows: np.asarray(batch(rows), dtype=np.float64)) if batch else \
        (lambda rows: np.array([stat(row) for row in rows], dtype=np.float64))


def _resampled(stat, n, n_resamples, seed):
    """stat of each of n_resamples draws of n items with replacement. The draws are made a block of resamples at a
    time, which is the same random stream as one draw per resample; a statistic with a `batch` method (rows of
    item indices -> one value per row) scores a block at once."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, 2_000_000 // n))
    values = []
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, n, size=(min(block, n_resamples - start), n))
        batch = getattr(stat, "batch", None)
        values.extend(batch(idx) if batch else [stat(row) for row in idx])
    return np.array(values, dtype=np.float64)


def _interval(value, values, level, n_resamples, seed, n):
    finite = values[~np.isnan(values)]
    low, high = (np.percentile(finite, [50 * (1 - level), 50 * (1 + level)]) if len(finite) else (math.nan, math.nan))
    return {"value": value, "low": float(low), "high": float(high), "level": level, "n_resamples": n_resamples,
            "seed": seed, "n": n, "n_nan": int(len(values) - len(finite))}


def mean_stat(values):
    """stat(idx) = mean of values[idx]: for per-item scores (hits of a query, sentence accuracy)."""
    values = np.asarray(values, dtype=np.float64)

    def stat(idx):
        return float(values[idx].mean())
    stat.batch = lambda rows: values[rows].mean(1)
    return stat


def spearman_stat(pred, gold):
    """stat(idx) = Spearman ρ of the word pairs idx (NaN when a resample is constant): the Pearson
    correlation of the average ranks, as scipy.stats.spearmanr computes it, without its overhead
    (a resample is ranked in ~0.1 ms)."""
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)

    def stat(idx):
        a, b = rankdata(pred[idx]), rankdata(gold[idx])
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return math.nan
        return float(np.corrcoef(a, b)[0, 1])

    codes = [np.unique(x, return_inverse=True)[1] for x in (pred, gold)]

    def batch(rows):
        """The same for a block of resamples at once. Average ranks from counts: a value met c times, with C
        draws at or below it, ranks C - (c - 1) / 2 (what rankdata gives, exactly: halves are exact floats)."""
        ranks = []
        for code in codes:
            u, m = code[rows], code.max() + 1
            counts = np.bincount((u + m * np.arange(len(rows))[:, None]).ravel(), minlength=m * len(rows))
            counts = counts.reshape(len(rows), m)
            average = counts.cumsum(1) - (counts - 1) / 2
            ranks.append(np.take_along_axis(average, u, 1))
        a, b = (r - r.mean(1, keepdims=True) for r in ranks)
        with np.errstate(invalid='ignore', divide='ignore'):
            r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        constant = (np.ptp(ranks[0], axis=1) == 0) | (np.ptp(ranks[1], axis=1) == 0)
        return np.where(constant, math.nan, np.clip(r, -1.0, 1.0))
    stat.batch = batch
    return stat


def corpus_stat(metric, hyps: list[str], refs: list[str]):
    """stat(idx) = the corpus score (sacreBLEU BLEU() or CHRF() object) of the sentences idx. Each
    sentence's sufficient statistics (n-gram matches and counts) are extracted once and summed per
    resample, as sacreBLEU's own paired bootstrap does, so a resample costs no re-tokenisation; the
    score of all sentences equals metric.corpus_score(hyps, [refs]).score. A metric from
    reference_metric(cls, refs) has read these references already (scoring many systems on them)."""
    check_parallel(hyps, refs)
    cached = getattr(metric, "cached_references", None) == list(refs)
    stats = np.asarray(metric._extract_corpus_statistics(list(hyps), None if cached else [list(refs)]),
                       dtype=np.float64)
    return lambda idx: float(metric._compute_score_from_stats(list(stats[idx].sum(0))).score)


def reference_metric(cls, refs: list[str]):
    """cls (BLEU or CHRF) with `refs` read once (sacreBLEU's reference cache), for corpus_stat of many systems
    on the same references."""
    metric = cls(references=[list(refs)])
    metric.cached_references = list(refs)
    return metric


def translation_intervals(hyps: list[str], refs: list[str], **bootstrap) -> dict:
    """{'bleu': CI, 'chrf': CI}: bootstrap_ci of corpus BLEU and chrF over the test sentences."""
    return {"bleu": bootstrap_ci(corpus_stat(BLEU(), hyps, refs), len(hyps), **bootstrap),
            "chrf": bootstrap_ci(corpus_stat(CHRF(), hyps, refs), len(hyps), **bootstrap)}
