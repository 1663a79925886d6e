"""The held-out split: from the raw pairs of fetch.py to train / valid / test. Pairs with an empty side
are dropped; valid/test come from the source's own files, or are drawn by seed from the train pairs;
every train pair repeating a held-out sentence is dropped, then --max_pairs is applied."""
import numpy as np

from common import PrepareError
from fetch import Pairs, read_source


def load_splits(source, src_dir, dataset, max_pairs, seed, heldout_pairs):
    """{'train', 'valid', 'test'} -> Pairs, plus a description for meta.json. Deterministic given the
    arguments, so segregate_languages.py can rebuild exactly the same pairs."""
    raw, files, location = read_source(source, src_dir, dataset)
    read_counts = {name: len(pairs) for name, pairs in raw.items()}
    dropped_empty = 0
    for name in raw:
        raw[name], dropped = drop_empty(raw[name])
        dropped_empty += dropped
    for name, pairs in raw.items():
        if not pairs:
            raise PrepareError(f"corpus empty after filtering: no {name} pair with both sides non-empty "
                               f"in {', '.join(files[name])} ({location})")
    if "train" not in raw:
        raise PrepareError(f"no training pairs in {location}: only {', '.join(sorted(raw))}")

    rng = np.random.default_rng([seed, 0])
    heldout_from = "files"
    missing = [name for name in ("valid", "test") if name not in raw]
    if missing:
        heldout_from = f"{', '.join(missing)} split off the train pairs by seed"
        raw.update(split_off(raw["train"], missing, heldout_pairs, rng))

    train, dropped_overlap = drop_heldout_overlap(raw["train"], [raw["valid"], raw["test"]])
    if not len(train):
        raise PrepareError("corpus empty after filtering: every train pair repeats a valid/test sentence")
    if max_pairs and len(train) > max_pairs:
        train = train.select(np.sort(rng.permutation(len(train))[:max_pairs]))

    splits = {"train": train, "valid": raw["valid"], "test": raw["test"]}
    source_meta = {"kind": source, "dataset": location if source == "hf" else None,
                   "src_dir": None if source == "hf" else location, "files": files,
                   "max_pairs": max_pairs, "seed": seed, "heldout_pairs": heldout_pairs,
                   "heldout_from": heldout_from, "pairs_read": read_counts, "dropped_empty": dropped_empty,
                   "dropped_overlap": dropped_overlap, "pairs": {k: len(v) for k, v in splits.items()}}
    print(f"pairs: train {len(train):,} (dropped {dropped_overlap:,} repeating a valid/test sentence, "
          f"{dropped_empty:,} with an empty side), valid {len(raw['valid']):,}, test {len(raw['test']):,}")
    return splits, source_meta


def drop_empty(pairs):
    """Strip surrounding whitespace (XLM-R would not give it back) and drop pairs with an empty side."""
    en = [text.strip() for text in pairs.en]
    fr = [text.strip() for text in pairs.fr]
    keep = [i for i in range(len(en)) if en[i] and fr[i]]
    return Pairs(en, fr).select(keep), len(en) - len(keep)


def split_off(pool, names, heldout_pairs, rng):
    """Held-out splits for a source that has none: random pairs, by seed, kept in corpus order. Returns
    them and the remaining pairs as "train" (duplicates of a held-out pair are dropped from it later)."""
    n = min(heldout_pairs, len(pool) // 10)
    if n == 0:
        raise PrepareError(f"only {len(pool)} pairs: too few to split off {' and '.join(names)}; "
                           "provide valid/test files or more pairs")
    order = rng.permutation(len(pool))
    out = {name: pool.select(np.sort(order[k * n:(k + 1) * n])) for k, name in enumerate(names)}
    out["train"] = pool.select(np.sort(order[len(names) * n:]))
    return out


def drop_heldout_overlap(train, heldout):
    """Drop every train pair whose English or French side equals a valid/test side (boilerplate such as
    'The debate is closed.' would otherwise be seen in training and then scored as held-out)."""
    en = {text for pairs in heldout for text in pairs.en}
    fr = {text for pairs in heldout for text in pairs.fr}
    keep = [i for i in range(len(train)) if train.en[i] not in en and train.fr[i] not in fr]
    return train.select(keep), len(train) - len(keep)
