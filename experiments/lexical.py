"""Word-level evaluation of a model's static word vectors: word similarity (Multi-SimLex EN / FR, the
EN–FR reconstruction, SimLex-999, any `word1 word2 score` file) and bilingual lexicon induction (MUSE).

Word vectors. A word is lower-cased (the bundled data sets and the training word list words.json are
lower-case) and encoded as inside a sentence, ids = tokenizer.encode_word(word). It is OOV when it
encodes to nothing or when any of its pieces never occurred in the training pairs (its
token_lang_counts row is 0, so its embedding and senses were never trained); OOV words are counted
and excluded, never replaced. A word of several pieces gets the mean of its pieces' vectors (as
Hewitt et al. do for multi-subword words); a multi-word entry such as 'petit déjeuner' is encoded as
one string, so it gets the mean over the pieces of all its words.

The representations, named as in the results. Each word-similarity one but mean_sense is the Backpack
paper's (Hewitt et al. 2023, lexical similarity, eq. 14) and is computed as their evaluation code
computes it (get_similarity_fns of their word-similarity script), named here in brackets:

    sense_l     Sim_l(w, w') = cos(C(w)_l, C(w')_l), one sense at a time [CosSense{l}]
    sim_min     Sim_min(w, w') = min_l cos(C(w)_l, C(w')_l), eq. 14: the *smallest* of the k matched-sense
                cosines [MinPair: the min of the diagonal of the k x k sense cosine matrix]
    sim_max     max_l cos(C(w)_l, C(w')_l), the largest matched-sense cosine [MaxPair]; not in the
                paper's tables, reported beside sim_min
    flat        Cos: the cosine of the k*d concatenations [C(w)_0; ...; C(w)_{k-1}] [Cos]
    mean_sense  cos of the mean sense vectors (1/k) sum_l C(w)_l. Not a paper representation: ours, and the
                one named in advance as the Backpack's headline (HEADLINE_REPRESENTATION), so that no
                representation is picked on the test pairs
    embedding   cos of E(w), the rows of the tied input/output embedding: the paper's "softmax embedding"
                baseline [the lm_head rows], and the only representation of a StandardTransformerLM

BLI uses sense_l, mean_sense and embedding.

Similarity between two words is the cosine of their vectors; the word-similarity score of a
representation is Spearman's rho (metrics.spearman) between those cosines and the gold scores over the
pairs whose two words are covered.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments import eval_data, metrics
from model import is_backpack

XLING_RULE = ("EN-FR pairs rebuilt from Multi-SimLex EN and FR: for each concept pair (a, b) the two "
              "mixed pairs (a_EN, b_FR) and (a_FR, b_EN), kept when |EN score - FR score| <= max_abs_diff "
              "and scored with the mean of the two scores (eval_data.cross_lingual_pairs)")
BLI_CANDIDATES = ("target candidates: the target-language words of the training pairs (words.json), most "
                  "frequent first, skipping OOV words, at most max_candidates")
# the Backpack's word-similarity representation compared with the embedding, fixed before looking at any score
HEADLINE_REPRESENTATION = "mean_sense"
MULTISIMLEX_FILES = {"en": "multisimlex_en", "fr": "multisimlex_fr", "en-fr": "xling_en_fr", "simlex999": "simlex999"}


# ----------------------------------------------------------------------------- word vectors

def word_ids(tokenizer, word: str) -> list[int] | None:
    """The ids of a lower-cased word as it appears inside a sentence, or None when it is OOV (encodes
    to nothing, or a piece never occurred in the training pairs)."""
    ids = tokenizer.encode_word(word.lower())
    if not ids or (tokenizer.token_lang_counts[ids].sum(1) == 0).any():
        return None
    return ids


def encode_words(tokenizer, words) -> tuple[dict[str, list[int]], list[str]]:
    """({word: ids} of the covered words, sorted list of the OOV words) for the distinct `words`."""
    covered, oov = {}, []
    for word in dict.fromkeys(words):
        ids = word_ids(tokenizer, word)
        if ids is None:
            oov.append(word)
        else:
            covered[word] = ids
    return covered, sorted(oov)


def representation_names(model, word_similarity=False) -> list[str]:
    """The representations of `model`, in the order results list them (see the module docstring)."""
    if not is_backpack(model):
        return ["embedding"]
    senses = [f"sense_{l}" for l in range(model.config.n_senses)]
    return senses + (["sim_min", "sim_max", "flat"] if word_similarity else []) + ["mean_sense", "embedding"]


@torch.no_grad()
def word_vectors(model, ids_list: list[list[int]], device, rep: str = "senses", chunk: int = 4096) -> torch.Tensor:
    """float32 CPU vectors of words given by their ids, each the mean of its pieces' vectors.

    rep: 'senses' -> (n, k, d) every sense vector; 'sense_l' -> (n, d) sense l; 'mean_sense' -> (n, d);
    'embedding' -> (n, d) rows of E. The sense network runs once per distinct piece, `chunk` pieces
    at a time, and only the requested representation is kept, so a single sense of many words never
    needs the (n, k, d) tensor."""
    pieces = sorted({i for ids in ids_list for i in ids})
    piece_ids = torch.tensor(pieces, dtype=torch.long, device=device)
    table = []
    for c in piece_ids.split(chunk):
        if rep == "embedding":
            v = model.input_embeddings()[c]
        else:
            C = model.sense_vectors(c)
            if rep == "senses":
                v = C
            elif rep == "mean_sense":
                v = C.mean(1)
            elif rep.startswith("sense_"):
                v = C[:, int(rep.removeprefix("sense_"))]
            else:
                raise ValueError(f"unknown representation {rep!r}")
        table.append(v.float().cpu())
    table = torch.cat(table)
    position = {p: i for i, p in enumerate(pieces)}
    rows = torch.tensor([position[i] for ids in ids_list for i in ids], dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids in ids_list], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(ids_list)), lengths)
    sums = torch.zeros(len(ids_list), *table.shape[1:]).index_add_(0, owner, table[rows])
    return sums / lengths.view(-1, *[1] * (table.dim() - 1))


def row_cosines(A, B) -> np.ndarray:
    """cos(A[i], B[i]) for every row i (a zero row gives 0)."""
    return (metrics.normalize_rows(metrics.as_matrix(A)) * metrics.normalize_rows(metrics.as_matrix(B))).sum(-1).numpy()


# ----------------------------------------------------------------------------- word similarity

def pair_similarities(model, ids_1, ids_2, device) -> dict[str, np.ndarray]:
    """{representation: cosine of each word pair (ids_1[i], ids_2[i])}, see the module docstring."""
    if not is_backpack(model):
        return {"embedding": row_cosines(word_vectors(model, ids_1, device, "embedding"),
                                         word_vectors(model, ids_2, device, "embedding"))}
    C1, C2 = word_vectors(model, ids_1, device, "senses"), word_vectors(model, ids_2, device, "senses")
    per_sense = np.stack([row_cosines(C1[:, l], C2[:, l]) for l in range(C1.shape[1])])  # (k, n)
    sims = {f"sense_{l}": per_sense[l] for l in range(len(per_sense))}
    sims["sim_min"] = per_sense.min(0)  # eq. 14: the least similar matched sense
    sims["sim_max"] = per_sense.max(0)
    sims["flat"] = row_cosines(C1.flatten(1), C2.flatten(1))
    sims["mean_sense"] = row_cosines(C1.mean(1), C2.mean(1))
    sims["embedding"] = row_cosines(word_vectors(model, ids_1, device, "embedding"),
                                    word_vectors(model, ids_2, device, "embedding"))
    return sims


def evaluate_word_similarity(model, tokenizer, device, pairs) -> dict:
    """Spearman rho between the model's cosine similarities and the gold scores of `pairs`
    [(word1, word2, gold)], for every representation of the model (module docstring), over the
    pairs whose two words are covered.

    Returns {'spearman': {rep: rho}, 'p_value': {rep: p}, 'spearman_ci': {rep: bootstrap_ci over the
    covered pairs} (every representation but the single senses), 'pairs', 'gold', 'cosines' (per
    covered pair: what a paired comparison resamples), 'n_pairs', 'n_covered', 'n_oov_pairs',
    'oov_words' (sorted distinct OOV words), 'n_words' (distinct words), 'multi_piece_share'
    (fraction of the distinct covered words that are more than one piece), 'multi_piece_words'}.
    rho is nan when a representation gives every pair the same cosine. Fewer than 2 covered pairs
    raises ValueError."""
    pairs = list(pairs)
    covered, oov = encode_words(tokenizer, [w for w1, w2, _ in pairs for w in (w1, w2)])
    kept = [(w1, w2, gold) for w1, w2, gold in pairs if w1 in covered and w2 in covered]
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of {len(pairs)} word pairs have both words in the vocabulary "
                         f"(OOV: {', '.join(oov[:20])}{' ...' if len(oov) > 20 else ''}); Spearman needs 2")
    sims = pair_similarities(model, [covered[w1] for w1, _, _ in kept], [covered[w2] for _, w2, _ in kept], device)
    gold = [g for _, _, g in kept]
    scores = {rep: metrics.spearman(sims[rep], gold) for rep in representation_names(model, word_similarity=True)}
    multi = sorted(w for w, ids in covered.items() if len(ids) > 1)
    return {"spearman": {rep: s["rho"] for rep, s in scores.items()},
            "p_value": {rep: s["p"] for rep, s in scores.items()},
            "spearman_ci": {rep: metrics.bootstrap_ci(metrics.spearman_stat(sims[rep], gold), len(gold))
                            for rep in scores if not rep.startswith("sense_")},
            # per covered pair, for paired comparisons of two models on the same pairs (compare_models)
            "pairs": [[w1, w2] for w1, w2, _ in kept], "gold": gold,
            "cosines": {rep: [float(c) for c in sims[rep]] for rep in scores},
            "n_pairs": len(pairs), "n_covered": len(kept), "n_oov_pairs": len(pairs) - len(kept),
            "oov_words": oov, "n_words": len(covered) + len(oov),
            "multi_piece_share": len(multi) / len(covered), "multi_piece_words": multi}


def word_similarity_pairs(key: str, path, max_abs_diff: float) -> tuple[list, str]:
    """(pairs, rule) of one word-similarity data set. For 'en-fr', a Multi-SimLex candidates file
    (header `id pos direction eng_word ...`) goes through eval_data.cross_lingual_pairs with
    max_abs_diff; any other file (every key) is read as a `word1 word2 score` file."""
    first = eval_data.read_lines(path, "word-pair")[:1]
    if key == "en-fr" and first and eval_data.split_fields(first[0]) == eval_data.XLING_COLUMNS:
        return eval_data.cross_lingual_pairs(path, max_abs_diff), XLING_RULE
    return eval_data.read_word_pairs(path), "pairs and scores as given in the file"


def evaluate_multisimlex(model, tokenizer, device, languages=("en", "fr"), cross_lingual=True, paths=None,
                         max_abs_diff=1.0, simlex999=True) -> dict:
    """Word similarity on Multi-SimLex EN and FR (one per entry of `languages`), the EN–FR
    reconstruction (cross_lingual; see XLING_RULE, threshold max_abs_diff on the 0–6 scale) and
    SimLex-999 EN (simlex999). `paths` maps any of the keys 'en', 'fr', 'en-fr', 'simlex999' to another
    file (`word1 word2 score`, or for 'en-fr' also a candidates file); the default is the bundled copy
    (eval_data.default_path). A missing or malformed file raises (there are no fallback pairs).

    Returns {key: evaluate_word_similarity(...) + {'path', 'rule'}}; the reconstructed 'en-fr' also has
    'max_abs_diff'."""
    paths = dict(paths or {})
    unknown = set(paths) - set(MULTISIMLEX_FILES)
    if unknown:
        raise KeyError(f"unknown word-similarity key(s) {sorted(unknown)}; known: {list(MULTISIMLEX_FILES)}")
    if not set(languages) <= {"en", "fr"}:
        raise ValueError(f"unknown language in {languages!r}; Multi-SimLex here has 'en' and 'fr'")
    keys = list(languages) + (["en-fr"] if cross_lingual else []) + (["simlex999"] if simlex999 else [])
    results = {}
    for key in keys:
        path = paths.get(key) or eval_data.default_path(MULTISIMLEX_FILES[key])
        pairs, rule = word_similarity_pairs(key, path, max_abs_diff)
        results[key] = {**evaluate_word_similarity(model, tokenizer, device, pairs), "path": str(path), "rule": rule}
        if rule == XLING_RULE:
            results[key]["max_abs_diff"] = max_abs_diff
    return results


def evaluate_word_pair_files(model, tokenizer, device, files) -> dict:
    """Word similarity on any `word1 word2 score` files (evaluate.py --word_pairs): {file stem:
    evaluate_word_similarity(...) + {'path', 'rule'}}. Two files with the same stem raise ValueError."""
    results = {}
    for path in files:
        name = Path(path).stem
        if name in results or name in MULTISIMLEX_FILES:
            raise ValueError(f"--word_pairs {path}: another data set is already called {name!r}; rename the file")
        pairs = eval_data.read_word_pairs(path)
        results[name] = {**evaluate_word_similarity(model, tokenizer, device, pairs), "path": str(path),
                         "rule": "pairs and scores as given in the file"}
    return results


# ----------------------------------------------------------------------------- lexicon induction

def candidate_words(tokenizer, lang: str, max_candidates: int) -> dict[str, list[int]]:
    """{word: ids} of the covered words of the `lang` side of the training pairs (words.json), most
    frequent first, at most max_candidates."""
    words = {}
    for word, _ in tokenizer.words(lang):
        if len(words) == max_candidates:
            break
        ids = word_ids(tokenizer, word)
        if ids is not None:
            words[word] = ids
    return words


def evaluate_bli(model, tokenizer, device, directions=("en-fr", "fr-en"), dictionaries=None,
                 max_candidates=20000, csls_k=10) -> dict:
    """Bilingual lexicon induction: translate each covered source word of a test dictionary by its
    nearest target candidate, for each representation ('sense_l', 'mean_sense', 'embedding'; a
    Transformer has 'embedding' only).

    Dictionaries: MUSE en-fr / fr-en 5000-6500 test sets by default; `dictionaries` maps a direction
    to any `source target` file. Source and target words are lower-cased. Queries: the dictionary's
    source words that are covered, sorted. Candidates: BLI_CANDIDATES. Scores: cosine, and CSLS
    (metrics.csls_scores, k = csls_k) whose source side S is the covered source-language training
    words (same rule and cap as the candidates) plus the queries not among them. Each query's 5 best
    candidates (ties by lower index) come from metrics.bli_rankings, which ranks as the dense float64
    score matrices do without building them. P@1, P@5 by metrics.precision_from_ranking: a hit when
    a gold translation is among the top k candidates; the denominator is all queries, including
    those whose translations are not candidates.

    Copy baseline: a word and its identical-string translation (MUSE has many: names, 'commission')
    encode to the same ids, hence the same vectors, so they are found at cosine 1 by any
    representation. n_identical counts the queries with their own string among their gold
    translations and the candidates; copy_p_at_1 = n_identical / n_queries is the P@1 of
    "translate a word by itself", the floor to compare every P@1 with. The non-identical queries
    are those whose gold translations do not contain their own spelling; on them the copy baseline
    is 0 by construction (its one guess, the query itself, is never gold), so p@1_non_identical
    measures translation beyond copying.

    Returns {direction: {'cosine': {rep: scores}, 'csls': {rep: scores}, 'queries' (sorted list of str),
    'non_identical' (ascending indices into queries), 'n_non_identical', 'dictionary',
    'n_dictionary_words', 'n_queries', 'coverage' (n_queries / n_dictionary_words), 'n_reachable'
    (queries with a gold translation among the candidates), 'n_identical', 'copy_p_at_1',
    'copy_p_at_1_non_identical' (0.0), 'n_candidates', 'n_source_words' (rows of S), 'candidates',
    'max_candidates', 'csls_k'}}, where scores = {'p@1', 'p@5', 'p@1_ci' (metrics.bootstrap_ci over the
    queries), 'hits@1', 'hits@5' (1/0 per query, in queries order; P@k is their mean),
    'p@1_non_identical' (mean of hits@1 over non_identical; None when there is none),
    'p@1_non_identical_ci' (its bootstrap_ci; None under 2 such queries)}. Memory and time: one
    representation at a time, (words, d) matrices; no score matrix is built (float32 tiles of 512 x 2048
    scores, float64 for the few best groups of each row), and one product of the two directions' source
    sides serves both directions' r_S (target_hubness)."""
    dictionaries = dict(dictionaries or {})
    tasks, ids_of = {}, {}
    candidates = {lang: candidate_words(tokenizer, lang, max_candidates)
                  for lang in dict.fromkeys(lang for direction in directions for lang in direction.split("-"))}
    for direction in directions:
        src, tgt = direction.split("-")
        path = dictionaries.get(direction) or eval_data.default_path(f"muse_{src}_{tgt}")
        gold = {}
        for s, targets in eval_data.read_dictionary(path).items():
            gold.setdefault(s.lower(), set()).update(t.lower() for t in targets)
        covered, _ = encode_words(tokenizer, gold)
        if not covered:
            raise ValueError(f"no source word of {path} is in the model's vocabulary")
        queries = sorted(covered)
        source_vocab, targets = candidates[src], candidates[tgt]
        source = list({**source_vocab, **covered})
        position = {w: i for i, w in enumerate(source)}
        tasks[direction] = dict(path=path, gold=gold, queries=queries, source=source, targets=list(targets),
                                rows=[position[w] for w in queries],
                                non_identical=[i for i, q in enumerate(queries) if q not in gold[q]])
        ids_of.update({**source_vocab, **covered, **targets})
    words = list(ids_of)
    index = {w: i for i, w in enumerate(words)}
    ids_list = list(ids_of.values())

    results = {direction: {"cosine": {}, "csls": {}} for direction in directions}
    for rep in representation_names(model):
        vectors = word_vectors(model, ids_list, device, rep)
        r_s = target_hubness(vectors, index, tasks, csls_k)
        for direction, t in tasks.items():
            S = vectors[[index[w] for w in t["source"]]]
            T = vectors[[index[w] for w in t["targets"]]]
            ranked = metrics.bli_rankings(S, T, t["rows"], csls_k, r_s=r_s[direction])
            for method in ("cosine", "csls"):
                p = metrics.precision_from_ranking(ranked[method].tolist(), t["queries"], t["targets"], t["gold"])
                results[direction][method][rep] = bli_scores(p, t["non_identical"])
            t["coverage"] = p
    for direction, t in tasks.items():
        p, targets = t["coverage"], set(t["targets"])
        n_identical = sum(q in t["gold"][q] and q in targets for q in t["queries"])
        results[direction].update(
            dictionary=str(t["path"]), n_dictionary_words=p["n_gold"], n_queries=p["n_covered"], queries=t["queries"],
            non_identical=t["non_identical"], n_non_identical=len(t["non_identical"]),
            coverage=p["n_covered"] / p["n_gold"], n_reachable=p["n_reachable"], n_identical=n_identical,
            copy_p_at_1=n_identical / p["n_covered"], copy_p_at_1_non_identical=0.0, n_candidates=len(t["targets"]),
            n_source_words=len(t["source"]), candidates=BLI_CANDIDATES, max_candidates=max_candidates, csls_k=csls_k)
    return results


def target_hubness(vectors, index, tasks, k) -> dict:
    """{direction: r_S of each of its targets} (CSLS's mean cosine of a target to its k nearest source
    words), two directions at a time: the targets of src-tgt lead the source words of tgt-src (both are
    candidate_words(tgt)) and the other way round, so one product of the two source sides gives both
    directions' r_S (metrics.mean_topk_both). A direction without its reverse pairs its source words
    with its targets."""
    r_s = {}
    for direction, t in tasks.items():
        if direction in r_s:
            continue
        src, tgt = direction.split("-")
        back = tasks.get(f"{tgt}-{src}")
        other = back["source"] if back else t["targets"]
        assert other[:len(t["targets"])] == t["targets"]  # targets lead the other side, as both are candidate_words
        A, B = (metrics.normalize_rows(metrics.as_matrix(vectors[[index[w] for w in words]]))
                for words in (t["source"], other))
        r_a, r_b = metrics.mean_topk_both(A, B, k)
        r_s[direction] = r_b[:len(t["targets"])]
        if back:
            r_s[f"{tgt}-{src}"] = r_a[:len(back["targets"])]
    return r_s


def bli_scores(p: dict, non_identical: list[int]) -> dict:
    """The scores evaluate_bli keeps of a precision_from_ranking result p: P@1, P@5, the P@1 interval,
    the per-query hits, and P@1 over the queries `non_identical` (indices) with its interval:
    p@1_non_identical = mean_{i in non_identical} hits@1[i] (None for no such query)."""
    hits = [p["hits@1"][i] for i in non_identical]
    return {"p@1": p["p@1"], "p@5": p["p@5"], "p@1_ci": p["p@1_ci"], "hits@1": p["hits@1"], "hits@5": p["hits@5"],
            "p@1_non_identical": sum(hits) / len(hits) if hits else None,
            "p@1_non_identical_ci": metrics.bootstrap_ci(metrics.mean_stat(hits), len(hits)) if len(hits) > 1 else None}
