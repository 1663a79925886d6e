"""
Sentence vectors and cross-lingual sentence retrieval.

A sentence in language `lang` is fed to the model as `<lang> text` (its language tag, then its
tokens; no EOS) and its vector is the mean, over the text positions only (not the tag), of one of:
    hidden     the final hidden state ln_f(h) of the contextual transformer (for a Transformer: what
               its LM head reads; for a Backpack: the network that computes the weights alpha)
    o          Backpack only: the output o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l (what its LM head reads)
    embedding  the input embedding E[x] of each token: a bag-of-embeddings baseline with no context
Sentences are batched, right-padded; the model is causal, so padding never changes a real position.

Retrieval (evaluate_sentence_similarity) embeds N translation pairs (EN_i, FR_i) and scores, by
experiments.metrics.retrieval_scores, P@1 EN->FR and FR->EN by cosine nearest neighbour among the N,
the mean cosine of the true pairs, of N random non-matching pairs, and their margin.

    vectors, n_truncated = sentence_vectors(model, tok, ["Good morning."], 'en', 'cpu', kind='o')
    results = evaluate_sentence_similarity(model, tok, 'cpu')   # results['tatoeba']['hidden']['p@1_x2y']
"""
from pathlib import Path

import torch

from errors import warn
from experiments.eval_data import default_path, read_parallel
from experiments.metrics import retrieval_scores
from model import is_backpack

VECTOR_KINDS = {
    'hidden': "mean over the sentence's tokens (after its <lang> tag) of the final hidden state ln_f(h) "
              "of the contextual transformer",
    'o': "mean over the sentence's tokens (after its <lang> tag) of the Backpack output "
         "o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l (the vector the LM head reads)",
    'embedding': "mean of the input embeddings E[x] of the sentence's tokens (bag-of-embeddings baseline, "
                 "no context)",
}


def evaluate_sentence_similarity(model, tokenizer, device, datasets=None, max_pairs=1000, batch_size=32):
    """Cross-lingual retrieval on parallel sentence sets, for every sentence vector the model has.

    datasets: {name: (english_file, french_file)} of line-aligned files; default
    {'europarl_test': the held-out test.en/test.fr in tokenizer.data_dir,
     'tatoeba': the bundled Tatoeba fra-eng 1k}. The first max_pairs pairs of each (None = all).
    Returns {name: {kind: {'p@1_x2y' (EN->FR), 'p@1_y2x' (FR->EN), 'mean_true_cos',
    'mean_random_cos', 'margin', 'n', 'vector' (what the vector is), 'files', 'truncated'
    ({'en': n, 'fr': n} sentences cut to block_size - 1 tokens)}}} with kind in 'hidden',
    'o' (Backpack only) and 'embedding' (the baseline)."""
    require_eval(model)
    datasets = default_datasets(tokenizer) if datasets is None else datasets
    kinds = vector_kinds(model)
    results = {}
    for name, (en_path, fr_path) in datasets.items():
        en, fr = read_parallel(en_path, fr_path, limit=max_pairs)
        X, x_cut = mean_states(model, tokenizer, en, 'en', device, kinds, batch_size)
        Y, y_cut = mean_states(model, tokenizer, fr, 'fr', device, kinds, batch_size)
        results[name] = {kind: {**retrieval_scores(X[kind], Y[kind]), 'vector': VECTOR_KINDS[kind],
                                'files': {'en': str(en_path), 'fr': str(fr_path)},
                                'truncated': {'en': x_cut, 'fr': y_cut}}
                         for kind in kinds}
    return results


def default_datasets(tokenizer):
    if tokenizer.data_dir is None:
        raise ValueError("the tokenizer has no data_dir: pass datasets={name: (english_file, french_file)}")
    data_dir = Path(tokenizer.data_dir)
    return {'europarl_test': (data_dir / 'test.en', data_dir / 'test.fr'),
            'tatoeba': (default_path('tatoeba_en'), default_path('tatoeba_fr'))}


def vector_kinds(model):
    """The sentence vectors a model has: hidden, o (Backpack only), and the embedding baseline."""
    return ['hidden', 'o', 'embedding'] if is_backpack(model) else ['hidden', 'embedding']


def sentence_vectors(model, tokenizer, sentences, lang, device, kind='hidden', batch_size=32):
    """(vectors (n, d) float32 CPU tensor, n_truncated) for a list of sentences in `lang`.

    Each sentence is encoded as `<lang> text` (no EOS); kind 'hidden', 'o' (Backpack only) or
    'embedding' is averaged over the text positions (see the module docstring). Sentences longer
    than block_size - 1 tokens keep their first block_size - 1 tokens; n_truncated counts them (and a
    one-line warning says so).
    A sentence with no tokens raises ValueError."""
    if kind not in VECTOR_KINDS:
        raise ValueError(f"unknown sentence vector kind {kind!r}; expected one of {list(VECTOR_KINDS)}")
    if kind not in vector_kinds(model):
        raise ValueError(f"kind {kind!r} needs a Backpack (o_i is its sense mixture); "
                         f"a {type(model).__name__} has {vector_kinds(model)}")
    require_eval(model)
    vectors, n_truncated = mean_states(model, tokenizer, sentences, lang, device, [kind], batch_size)
    return vectors[kind], n_truncated


@torch.no_grad()
def mean_states(model, tokenizer, sentences, lang, device, kinds, batch_size):
    """({kind: (n, d) mean over the text positions}, n_truncated), all kinds from one pass."""
    max_text = model.config.block_size - 1
    texts = tokenizer.encode_batch(sentences)
    for i, ids in enumerate(texts):
        if not ids:
            raise ValueError(f"sentence {i} ({sentences[i]!r}) has no tokens: cannot make a sentence vector")
    n_truncated = sum(len(ids) > max_text for ids in texts)
    if n_truncated:
        warn(f"{n_truncated} of {len(texts)} {lang} sentences are longer than the context ({max_text} tokens "
             f"after the tag): their vectors use only their first {max_text} tokens")
    seqs = [[tokenizer.lang_id(lang)] + ids[:max_text] for ids in texts]
    E = model.input_embeddings()
    out = {kind: torch.empty(len(seqs), E.size(1)) for kind in kinds}
    for rows in length_batches([len(s) for s in seqs], batch_size):
        idx = pad([seqs[r] for r in rows], tokenizer.eos_id).to(device)
        lengths = torch.tensor([len(seqs[r]) for r in rows], device=device)
        text = torch.arange(idx.size(1), device=device)[None, :] < lengths[:, None]
        text[:, 0] = False  # the language tag
        states = model.hidden_states(idx) if set(kinds) & {'hidden', 'o'} else {}
        if 'embedding' in kinds:
            states['embedding'] = E[idx]
        for kind in kinds:
            mean = (states[kind] * text[..., None]).sum(1) / text.sum(1, keepdim=True)
            out[kind][rows] = mean.float().cpu()
    return out, n_truncated


# ----------------------------------------------------------------------------------------------------
# batching helpers shared with perplexity.py and translation.py

def require_eval(model):
    """Evaluations are deterministic full passes: dropout must be off."""
    if model.training:
        raise ValueError("the model is in training mode (dropout on): call model.eval() first "
                         "(checkpoint.load_model returns it in eval mode)")


def length_batches(lengths, batch_size):
    """Lists of at most batch_size indices, longest sequences first, so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs, value):
    """(len(seqs), longest) LongTensor of the id lists, right-padded with `value`."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out
