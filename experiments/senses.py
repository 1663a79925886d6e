"""Sense-vector analysis of a Backpack: what each sense of a word predicts, which words it is near, how
the senses differ, a label for each sense derived from the trained model, and cross-lingual alignment.

Words are encoded as in experiments/lexical.py (lower-cased, tokenizer.encode_word; OOV when a piece
never occurred in training); a multi-piece word gets the mean of its pieces' sense vectors C(x)_l.
E is the tied input embedding, so E C(x)_l are the next-token logits sense l adds (Hewitt et al., sec. 5).

Token filter. With filter_tokens, shown tokens are the English or French ones,
tokenizer.language_mask('en') | language_mask('fr') (seen >= 3 times in training, >= half of the time
on that side); without it every token but the tags and EOS. Entropies are always over the full
vocabulary. A token's language is its majority side in token_lang_counts and its category is
word_classes.categorize(token, that language).

Sense labels (label_senses). SENSE_LABELS starts as neutral names 'sense 0' .. 'sense 15'; nothing in
this file says what a sense means. label_senses(model, ...) derives one label per sense from the model
it is run on (LABEL_RULE) and writes them into SENSE_LABELS in place (so `from evaluate import
SENSE_LABELS` sees them). SENSE_LABELS always has 16 entries: a model with k < 16 senses fills the
first k and the rest are reset to 'sense i'; a model with k > 16 fills all 16 with its first 16 labels
(label_senses still returns all k).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from experiments import eval_data, lexical, metrics
from experiments.word_classes import categorize
from model import is_backpack

SENSE_LABELS = [f"sense {i}" for i in range(16)]
# The probe words, per language, whose senses are shown: the one definition (evaluate.py's sense
# analysis and train.py's sense snapshots in training_log.json read it). Ambiguous words and
# "parliament", a frequent Europarl word.
PROBE_WORDS = {"en": ["bank", "right", "play", "parliament"], "fr": ["droit", "livre", "temps", "parlement"]}
FUNCTION_CATEGORIES = ("article", "preposition", "pronoun", "auxiliary", "conjunction")
GROUPS = {"punctuation": "punctuation", "number": "numbers", "content": "content",
          **{c: "function words" for c in FUNCTION_CATEGORIES}}
LABEL_RULE = ("For each sense l: the top_k tokens of E C(w)_l (EN/FR tokens only) for every probe word w are "
              "pooled. Each token is grouped by word_classes.categorize (article, preposition, pronoun, auxiliary, "
              "conjunction -> 'function words'; 'content'; 'punctuation'; 'numbers'); the label is "
              "'<LANG> <dominant group>: <its 3 most frequent tokens>', where LANG is EN when the mean English "
              "share of the pooled tokens (token_lang_counts en / (en + fr)) is >= 2/3, FR when <= 1/3, else EN/FR.")


def require_backpack(model, what: str) -> None:
    if not is_backpack(model):
        raise TypeError(f"{what} needs a BackpackLM: {type(model).__name__} has no sense vectors "
                        "(for a Transformer, compare its input embeddings with experiments/lexical.py instead)")


def allowed_tokens(tokenizer, filter_tokens: bool) -> torch.Tensor:
    """(V,) bool: the tokens that may be shown (module docstring)."""
    if filter_tokens:
        mask = tokenizer.language_mask("en") | tokenizer.language_mask("fr")
    else:
        mask = np.ones(tokenizer.vocab_size, dtype=bool)
        mask[list(tokenizer.special_ids)] = False
    return torch.from_numpy(mask)


def token_language(tokenizer, token_id: int) -> str:
    en, fr = tokenizer.token_lang_counts[token_id]
    return "en" if en >= fr else "fr"


def token_category(tokenizer, token_id: int) -> str:
    return categorize(tokenizer.token_str(token_id), token_language(tokenizer, token_id))


def masked_topk(scores: torch.Tensor, allowed: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Indices of the k largest (or smallest) scores along the last axis among the allowed columns."""
    fill = float("-inf") if largest else float("inf")
    k = min(k, int(allowed.sum()))
    return scores.masked_fill(~allowed.to(scores.device), fill).topk(k, dim=-1, largest=largest).indices


def set_sense_labels(labels: list[str]) -> None:
    """Write a model's labels into SENSE_LABELS in place (first min(k, 16); the rest 'sense i')."""
    SENSE_LABELS[:] = [labels[i] if i < len(labels) else f"sense {i}" for i in range(len(SENSE_LABELS))]


# ----------------------------------------------------------------------------- sense labels

@torch.no_grad()
def label_senses(model, tokenizer, device, words=None, n_words=500, top_k=10, out_dir=None) -> list[dict]:
    """Derive a short label for every sense of `model` from its own predictions (LABEL_RULE).

    Probe words: `words` if given (OOV ones are skipped), else the n_words most frequent covered
    training words of each language (tokenizer.words), each distinct string once (a word of both
    languages, e.g. 'commission', has one vector). For each sense l, with every probe word's
    top_k EN/FR tokens of E C(w)_l pooled (n_probe * top_k occurrences):
      category, category_share: the most frequent word_classes category and its share;
      group, group_share: the same for the groups of LABEL_RULE;
      language_skew: {'en', 'fr'}: mean English / French share of the pooled tokens' training counts;
      examples: the 5 most frequent tokens of the dominant group (ties: lower id);
      entropy: mean over probe words of the softmax entropy (nats) of E C(w)_l over the full vocabulary.
    Returns [{'index', 'label', 'category', 'category_share', 'group', 'group_share', 'language_skew',
    'examples', 'entropy'}] (k entries), fills SENSE_LABELS, and writes out_dir/sense_labels.json
    ({'rule', 'probe_words', 'n_probe_words', 'top_k', 'senses'}) when out_dir is given."""
    require_backpack(model, "label_senses")
    if words is None:
        covered = {w: ids for lang in ("en", "fr") for w, ids in lexical.candidate_words(tokenizer, lang, n_words).items()}
    else:
        covered, _ = lexical.encode_words(tokenizer, words)
    if not covered:
        raise ValueError("label_senses: none of the probe words is in the model's vocabulary")
    C = lexical.word_vectors(model, list(covered.values()), device, "senses")  # (n, k, d), n ~ 2 * n_words
    E = model.input_embeddings().float()
    allowed = allowed_tokens(tokenizer, filter_tokens=True)
    counts = tokenizer.token_lang_counts
    en_share = counts[:, 0] / np.maximum(counts.sum(1), 1)
    senses = []
    for l in range(C.shape[1]):
        top, entropy = [], []
        for rows in C[:, l].split(256):  # (256, V) logits at a time
            logits = rows.to(device) @ E.T
            top += masked_topk(logits, allowed, top_k).flatten().tolist()
            entropy.append(metrics.softmax_entropy(logits))
        tokens = Counter(top)
        category_of = {t: token_category(tokenizer, t) for t in tokens}
        categories, groups = Counter(), Counter()
        for t, n in tokens.items():
            categories[category_of[t]] += n
            groups[GROUPS[category_of[t]]] += n
        category, n_category = categories.most_common(1)[0]
        group, n_group = groups.most_common(1)[0]
        in_group = sorted((t for t in tokens if GROUPS[category_of[t]] == group), key=lambda t: (-tokens[t], t))
        examples = [tokenizer.token_str(t) for t in in_group[:5]]
        skew = float(np.mean(en_share[top]))
        lang = "EN" if skew >= 2 / 3 else "FR" if skew <= 1 / 3 else "EN/FR"
        senses.append({"index": l, "label": f"{lang} {group}: {', '.join(examples[:3])}",
                       "category": category, "category_share": n_category / len(top),
                       "group": group, "group_share": n_group / len(top),
                       "language_skew": {"en": skew, "fr": 1 - skew}, "examples": examples,
                       "entropy": float(np.concatenate(entropy).mean())})
    set_sense_labels([s["label"] for s in senses])
    if out_dir is not None:
        Path(out_dir, "sense_labels.json").write_text(json.dumps(
            {"rule": LABEL_RULE, "probe_words": list(covered), "n_probe_words": len(covered), "top_k": top_k,
             "senses": senses}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return senses


def load_sense_labels(path) -> list[str]:
    """The labels of a sense_labels.json written by label_senses; also fills SENSE_LABELS."""
    labels = [s["label"] for s in json.loads(Path(path).read_text(encoding="utf-8"))["senses"]]
    set_sense_labels(labels)
    return labels


def resolve_labels(model, tokenizer, device, labels) -> list[str]:
    """k label strings: `labels` as given (strings or label_senses dicts), read from a sense_labels.json
    path, or (None) derived now with label_senses' defaults."""
    if labels is None:
        labels = [s["label"] for s in label_senses(model, tokenizer, device)]
    elif isinstance(labels, (str, os.PathLike)):
        labels = load_sense_labels(labels)
    else:
        labels = [s["label"] if isinstance(s, dict) else str(s) for s in labels]
    if len(labels) != model.config.n_senses:
        raise ValueError(f"{len(labels)} sense labels for a model with {model.config.n_senses} senses")
    return labels


# ----------------------------------------------------------------------------- per-word analysis

@torch.no_grad()
def analyze_sense_vectors(model, tokenizer, words, device, top_k=5, verbose=True, filter_tokens=True,
                          analyze_relatedness=True, analyze_syntax=True, labels=None) -> dict:
    """Analyse the k sense vectors C(x)_l of each word (a multi-piece word: the mean over its pieces).

    For each word and sense l:
      top / bottom: the top_k tokens with the highest / lowest logit in E C(x)_l, among the allowed
        tokens (module docstring: EN/FR only with filter_tokens; never tags/EOS);
      entropy: softmax entropy (nats, metrics.softmax_entropy) of E C(x)_l over the full vocabulary, in [0, ln V];
      nearest (analyze_relatedness): the top_k allowed tokens whose embedding row E_v has the highest
        cosine with C(x)_l;
      categories (analyze_syntax): word_classes category histogram of the top tokens.
    And per word: sense_cosine, the k x k cosines between its sense vectors (metrics.pairwise_cosine),
    and topk_overlap, the k x k Jaccard overlaps (metrics.topk_overlap) of the senses' top-token sets.
    labels: the k sense labels shown with each sense: a list (strings or label_senses dicts), a path
    to a sense_labels.json, or None to derive them now with label_senses (which fills SENSE_LABELS).
    A Transformer raises TypeError; an OOV word is listed in 'oov_words' and its entry has 'oov': True.

    Returns {'words': {word: {'pieces', 'ids', 'oov', 'senses': [{'sense', 'label', 'top', 'bottom',
    'entropy', 'nearest', 'categories'}], 'sense_cosine', 'topk_overlap'}}, 'oov_words', 'labels',
    'top_k', 'filter_tokens', 'n_allowed_tokens', 'max_entropy' (ln V)}; a token is {'id', 'token', 'score'}."""
    require_backpack(model, "analyze_sense_vectors")
    if isinstance(words, str):
        words = [words]
    labels = resolve_labels(model, tokenizer, device, labels)
    allowed = allowed_tokens(tokenizer, filter_tokens)
    E = model.input_embeddings().float()
    covered, oov = lexical.encode_words(tokenizer, words)
    vectors = lexical.word_vectors(model, list(covered.values()), device, "senses") if covered else None
    result = {"words": {}, "oov_words": oov, "labels": labels, "top_k": top_k, "filter_tokens": filter_tokens,
              "n_allowed_tokens": int(allowed.sum()), "max_entropy": math.log(tokenizer.vocab_size)}
    row = {w: i for i, w in enumerate(covered)}
    for word in dict.fromkeys(words):
        ids = tokenizer.encode_word(word.lower())
        entry = {"pieces": tokenizer.id_to_token(ids), "ids": ids, "oov": word in oov}
        if word in covered:
            entry.update(word_senses(vectors[row[word]], E, tokenizer, allowed, labels, top_k,
                                     analyze_relatedness, analyze_syntax, device))
        result["words"][word] = entry
    if verbose:
        print_analysis(result)
    return result


def word_senses(C, E, tokenizer, allowed, labels, top_k, analyze_relatedness, analyze_syntax, device) -> dict:
    """The per-word part of analyze_sense_vectors for one word's sense vectors C (k, d)."""
    C = C.to(device)
    logits = C @ E.T  # (k, V)
    top, bottom = masked_topk(logits, allowed, top_k), masked_topk(logits, allowed, top_k, largest=False)
    entropy = metrics.softmax_entropy(logits)
    if analyze_relatedness:
        cosines = torch.from_numpy(metrics.cosine_matrix(C, E))  # (k, V)
        nearest = masked_topk(cosines, allowed, top_k)

    def tokens(ids, scores):
        return [{"id": i, "token": tokenizer.token_str(i), "score": float(scores[i])} for i in ids.tolist()]

    senses = []
    for l in range(C.shape[0]):
        sense = {"sense": l, "label": labels[l], "top": tokens(top[l], logits[l]),
                 "bottom": tokens(bottom[l], logits[l]), "entropy": float(entropy[l])}
        if analyze_relatedness:
            sense["nearest"] = tokens(nearest[l], cosines[l])
        if analyze_syntax:
            sense["categories"] = dict(Counter(token_category(tokenizer, i) for i in top[l].tolist()).most_common())
        senses.append(sense)
    k = C.shape[0]
    overlap = [[metrics.topk_overlap(top[a], top[b]) for b in range(k)] for a in range(k)]
    return {"senses": senses, "sense_cosine": metrics.pairwise_cosine(C).tolist(), "topk_overlap": overlap}


def print_analysis(result: dict) -> None:
    """A compact, readable print-out of an analyze_sense_vectors result."""
    shown = "EN/FR tokens only" if result["filter_tokens"] else "all tokens but tags/EOS"
    print(f"sense analysis: top-{result['top_k']} tokens ({shown}, {result['n_allowed_tokens']} allowed); "
          f"entropy in nats, max ln V = {result['max_entropy']:.2f}")
    for word, entry in result["words"].items():
        pieces = " ".join(entry["pieces"]) or "(nothing)"
        if entry["oov"]:
            print(f"\n'{word}' [{pieces}]: OOV (a piece never occurred in training), skipped")
            continue
        print(f"\n'{word}' [{pieces}]")
        for s in entry["senses"]:
            print(f"  sense {s['sense']:>2} | {s['label']} | H={s['entropy']:.2f}")
            print(f"     next+ {', '.join(t['token'] for t in s['top'])}")
            print(f"     next- {', '.join(t['token'] for t in s['bottom'])}")
            if "nearest" in s:
                print(f"     near  {', '.join(t['token'] for t in s['nearest'])}")
            if "categories" in s:
                print(f"     cats  {', '.join(f'{c} {n}' for c, n in s['categories'].items())}")
        k = len(entry["senses"])
        off = ~np.eye(k, dtype=bool)
        print(f"  between senses: mean cosine {np.asarray(entry['sense_cosine'])[off].mean():.3f}, "
              f"mean top-{result['top_k']} overlap {np.asarray(entry['topk_overlap'])[off].mean():.3f}")


# ----------------------------------------------------------------------------- cross-lingual alignment

def alignment_pairs(tokenizer, gold: dict[str, set[str]]) -> tuple[list[tuple[str, str]], dict]:
    """(en, fr) pairs for cross_lingual_sense_alignment, in dictionary order (translations sorted):
    both words covered, not the same string, and each English and French word used once."""
    pairs, seen, counts = [], set(), Counter()
    for en in gold:
        for fr in sorted(gold[en]):
            counts["dictionary"] += 1
            if lexical.word_ids(tokenizer, en) is None or lexical.word_ids(tokenizer, fr) is None:
                counts["oov"] += 1
            elif en.lower() == fr.lower():
                counts["identical"] += 1
            elif ("en", en) in seen or ("fr", fr) in seen:
                counts["repeated"] += 1
            else:
                pairs.append((en, fr))
                seen.update({("en", en), ("fr", fr)})
    return pairs, counts


@torch.no_grad()
def cross_lingual_sense_alignment(model, tokenizer, device, dictionary=None, max_pairs=1000, seed=0) -> dict:
    """Are the senses of a word and of its translation alike? On MUSE en->fr test pairs (default
    muse_en_fr, or any `source target` dictionary file) with both words covered, different strings
    (identical strings share ids, hence vectors) and each English and French word used once, the
    first max_pairs in dictionary order: for each sense l, metrics.retrieval_scores on the rows
    C(en_i)_l and C(fr_i)_l: mean_true_cos (mean cosine of the translation pairs), mean_random_cos
    (of shuffled pairs, a derangement seeded by `seed`), margin = their difference, and P@1 of
    finding the translation among the n pairs (p@1_x2y: en->fr, p@1_y2x: fr->en). The same for the
    mean sense vector and for the input embeddings (the baseline).

    Returns {'scores': {rep: {...}}, 'n_pairs', 'n_dictionary_pairs', 'n_oov_pairs',
    'n_identical_excluded', 'n_repeated_excluded', 'dictionary', 'seed'}."""
    require_backpack(model, "cross_lingual_sense_alignment")
    path = dictionary or eval_data.default_path("muse_en_fr")
    pairs, counts = alignment_pairs(tokenizer, eval_data.read_dictionary(path))
    pairs = pairs[:max_pairs]
    if len(pairs) < 2:
        raise ValueError(f"cross-lingual sense alignment needs >= 2 usable pairs from {path}, got {len(pairs)}")
    en_ids = [lexical.word_ids(tokenizer, en) for en, _ in pairs]
    fr_ids = [lexical.word_ids(tokenizer, fr) for _, fr in pairs]
    scores = {rep: metrics.retrieval_scores(lexical.word_vectors(model, en_ids, device, rep),
                                            lexical.word_vectors(model, fr_ids, device, rep), seed)
              for rep in lexical.representation_names(model)}
    return {"scores": scores, "n_pairs": len(pairs), "n_dictionary_pairs": counts["dictionary"],
            "n_oov_pairs": counts["oov"], "n_identical_excluded": counts["identical"],
            "n_repeated_excluded": counts["repeated"], "dictionary": str(path), "seed": seed}
