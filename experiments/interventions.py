"""
Sense interventions, measured: what a Backpack's log-linear senses let one edit, in English and French,
each with its effect, its cost, and a baseline that the Transformer twin can do too.

    python experiments/interventions.py --out_dir out/tiny_backpack --experiment all --output interventions.json
    python experiments/interventions.py --out_dir out/tiny_transformer --experiment gender   # the twin's baseline

A Backpack's logits are log-linear in its senses: logits_i = E sum_l sum_{j<=i} alpha_lij C(x_j)_l, and
alpha does not depend on the senses. Scaling sense l of the word at position j by s therefore moves
the logits at every later position i by exactly (s - 1) alpha_lij E C(x_j)_l (tested to fp32
tolerance in tests/test_interventions.py). The edits go through the model's own hooks:
model(idx, senses=S) with S the per-position senses (B, T, k, d) edited (or model._final_hidden(idx,
senses=S), what the LM head reads, when only a few positions' logits are needed), so the weights are
never touched. The Transformer has no senses; its edits are on what it does have, the input embeddings
(a forward hook on the embedding, removed after the call) and the vector its LM head reads.

Words and tokens. A word is found in a text by a case-insensitive whole-word match (no letter or digit
on either side), and the tokens it covers are found through the tokenizer's character offsets: every
token overlapping the match is a token of the word. A word of several BPE pieces is edited in all its
pieces, where it occurs (the pieces elsewhere, e.g. "e" of "n|urs|e" in another word, are not).
Topic steering needs a word's vector out of context, so its steering words must be single tokens: the
others are dropped from the steering vector and listed; the false friends use the mean of a word's pieces,
as experiments/lexical.py does, and drop OOV words (listed).

1. gender. The bias ratio of Hewitt et al. (2023, sec. 6), per language, on templates where the pronoun
   is not grammatically fixed (data/interventions/gender_templates.tsv: "The {profession} said that
   {pronoun}" -> he/she; "L'{profession} a dit qu'{pronoun}" -> il/elle, French professions epicene
   and after the elided article, so nothing marks their gender). For a profession, P(he) is the mean
   over templates of the probability of the whole continuation (the pronoun's tokens after the
   prompt's), and bias_ratio is the mean over professions of max(P(he)/P(she), P(she)/P(he)) >= 1.
   Professions are split into train and test (data/interventions/professions.tsv); every choice is
   made on train, and "after" is measured on test.
   - senses (Backpack): every (sense l, scale s in SCALES) is tried on the train professions (one
     pass: logits are log-linear in the senses, so the grid is computed from alpha and C without
     re-running the model; the chosen edit is then measured with the hook itself); the pair with the
     lowest train bias ratio is applied to the test professions (s = 1: no edit helped).
   - projection (both models; the twin's baseline): the gender direction g = mean E(masculine pronoun
     tokens) - mean E(feminine ones) is projected out of the input embeddings of the profession's
     tokens, x -> x - (1 - keep)(x.g)g/|g|^2, keep chosen on train from SCALES (keep 0: the full
     projection). In a Backpack the edited embedding also feeds the sense network (its senses are
     C(projected embedding)).
   - transfer_en_to_fr: the edits chosen on English professions applied unchanged to the French
     translations of the test professions.
   - cost: the edit applied to every occurrence of the test professions in the val split; the val
     documents that contain one (at most --cost_documents) are scored with and without it (a document
     without one is unchanged, exactly), giving the change of their NLL and bits per byte and
     delta_bpb_val, the change of the whole val file's bits per byte (exact when every affected
     document was scored: documents_scored == documents_affected).
2. topic. Generation from Europarl-like prompts (data/interventions/topic_prompts.tsv) steered towards
   a topic (data/interventions/topics.tsv). Up-weighting the senses of the topic words at every
   position: adding v_l to sense l of every position adds exactly sum_l v_l to every o_i (alpha sums
   to 1 over the prefix), so it is a fixed vector added to what the LM head reads. senses (Backpack):
   v = the mean over the topic's single-token words of sum_l C(w)_l (the word's whole backpack);
   embedding (both models; the twin's baseline): v = the mean of their embeddings E(w). Adding v to
   what the LM head reads adds the logits E v; v is scaled so that they have a standard deviation of
   `strength` nats over the vocabulary (logit_unit), the same unit for both methods and both models.
   Steered words are not counted words: the embedding baseline adds the logits E E(w), which raise
   exactly the words w it steers with, so counting them would favour it. Each topic's list (per
   language) is cut in two by split_topic_words, deterministically from the list's order: families of
   words sharing their first STEM_PREFIX letters (farm, farmer, farmers ...), each kept whole, go to the
   half with fewer words so far. Every method steers with the steer half only ('steer_half'; its
   single-token words, 'steering_words', make the vector) and the generations of every method and of the
   unedited model are counted with the counted half only ('counted_half'); both are in the results.
   Metrics: share of generations with a counted word, counted-word frequency (counted words / words),
   and the cost, the perplexity of the generated tokens under the unedited model. Every generated text is
   stored ('generations'), so that shares and frequencies can be recomputed. Sampling (KV-cached,
   model.step, the logits plus the fixed steering logits): top_k, temperature, a seeded generator per
   prompt, every setting and the unedited model in one batch.
3. false_friends. EN-FR false friends vs cognates (data/interventions/false_friends.tsv, cognates.tsv):
   per sense, cos(C(en)_l, C(fr)_l) and the share of shared top-k next tokens of E C(en)_l and
   E C(fr)_l (EN/FR tokens). A pair shares sense l when its cosine exceeds the 95th percentile of that
   sense's cosine over mismatched pairs (seeded derangements). The hypothesis "false friends share
   fewer senses than cognates" is tested with a one-sided permutation test (scipy) of the difference of
   group means, for the shared-sense count, the mean sense cosine, the top-k share and the embedding
   cosine (the twin's baseline), on all covered pairs and on a 'controlled' subset: both words seen at
   least MIN_COUNT times in training and no BPE piece in common (rare words and shared pieces make two
   vectors alike whatever the words mean, and false friends are much rarer in Europarl than cognates).
   Multiplicity: the family is every test reported, both subsets times every measure (8 tests for a
   Backpack, 2 for the Transformer, fewer where a subset is skipped; listed in 'holm_family'); each
   test has its raw 'p_value' and 'p_holm', Holm's step-down adjustment over that family (holm), which
   controls the family-wise error rate. The per-pair values the tests compare are stored (per_pair), so
   the tests can be recomputed (pair_tests). Per pair: the most divergent senses and what each side
   predicts.

Results: one JSON-serialisable dict per experiment (run_interventions); run_full_evaluation.py puts it
under 'interventions' and verify_evaluation.py checks it.
"""
import argparse
import contextlib
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import system  # noqa: E402,F401  (before torch: OMP_WAIT_POLICY)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from errors import DataError, MissingFileError, UserError, warn  # noqa: E402
from experiments import eval_data, lexical, metrics, perplexity  # noqa: E402
from experiments.senses import allowed_tokens, masked_topk  # noqa: E402
from experiments.sentence import length_batches, pad, require_eval  # noqa: E402
from model import KVCache, is_backpack  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / 'data' / 'interventions'
EXPERIMENTS = ('gender', 'topic', 'false_friends')
DATA_FILES = {'gender': ('gender_templates.tsv', 'professions.tsv'), 'topic': ('topics.tsv', 'topic_prompts.tsv'),
              'false_friends': ('false_friends.tsv', 'cognates.tsv')}  # what each experiment reads from data_dir
LANGUAGES = ('en', 'fr')
SCALES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # sense scale s, and the share `keep` of the gender component
STRENGTHS = (1.0, 2.0, 4.0, 8.0)  # topic steering: standard deviation (nats) of the logits it adds
SHARED_QUANTILE = 0.95
MIN_COUNT = 20  # false friends: the 'controlled' subset's minimum training count of each word
STEM_PREFIX = 4  # topic words sharing their first 4 letters are one family (split_topic_words)


# ----------------------------------------------------------------------------------------------------
# the edits: what is changed, at which positions, through the model's hooks

@dataclass
class SenseScale:
    """Scale sense l by scales[l] at the marked positions (Backpack)."""
    scales: dict

    def apply(self, S, mask):
        """S (B, T, k, d) per-position senses, mask (B, T) bool -> the edited copy."""
        S = S.clone()
        for l, s in self.scales.items():
            S[:, :, l] = torch.where(mask[..., None], s * S[:, :, l], S[:, :, l])
        return S


@dataclass
class Projection:
    """Remove the share 1 - keep of the component along `direction` from the input embeddings of the
    marked positions (both models)."""
    direction: torch.Tensor
    keep: float

    def project(self, x):
        g = self.direction.to(x) / self.direction.norm()
        return x - (1 - self.keep) * (x @ g)[..., None] * g


def position_senses(model, idx):
    """C(x_j) of every position (B, T, k, d), the sense network run once per distinct id."""
    tokens, where = torch.unique(idx, return_inverse=True)
    return model.sense_vectors(tokens)[where]


@contextlib.contextmanager
def projected_inputs(model, idx, mask, edit):
    """While open, the token embedding of `idx` (the very tensor given to model(idx)) is projected at the
    marked positions, by a forward hook on the embedding that is removed on exit."""
    def hook(module, args, output):
        if args[0] is not idx:  # another lookup (e.g. the sense network's): untouched
            return None
        return torch.where(mask[..., None], edit.project(output), output)
    handle = model.transformer.wte.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _edited_call(model, idx, mask, edit, call):
    """call(**kwargs) with `edit` (None, SenseScale or Projection) at the positions `mask` (B, T) in force. A
    Backpack always gets its senses through senses= (also unedited), so that an edit that marks no position
    gives bit-identical results."""
    kwargs = {}
    if is_backpack(model):
        S = position_senses(model, idx)
        if isinstance(edit, SenseScale):
            S = edit.apply(S, mask)
        elif isinstance(edit, Projection) and mask.any():
            S = S.clone()
            S[mask] = model.sense_network(edit.project(model.transformer.wte(idx[mask])))
        kwargs['senses'] = S
    elif isinstance(edit, SenseScale):
        raise TypeError(f"a sense edit needs a BackpackLM: {type(model).__name__} has no senses")
    with projected_inputs(model, idx, mask, edit) if isinstance(edit, Projection) else contextlib.nullcontext():
        return call(**kwargs)


def edited_hidden(model, idx, mask, edit=None):
    """What the LM head reads (B, T, d), o for a Backpack and ln_f(h) for a Transformer, with `edit`: the
    logits are its product with model.lm_head.weight (taken only where needed: a vocabulary of 50k rows
    times every position would be most of the cost)."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model._final_hidden(idx, **kwargs))


def edited_logits(model, idx, mask, edit=None):
    """model(idx, return_logits=True)'s logits (B, T, V) with `edit`."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model(idx, return_logits=True, **kwargs)[0])


def edited_loss(model, idx, mask, edit, targets):
    """model(idx, targets)'s loss (the mean NLL over the targets that are not -1) with `edit`."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model(idx, targets, **kwargs)[1])


# ----------------------------------------------------------------------------------------------------
# metrics (pure)

def bias_ratio(logp_m, logp_f):
    """Hewitt et al.'s bias ratio. logp_m, logp_f (n_professions, n_templates): log-probabilities of the
    masculine and feminine continuations. Per profession, P = the mean over templates of the
    probability; ratio = max(P_m / P_f, P_f / P_m) >= 1. Returns (mean over professions, per profession)."""
    lm, lf = logsumexp(np.asarray(logp_m, float), axis=1), logsumexp(np.asarray(logp_f, float), axis=1)
    per = np.exp(np.abs(lm - lf))
    return float(per.mean()), per


def topic_stats(texts, words):
    """share: fraction of texts with at least one of `words` (lower-case); frequency: those words over
    all words of the texts (words = \\w+ runs, lower-cased; 0 when there are none)."""
    words = {w.lower() for w in words}
    tokens = [re.findall(r'\w+', t.lower()) for t in texts]
    hits = [sum(w in words for w in ts) for ts in tokens]
    n_words = sum(len(ts) for ts in tokens)
    return {'share': float(np.mean([h > 0 for h in hits])) if texts else 0.0,
            'frequency': sum(hits) / n_words if n_words else 0.0, 'n_generations': len(texts), 'n_words': n_words}


def permutation_greater(a, b, n_resamples=9999, seed=0):
    """One-sided permutation test of mean(a) > mean(b) (scipy.stats.permutation_test, independent
    samples; exact when there are fewer distinct splits than n_resamples)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    test = stats.permutation_test((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), vectorized=True,
                                  permutation_type='independent', alternative='greater',
                                  n_resamples=n_resamples, random_state=seed)
    return {'mean_a': float(a.mean()), 'mean_b': float(b.mean()), 'difference': float(a.mean() - b.mean()),
            'p_value': float(test.pvalue), 'n_a': len(a), 'n_b': len(b), 'n_resamples': n_resamples}


def holm(p_values):
    """Holm's (1979) step-down adjustment of a family of m p-values: with p_(1) <= ... <= p_(m) sorted
    ascending, the adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)), returned in the input order.
    Rejecting each hypothesis whose adjusted p is <= a controls the family-wise error rate at a, under any
    dependence between the tests. (scipy has no Holm: stats.false_discovery_control is Benjamini-Hochberg
    / -Yekutieli, which control the false discovery rate; statsmodels' multipletests is not a dependency.)"""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind='stable')
    adjusted = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out.tolist()


# ----------------------------------------------------------------------------------------------------
# data files (data/interventions, each documented in its README.md)

def read_tsv(path, columns):
    """Rows of a tab-separated file with a header naming at least `columns`, as dicts."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: the intervention word lists ship with the repository in "
                               f"data/interventions (pass --data_dir to use another copy)")
    lines = [l for l in path.read_text(encoding='utf-8').splitlines() if l.strip()]
    header = lines[0].split('\t') if lines else []
    if missing := [c for c in columns if c not in header]:
        raise DataError(f"{path}: the header must name the tab-separated columns {list(columns)} (missing {missing})")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        fields = line.split('\t')
        if len(fields) != len(header):
            raise DataError(f"{path}:{n}: {len(fields)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, (f.strip() for f in fields))))
    return rows


def load_gender_data(data_dir):
    """({lang: [(template, masculine, feminine)]}, {lang: {'train': [...], 'test': [...]}})."""
    templates = {lang: [] for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'gender_templates.tsv', ('lang', 'template', 'masculine', 'feminine')):
        if r['template'].count('{profession}') != 1 or not r['template'].endswith('{pronoun}'):
            raise DataError(f"gender_templates.tsv: {r['template']!r} must hold {{profession}} once and end with {{pronoun}}")
        templates[r['lang']].append((r['template'], r['masculine'], r['feminine']))
    words = {lang: {'train': [], 'test': []} for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'professions.tsv', ('en', 'fr', 'split')):
        for lang in LANGUAGES:
            if r[lang] != '-':
                words[lang][r['split']].append(r[lang])
    return templates, words


def split_topic_words(words, prefix=STEM_PREFIX):
    """(steer, counted): a topic's word list cut in two halves, so that the words a method steers with are
    never the words counted in its generations. Words are grouped into families, a crude stem: two words
    are of one family when they share their first `prefix` letters, or the shorter one (under `prefix`
    letters) begins the other (farm, farmer, farmers, farming, farms; sea, seas), and joined transitively.
    The families, in the order of their first word in the list, go one by one to the half with fewer words
    so far (ties: steer). Deterministic (the list's order only), the halves disjoint, each family whole in
    one half, their sizes within the largest family's of each other."""
    words = list(dict.fromkeys(w.lower() for w in words))

    def related(a, b):
        short, long_ = sorted((a, b), key=len)
        return a[:prefix] == b[:prefix] if len(short) >= prefix else long_.startswith(short)
    family = list(range(len(words)))  # union-find over the related pairs

    def root(i):
        while family[i] != i:
            i = family[i]
        return i
    for i in range(len(words)):
        for j in range(i):
            if related(words[i], words[j]):
                family[max(root(i), root(j))] = min(root(i), root(j))
    groups = {}
    for i, w in enumerate(words):
        groups.setdefault(root(i), []).append(w)
    steer, counted = [], []
    for members in groups.values():  # in the order of each family's first word
        (steer if len(steer) <= len(counted) else counted).extend(members)
    return steer, counted


def load_topic_data(data_dir):
    """({topic: {lang: [words]}}, {lang: [prompts]}); split_topic_words cuts each list in two."""
    topics = {}
    for r in read_tsv(Path(data_dir) / 'topics.tsv', ('topic', 'lang', 'words')):
        topics.setdefault(r['topic'], {})[r['lang']] = r['words'].split()
    prompts = {lang: [] for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'topic_prompts.tsv', ('lang', 'prompt')):
        prompts[r['lang']].append(r['prompt'])
    return topics, prompts


# ----------------------------------------------------------------------------------------------------
# finding words in text and their tokens

def word_pattern(words):
    """A case-insensitive regex matching any of `words` as whole words (a multi-word entry matches with
    any whitespace between its words)."""
    alternatives = sorted(set(words), key=len, reverse=True)
    body = '|'.join(r'\s+'.join(map(re.escape, w.split())) for w in alternatives)
    return re.compile(rf'(?<!\w)(?:{body})(?!\w)', re.IGNORECASE)


def encode_marked(tok, lang, text, pattern):
    """([<lang>] + ids of text, [False] + for each token whether it overlaps a match of `pattern`)."""
    encoding = tok.backend.encode(text, add_special_tokens=False)
    spans = [m.span() for m in pattern.finditer(text)]
    marked = [any(s < b and e > a for a, b in spans) for s, e in encoding.offsets]
    return [tok.lang_id(lang)] + encoding.ids, [False] + marked


def scored_rows(seqs, masks, starts):
    """Rows (ids, mask, targets) where row r scores seqs[r][starts[r]:] for output r; a target is
    (position whose logits predict it, token, output index)."""
    return [(s, m, [(t - 1, s[t], r) for t in range(st, len(s))]) for r, (s, m, st) in enumerate(zip(seqs, masks, starts))]


def _batch(rows, batch, device):
    """idx, mask (B, T) of the rows `batch`, and their targets as tensors b, i (where), token, and the
    numpy array of output indices."""
    idx = pad([rows[r][0] for r in batch], 0).to(device)
    mask = pad([rows[r][1] for r in batch], 0).bool().to(device)
    flat = [(b, i, t, o) for b, r in enumerate(batch) for i, t, o in rows[r][2]]
    b, i, token = (torch.tensor([f[j] for f in flat], device=device) for j in range(3))
    return idx, mask, b, i, token, np.array([f[3] for f in flat])


@torch.no_grad()
def continuation_logprobs(model, rows, n, edit, device, batch_size=64):
    """(n,) summed log-probabilities of the targets of `rows` (scored_rows) per output index, with `edit`
    at the marked positions."""
    out = np.zeros(n)
    for batch in length_batches([len(r[0]) for r in rows], batch_size):
        idx, mask, b, i, token, owner = _batch(rows, batch, device)
        logits = (edited_hidden(model, idx, mask, edit)[b, i] @ model.lm_head.weight.T).float()  # scored positions
        lp = torch.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        out += np.bincount(owner, weights=lp.double().cpu().numpy(), minlength=n)
    return out


@torch.no_grad()
def sense_scale_grid(model, rows, n, scales, device, batch_size=32):
    """continuation_logprobs for SenseScale({l: s}) for every sense l and scale s, (k, len(scales), n),
    from one pass: with M_l = sum_j alpha_lij C(x_j)_l and D_l its part from the marked positions,
    the edited logits are E (sum_l M_l + (s - 1) D_l) (log-linearity; tested against the hook)."""
    W = model.lm_head.weight
    k = model.config.n_senses
    out = np.zeros((k, len(scales), n))
    for batch in length_batches([len(r[0]) for r in rows], batch_size):
        idx, mask, b, i, token, owner = _batch(rows, batch, device)
        C = position_senses(model, idx)                                           # (B, T, k, d)
        alpha = model.contextualization(idx)                                      # (B, k, T, T)
        o = torch.einsum('blij,bjld->bid', alpha, C)
        D = torch.einsum('blij,bjld->blid', alpha, C * mask[:, :, None, None])  # (B, k, T, d)
        logits0 = (o[b, i] @ W.T).float()                                         # (N, V)
        for l in range(k):
            delta = (D[b, l, i] @ W.T).float()  # what sense l of the marked tokens adds to the logits
            for g, s in enumerate(scales):
                lp = torch.log_softmax(logits0 + (s - 1) * delta, -1).gather(1, token[:, None])[:, 0]
                out[l, g] += np.bincount(owner, weights=lp.double().cpu().numpy(), minlength=n)
    return out


# ----------------------------------------------------------------------------------------------------
# 1. gender

class GenderItems:
    """Every (profession, template) of one language and split: outputs 0..n-1 are the masculine
    continuations, n..2n-1 the feminine ones (n = professions x templates). The two share the prompt, so
    one row scores the masculine continuation and the first feminine token; a second row is needed only
    for a feminine continuation of several tokens."""

    def __init__(self, tok, lang, professions, templates):
        self.lang, self.professions, self.n_templates = lang, list(professions), len(templates)
        pairs = []
        for word in self.professions:
            pattern = word_pattern([word])
            for template, m, f in templates:
                (a, ma), (b, mb) = (encode_marked(tok, lang, template.format(profession=word, pronoun=p), pattern)
                                    for p in (m, f))
                start = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                if not any(ma[:start]):
                    raise DataError(f"gender template {template!r}: profession {word!r} not found in its prompt")
                pairs.append((a, ma, b, mb, start))
        self.n = n = len(pairs)
        self.rows = []
        for q, (a, ma, b, mb, start) in enumerate(pairs):
            self.rows.append((a, ma, [(t - 1, a[t], q) for t in range(start, len(a))] + [(start - 1, b[start], n + q)]))
            if len(b) - start > 1:
                self.rows.append((b, mb, [(t - 1, b[t], n + q) for t in range(start + 1, len(b))]))
        # the pronouns' own tokens: what the gender direction is made of
        self.pronoun_ids = ([t for a, _, _, _, st in pairs for t in a[st:]], [t for _, _, b, _, st in pairs for t in b[st:]])

    def split(self, logp):
        """(logp_m, logp_f), each (n_professions, n_templates)."""
        return logp[:self.n].reshape(-1, self.n_templates), logp[self.n:].reshape(-1, self.n_templates)

    def ratio(self, model, edit, device):
        """(bias ratio, per-profession ratios) with `edit`."""
        return bias_ratio(*self.split(continuation_logprobs(model, self.rows, 2 * self.n, edit, device)))

    def direction(self, model):
        """g = mean E(masculine pronoun tokens) - mean E(feminine pronoun tokens)."""
        E = model.input_embeddings().detach()
        return E[self.pronoun_ids[0]].mean(0) - E[self.pronoun_ids[1]].mean(0)


def choose_sense_edit(model, items, device, scales=SCALES):
    """The (sense, scale) with the lowest train bias ratio (ties: the larger scale, then the lower
    sense), and the (k, len(scales)) table of train ratios."""
    grid = sense_scale_grid(model, items.rows, 2 * items.n, scales, device)
    table = np.array([[bias_ratio(*items.split(grid[l, g]))[0] for g in range(len(scales))]
                      for l in range(grid.shape[0])])
    ratio, _, l, g = min((table[l, g], -scales[g], l, g) for l in range(table.shape[0]) for g in range(len(scales)))
    return SenseScale({int(l): float(scales[g])}), table


def choose_projection(model, items, device, scales=SCALES):
    """The share `keep` with the lowest train bias ratio (ties: the larger keep), and the train ratios."""
    g = items.direction(model)
    table = [items.ratio(model, Projection(g, keep), device)[0] for keep in scales]
    _, _, best = min((r, -keep, i) for i, (r, keep) in enumerate(zip(table, scales)))
    return Projection(g, float(scales[best])), table


def describe(edit):
    if isinstance(edit, SenseScale):
        (l, s), = edit.scales.items()
        return {'sense': l, 'scale': s}
    return {'keep': edit.keep, 'direction_norm': float(edit.direction.norm())}


@torch.no_grad()
def gender_experiment(model, tok, device, data_dir=DATA_DIR, cost_documents=200, scales=SCALES):
    templates, words = load_gender_data(data_dir)
    methods = ('senses', 'projection') if is_backpack(model) else ('projection',)
    result = {'metric': 'bias ratio: mean over professions of max(P(m)/P(f), P(f)/P(m)), P the mean over templates '
                        'of the probability of the pronoun continuation; 1 = unbiased',
              'methods': list(methods), 'scales': list(scales), 'languages': {}}
    chosen, test_items = {}, {}
    for lang in LANGUAGES:
        items = {split: GenderItems(tok, lang, words[lang][split], templates[lang]) for split in ('train', 'test')}
        test_items[lang] = items['test']
        before = {split: items[split].ratio(model, None, device) for split in items}
        entry = {'n_train': len(words[lang]['train']), 'n_test': len(words[lang]['test']),
                 'n_templates': len(templates[lang]), 'before': {split: before[split][0] for split in items},
                 'methods': {}}
        per_test = {'before': before['test'][1]}
        for method in methods:
            if method == 'senses':
                edit, table = choose_sense_edit(model, items['train'], device, scales)
            else:
                edit, table = choose_projection(model, items['train'], device, scales)
            after, per_test[method] = items['test'].ratio(model, edit, device)
            entry['methods'][method] = {
                **describe(edit), 'train_ratio': np.asarray(table).tolist(),
                'train_after': items['train'].ratio(model, edit, device)[0], 'after': after,
                'cost': val_cost(model, tok, device, lang, words[lang]['test'], edit, cost_documents)}
            chosen.setdefault(lang, {})[method] = edit
        entry['per_profession'] = {
            'train': [{'word': w, 'before': float(r)} for w, r in zip(words[lang]['train'], before['train'][1])],
            'test': [{'word': w, **{key: float(v[i]) for key, v in per_test.items()}}
                     for i, w in enumerate(words[lang]['test'])]}
        result['languages'][lang] = entry
    # the edits learned on English professions, applied to the French translations of the test professions
    transfer = {'before': result['languages']['fr']['before']['test'], 'methods': {}}
    for method in methods:
        edit = chosen['en'][method]
        transfer['methods'][method] = {**describe(edit), 'after': test_items['fr'].ratio(model, edit, device)[0],
                                       'cost': val_cost(model, tok, device, 'fr', words['fr']['test'], edit,
                                                        cost_documents)}
    result['transfer_en_to_fr'] = transfer
    return result


# ----------------------------------------------------------------------------------------------------
# cost: the edit on every occurrence of the words in the val split

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


# ----------------------------------------------------------------------------------------------------
# 2. topic control

@torch.no_grad()
def sample_with_bias(model, idx, bias, max_new_tokens, generator, top_k, temperature, stop_ids):
    """idx (B, P) + max_new_tokens sampled tokens, each step's logits (KV-cached, model.step) plus the
    row's bias (B, n_tokens); a row that produced a stop id repeats it from then on."""
    cache = KVCache(model.config.block_size)
    stop = torch.as_tensor(stop_ids, device=idx.device)
    stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    logits = model.step(idx, cache)
    for t in range(max_new_tokens):
        logits = logits.add_(bias)  # in place: (B, V) with V up to 50k, at every step
        if temperature != 1:
            logits = logits.div_(temperature)
        if top_k:  # sample among the top_k only (the same distribution as masking the rest, and faster)
            logits, candidates = torch.topk(logits, min(top_k, logits.size(-1)))
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator)
        if top_k:
            nxt = candidates.gather(1, nxt)
        nxt = torch.where(stopped[:, None], idx[:, -1:], nxt)
        idx = torch.cat((idx, nxt), dim=1)
        stopped |= torch.isin(nxt[:, 0], stop)
        if stopped.all() or t == max_new_tokens - 1:
            break
        logits = model.step(nxt, cache)
    return idx


@torch.no_grad()
def generated_nll(model, seqs, prompt_len, stop_ids, chunk=4):
    """Per row of seqs (B, L): (sum of -ln p of the generated tokens up to and including the first stop
    id, their number), under the model as it is (unedited)."""
    nll, counts = [], []
    for rows in seqs.split(chunk):
        gen = rows[:, prompt_len:]
        is_stop = torch.isin(gen, torch.as_tensor(stop_ids, device=gen.device))
        before_stop = (is_stop.cumsum(1) - is_stop.long()) == 0  # up to and including the first stop
        targets = torch.full_like(rows[:, 1:], -1)
        targets[:, prompt_len - 1:] = torch.where(before_stop, gen, -1)
        b, i = (targets >= 0).nonzero(as_tuple=True)
        logits = (model._final_hidden(rows[:, :-1])[b, i] @ model.lm_head.weight.T).float()
        logp = torch.log_softmax(logits, -1).gather(1, targets[b, i][:, None])[:, 0]
        nll.append(torch.zeros(len(rows), device=rows.device).index_add_(0, b, -logp))
        counts.append((targets >= 0).sum(1))
    return torch.cat(nll).double().cpu().numpy(), torch.cat(counts).cpu().numpy()


def logit_unit(bias):
    """The logit change of a steering vector scaled to standard deviation 1 nat over the vocabulary:
    strength b then adds logits with standard deviation b, whatever the model or the vector."""
    return bias / bias.std()


@torch.no_grad()
def topic_vectors(model, tok, words):
    """({'senses': v, 'embedding': v} unit steering vectors, kept single-token words, dropped words with
    the reason). A Backpack's 'senses' vector is the mean of sum_l C(w)_l."""
    kept, dropped = {}, {}
    for w in words:
        ids = tok.encode_word(w)
        if len(ids) != 1:
            dropped[w] = f'{len(ids)} tokens'
        elif tok.token_lang_counts[ids[0]].sum() == 0:
            dropped[w] = 'token never seen in training'
        else:
            kept[w] = ids[0]
    if not kept:
        return {}, [], dropped
    ids = torch.tensor(list(kept.values()), device=model.lm_head.weight.device)
    vectors = {'embedding': model.input_embeddings()[ids].mean(0)}
    if is_backpack(model):
        vectors['senses'] = model.sense_vectors(ids).sum(1).mean(0)
    return {m: v / v.norm() for m, v in vectors.items()}, list(kept), dropped


@torch.no_grad()
def topic_experiment(model, tok, device, data_dir=DATA_DIR, strengths=STRENGTHS, samples=4, max_new_tokens=32,
                     seed=0, top_k=50, temperature=1.0):
    topics, prompts = load_topic_data(data_dir)
    methods = ('senses', 'embedding') if is_backpack(model) else ('embedding',)
    stop_ids = [tok.eos_id, tok.lang_id('en'), tok.lang_id('fr')]
    E = model.input_embeddings()
    result = {'metric': "each topic's words cut in two (split_topic_words: families of words sharing their first "
                        f"{STEM_PREFIX} letters, whole, to the smaller half): every method steers with the steer half "
                        "only, and only the counted half is counted, for every method and the unedited model alike; "
                        "share of generations with a counted word; counted words / words; cost: perplexity of the "
                        "generated tokens under the unedited model",
              'methods': list(methods), 'strengths': list(strengths), 'samples_per_prompt': samples, 'seed': seed,
              'top_k': top_k, 'temperature': temperature, 'stem_prefix': STEM_PREFIX, 'languages': {}}
    for lang in LANGUAGES:
        prompt_ids = [[tok.lang_id(lang)] + tok.encode(p) for p in prompts[lang]]
        n_new = min(max_new_tokens, model.config.block_size - max(map(len, prompt_ids)))
        if n_new < 1:
            raise UserError(f"the {lang} topic prompts do not fit the model's context ({model.config.block_size} tokens)")
        if n_new < max_new_tokens:
            warn(f"topic control: {n_new} new tokens instead of {max_new_tokens}, so that prompt and generation "
                 f"fit the context ({model.config.block_size} tokens)")
        configs, steer, word_info = [('unedited', None, 0.0)], {}, {}
        for topic, by_lang in topics.items():
            steer_half, counted_half = split_topic_words(by_lang[lang])
            vectors, kept, dropped = topic_vectors(model, tok, steer_half)
            word_info[topic] = {'words': by_lang[lang], 'steer_half': steer_half, 'counted_half': counted_half,
                                'steering_words': kept, 'dropped_from_steering': dropped}
            for method in methods:
                if method in vectors:
                    steer[method, topic] = vectors[method]
                    configs += [(method, topic, float(b)) for b in strengths]
        bias = torch.stack([torch.zeros(E.size(0), device=E.device) if m == 'unedited'
                            else b * logit_unit(E @ steer[m, t]) for m, t, b in configs])
        texts, nll, count = [[] for _ in configs], np.zeros(len(configs)), np.zeros(len(configs))
        owner = np.repeat(np.arange(len(configs)), samples)
        for p, ids in enumerate(prompt_ids):
            generator = torch.Generator(device=device).manual_seed(seed + p)
            idx = torch.tensor([ids], device=device).repeat(len(owner), 1)
            out = sample_with_bias(model, idx, bias.repeat_interleave(samples, 0), n_new, generator, top_k,
                                   temperature, stop_ids)
            row_nll, row_count = generated_nll(model, out, len(ids), stop_ids)
            np.add.at(nll, owner, row_nll)
            np.add.at(count, owner, row_count)
            for row, c in enumerate(owner):
                gen = out[row, len(ids):].tolist()
                gen = gen[:next((i for i, t in enumerate(gen) if t in stop_ids), len(gen))]
                texts[c].append(tok.decode(gen))
        counted = {t: word_info[t]['counted_half'] for t in topics}
        entry = {'max_new_tokens': n_new, 'prompts': prompts[lang], 'words': word_info, 'unedited': {}, 'methods': {}}
        entry['unedited'] = {'ppl': metrics.ppl(nll[0], count[0]), 'generations': texts[0],
                             'topics': {t: topic_stats(texts[0], counted[t]) for t in topics}}
        for c, (method, topic, b) in enumerate(configs[1:], 1):
            entry['methods'].setdefault(method, {}).setdefault(topic, []).append(
                {'strength': b, **topic_stats(texts[c], counted[topic]), 'ppl': metrics.ppl(nll[c], count[c]),
                 'generations': texts[c]})
        result['languages'][lang] = entry
    return result


# ----------------------------------------------------------------------------------------------------
# 3. false friends vs cognates

def load_pairs(data_dir):
    """[(en, fr, group)] of the false friends and the cognates."""
    return ([(r['en'], r['fr'], 'false_friends') for r in read_tsv(Path(data_dir) / 'false_friends.tsv', ('en', 'fr'))]
            + [(r['en'], r['fr'], 'cognates') for r in read_tsv(Path(data_dir) / 'cognates.tsv', ('en', 'fr'))])


@torch.no_grad()
def false_friend_experiment(model, tok, device, data_dir=DATA_DIR, top_k=10, n_random=20, seed=0,
                            n_resamples=9999, show=2, min_count=MIN_COUNT):
    backpack = is_backpack(model)
    pairs, dropped = [], []
    for en, fr, group in load_pairs(data_dir):
        a, b = lexical.word_ids(tok, en), lexical.word_ids(tok, fr)
        if a is None or b is None:
            dropped.append({'en': en, 'fr': fr, 'group': group, 'reason': 'OOV'})
        elif a == b:
            dropped.append({'en': en, 'fr': fr, 'group': group, 'reason': 'same tokens in both languages'})
        else:
            pairs.append((en, fr, group, a, b))
    result = {'metric': 'per sense: cos(C(en)_l, C(fr)_l) and the share of shared top-k next tokens; a pair shares '
                        f'sense l when its cosine exceeds the {SHARED_QUANTILE:.0%} quantile over mismatched pairs; '
                        'one-sided permutation tests cognates > false friends (p_value), and p_holm: Holm-adjusted over '
                        'the family holm_family, every test reported (both subsets, every measure)',
              'top_k': top_k, 'n_random_derangements': n_random, 'seed': seed, 'min_count': min_count,
              'dropped': dropped, 'tests': {},
              'per_pair': []}
    groups = np.array([p[2] for p in pairs])
    if min((groups == g).sum() for g in ('false_friends', 'cognates')) < 2:
        result['skipped'] = 'fewer than 2 covered pairs in a group'
        return result
    counts = {lang: dict(tok.words(lang)) for lang in LANGUAGES}
    emb = lexical.row_cosines(lexical.word_vectors(model, [p[3] for p in pairs], device, 'embedding'),
                              lexical.word_vectors(model, [p[4] for p in pairs], device, 'embedding'))
    per_pair = [{'en': en, 'fr': fr, 'group': g, 'train_count': {'en': counts['en'].get(en, 0), 'fr': counts['fr'].get(fr, 0)},
                 'embedding_cosine': float(emb[i])} for i, (en, fr, g, _, _) in enumerate(pairs)]
    names = ['embedding_cosine']
    if backpack:
        Cen = lexical.word_vectors(model, [p[3] for p in pairs], device, 'senses')  # (n, k, d)
        Cfr = lexical.word_vectors(model, [p[4] for p in pairs], device, 'senses')
        k = Cen.shape[1]
        cos = np.stack([lexical.row_cosines(Cen[:, l], Cfr[:, l]) for l in range(k)], 1)  # (n, k)
        rand = np.concatenate([np.stack([lexical.row_cosines(Cen[:, l], Cfr[metrics.derangement(len(pairs), seed + r), l])
                                         for l in range(k)], 1) for r in range(n_random)])
        threshold = np.quantile(rand, SHARED_QUANTILE, axis=0)  # (k,)
        shared = (cos > threshold).sum(1)
        E = model.input_embeddings().float()
        allowed = allowed_tokens(tok, filter_tokens=True)
        top_en, top_fr = (torch.stack([masked_topk(C[:, l].to(E.device) @ E.T, allowed, top_k).cpu()
                                       for l in range(k)], 1) for C in (Cen, Cfr))  # (n, k, top_k)
        topk_shared = np.array([[len(set(top_en[i, l].tolist()) & set(top_fr[i, l].tolist())) / top_k
                                 for l in range(k)] for i in range(len(pairs))])
        names += ['shared_senses', 'sense_cosine', 'topk_shared']
        result['shared_threshold'] = threshold.tolist()
        for i, entry in enumerate(per_pair):
            order = np.argsort(cos[i])[:show]
            entry.update(sense_cosine=cos[i].tolist(), topk_shared=topk_shared[i].tolist(), shared_senses=int(shared[i]),
                         divergent=[{'sense': int(l), 'cosine': float(cos[i, l]),
                                     'en_top': [tok.token_str(t) for t in top_en[i, l, :5].tolist()],
                                     'fr_top': [tok.token_str(t) for t in top_fr[i, l, :5].tolist()]} for l in order])
    # 'controlled': rare words and shared BPE pieces both make two words' vectors alike whatever they
    # mean, and false friends are much rarer than cognates in Europarl; this subset removes both
    controlled = np.array([min(e['train_count'].values()) >= min_count and not set(p[3]) & set(p[4])
                           for e, p in zip(per_pair, pairs)])
    for entry, c in zip(per_pair, controlled):
        entry['controlled'] = bool(c)
    result['tests'] = pair_tests(per_pair, names, n_resamples, seed)
    result['median_train_count'] = {g: {lang: float(np.median([e['train_count'][lang] for e in per_pair if e['group'] == g]))
                                        for lang in LANGUAGES} for g in ('false_friends', 'cognates')}
    result['holm_family'] = holm_family(result['tests'])
    result['per_pair'] = per_pair
    return result


def pair_measure(entry, name):
    """The value a false-friend test compares for one pair (a per_pair entry): its embedding cosine or
    shared-sense count, or the mean over senses of its per-sense cosines or top-k shares."""
    value = entry[name]
    return float(np.mean(np.asarray(value, float))) if isinstance(value, list) else float(value)


def pair_tests(per_pair, names, n_resamples=9999, seed=0):
    """{subset: {measure: test}} of the per_pair entries (each with 'group', 'controlled' and the measures
    `names`): one-sided permutation tests cognates > false friends on 'all' pairs and the 'controlled' ones
    (a subset with fewer than 2 pairs in a group is skipped), and Holm's adjustment over the family of
    every test made: p_value raw, p_holm adjusted. Everything it needs is stored in the results, so
    verify_evaluation.py recomputes it."""
    groups = np.array([e['group'] for e in per_pair])
    controlled = np.array([e['controlled'] for e in per_pair], bool)
    values = {name: np.array([pair_measure(e, name) for e in per_pair]) for name in names}
    tests = {}
    for subset, keep in (('all', np.ones(len(per_pair), bool)), ('controlled', controlled)):
        cog, ff = keep & (groups == 'cognates'), keep & (groups == 'false_friends')
        if min(cog.sum(), ff.sum()) < 2:
            tests[subset] = {'skipped': f'{cog.sum()} cognates and {ff.sum()} false friends (needs 2 each)'}
            continue
        tests[subset] = {}
        for name in names:
            test = permutation_greater(values[name][cog], values[name][ff], n_resamples, seed)
            tests[subset][name] = {
                'cognates_mean': test['mean_a'], 'false_friends_mean': test['mean_b'], 'difference': test['difference'],
                'p_value': test['p_value'], 'n_cognates': test['n_a'], 'n_false_friends': test['n_b'],
                'n_resamples': n_resamples}
    family = [key.split('.', 1) for key in holm_family(tests)]
    for (subset, name), p in zip(family, holm([tests[s][n]['p_value'] for s, n in family])):
        tests[subset][name]['p_holm'] = p
    return tests


def holm_family(tests):
    """['subset.measure'] of the tests Holm's adjustment is over (pair_tests: every test made)."""
    return [f'{subset}.{name}' for subset, by_name in tests.items() if 'skipped' not in by_name for name in by_name]


# ----------------------------------------------------------------------------------------------------
# all of it, the report, the command line

def run_interventions(model, tok, device, experiments=EXPERIMENTS, data_dir=DATA_DIR, cost_documents=200,
                      strengths=STRENGTHS, samples=4, max_new_tokens=32, seed=0):
    """{'settings', experiment: results..., 'timing_s'} for the selected experiments (module docstring); the
    settings name the word lists read ('files': eval_data.record_inputs records them with their sha256)."""
    require_eval(model)
    out = {'settings': {'experiments': list(experiments), 'data_dir': str(data_dir),
                        'files': [str(Path(data_dir) / f) for name in experiments for f in DATA_FILES[name]],
                        'cost_documents': cost_documents,
                        'strengths': list(strengths), 'samples': samples, 'max_new_tokens': max_new_tokens,
                        'seed': seed, 'model_type': 'backpack' if is_backpack(model) else 'transformer'},
           'timing_s': {}}
    runs = {'gender': lambda: gender_experiment(model, tok, device, data_dir, cost_documents),
            'topic': lambda: topic_experiment(model, tok, device, data_dir, strengths, samples, max_new_tokens, seed),
            'false_friends': lambda: false_friend_experiment(model, tok, device, data_dir, seed=seed)}
    for name in experiments:
        t0 = time.time()
        out[name] = runs[name]()
        out['timing_s'][name] = round(time.time() - t0, 2)
    return out


def _cost(c):
    if not c['documents_scored']:
        return 'no val occurrence'
    return (f"Δbits/byte {c['bpb_after'] - c['bpb_before']:+.4f} on the {c['documents_scored']} val documents with "
            f"an occurrence ({c['edited_positions']} edited tokens); val file {c['delta_bpb_val']:+.5f}")


def report_lines(section):
    """Markdown lines of the interventions section of evaluation_report.md."""
    lines = ['## Sense interventions', '']
    if 'gender' in section:
        g = section['gender']
        lines += ['### Gender bias ratio (1 = unbiased), test professions', '',
                  '| language | method | choice (on train) | before | after | cost |', '|---|---|---|---:|---:|---|']
        for lang, e in g['languages'].items():
            for method, m in e['methods'].items():
                choice = f"sense {m['sense']} × {m['scale']}" if method == 'senses' else f"keep {m['keep']}"
                lines.append(f"| {lang.upper()} | {method} | {choice} | {e['before']['test']:.3f} | {m['after']:.3f} | "
                             f"{_cost(m['cost'])} |")
        t = g['transfer_en_to_fr']
        for method, m in t['methods'].items():
            lines.append(f"| EN→FR transfer | {method} | learned on EN | {t['before']:.3f} | {m['after']:.3f} | "
                         f"{_cost(m['cost'])} |")
        lines.append('')
    if 'topic' in section:
        t = section['topic']
        lines += ['### Topic control (share of generations with a counted topic word / perplexity under the unedited '
                  'model)', '', "Each topic's words are cut in two: every method steers with one half, and only the "
                  'other half is counted, for every method and the unedited model.', '']
        for lang, e in t['languages'].items():
            head = ' | '.join(f'strength {b}' for b in t['strengths'])
            lines += [f"{lang.upper()} prompts, {e['max_new_tokens']} new tokens; unedited perplexity "
                      f"{e['unedited']['ppl']:.1f}", '', f'| method | topic | unedited | {head} |',
                      '|---|---|---:|' + '---:|' * len(t['strengths'])]
            for method, by_topic in e['methods'].items():
                for topic, curve in by_topic.items():
                    cells = ' | '.join(f"{p['share']:.2f} / {p['ppl']:.0f}" for p in curve)
                    lines.append(f"| {method} | {topic} | {e['unedited']['topics'][topic]['share']:.2f} | {cells} |")
            lines += [''] + [f"- {topic}: steered with *{' '.join(w['steering_words']) or '(no single-token word)'}*; "
                             f"counted *{' '.join(w['counted_half'])}*" for topic, w in e['words'].items()] + ['']
    if 'false_friends' in section:
        f = section['false_friends']
        lines += ['### False friends vs cognates (one-sided permutation tests, cognates > false friends)', '']
        if 'skipped' in f:
            lines += [f"skipped: {f['skipped']}", '']
        else:
            lines += [f"p: raw; p Holm: Holm-adjusted over the {len(f['holm_family'])} tests of the table (family-wise "
                      "error rate)", '', '| pairs | measure | cognates | false friends | p | p Holm |',
                      '|---|---|---:|---:|---:|---:|']
            for subset, tests in f['tests'].items():
                if 'skipped' in tests:
                    lines.append(f"| {subset} | skipped: {tests['skipped']} | | | | |")
                    continue
                lines += [f"| {subset} | {name} | {r['cognates_mean']:.3f} (n={r['n_cognates']}) | "
                          f"{r['false_friends_mean']:.3f} (n={r['n_false_friends']}) | {r['p_value']:.4f} | "
                          f"{r['p_holm']:.4f} |" for name, r in tests.items()]
            lines += ['', f"controlled: both words seen ≥ {f['min_count']} times in training and no BPE piece in "
                          f"common; median training counts {f['median_train_count']}", '']
            for p in [p for p in f['per_pair'] if p['group'] == 'false_friends' and 'divergent' in p][:8]:
                d = p['divergent'][0]
                lines.append(f"- {p['en']} / {p['fr']}: sense {d['sense']} (cos {d['cosine']:.2f}) predicts "
                             f"*{', '.join(d['en_top'])}* vs *{', '.join(d['fr_top'])}*")
            lines.append('')
    return lines


def run_name(out_dir):
    """What the results call a run: the name of its out_dir ('tiny_backpack'), not the machine's path to it."""
    return Path(out_dir).resolve().name


def main(argv=None):
    import evaluate
    from checkpoint import save_json
    from errors import resolve_device
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a training out_dir (Backpack: the sense edits; Transformer: the baselines)')
    p.add_argument('--experiment', default='all', choices=(*EXPERIMENTS, 'all'))
    p.add_argument('--output', help='results JSON (default: OUT_DIR/interventions.json)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--data_dir', default=str(DATA_DIR), help='the word lists and templates')
    p.add_argument('--cost_documents', type=int, default=200, help='val documents scored for the cost of each edit')
    p.add_argument('--strengths', type=float, nargs='+', default=list(STRENGTHS))
    p.add_argument('--samples', type=int, default=4, help='generations per prompt and setting')
    p.add_argument('--max_new_tokens', type=int, default=32)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    experiments = EXPERIMENTS if args.experiment == 'all' else (args.experiment,)
    model, _ = evaluate.load_model(args.out_dir, device)
    tok = evaluate.check_vocabulary(model, evaluate.load_tokenizer(args.out_dir))
    section = run_interventions(model, tok, device, experiments, args.data_dir, args.cost_documents, args.strengths,
                                args.samples, args.max_new_tokens, args.seed)
    info = model.info
    run = run_name(args.out_dir)
    results = {'model': {'out_dir': run, 'model_type': info['model_type'], 'iter_num': info['iter_num'],
                         'checkpoint': info['checkpoint'], 'tokenizer': evaluate.tokenizer_record(tok),
                         'n_senses': model.config.n_senses if is_backpack(model) else None},
               'settings': {'interventions': list(experiments)}, 'machine': system.machine(device),
               'interventions': section}
    results['inputs'] = eval_data.record_inputs(results, args.out_dir)  # portable paths: no absolute one
    output = args.output or os.path.join(args.out_dir, 'interventions.json')
    save_json(evaluate.to_json(results), output)
    print('\n'.join(report_lines(section)))
    print(f"wrote {eval_data.portable_path(output, args.out_dir)} (run {run})")


if __name__ == '__main__':
    from errors import run_main
    run_main(main)
