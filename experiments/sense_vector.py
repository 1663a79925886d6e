"""
The sense analysis of chosen words, English or French, from the command line:

    python experiments/sense_vector.py --out_dir out/tiny_backpack --words bank droit parlement
    python experiments/sense_vector.py --out_dir out/tiny_backpack --lang fr --top_k 8 --json senses_fr.json

It prints, for each word and each of its k senses, the sense's derived label, the tokens the sense pushes
up and down most (top/bottom of the logits E·C(w)_l), the tokens whose embeddings are nearest to C(w)_l,
their word classes and the entropy; then the mean cosine and top-k overlap between the word's senses. The
analysis is experiments/senses.py's analyze_sense_vectors (its docstring defines every number); this file
adds the command line and each word's training counts.

Words are lower-cased and encoded as inside a sentence; a word of several pieces gets the mean of its
pieces' sense vectors; a word with a piece never seen in training is OOV and said so. The tokenizer is
bilingual, so a word is not tagged with a language: its counts on the English and on the French side of
the training pairs (words.json) show which it belongs to ('commission' has both). Without --words: the
probe words (experiments.senses.PROBE_WORDS) of --lang, or of both languages.

Labels: out_dir/sense_labels.json (written by run_full_evaluation.py) when it is there, else derived now
from the model by label_senses (nothing is written into out_dir). Shown tokens are the English and French
ones (seen >= 3 times in training, at least half of the time on that side); --all_tokens shows every
token but the tags and EOS. --json PATH also writes the analysis as JSON ('-': to stdout, instead of the
text).
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402,F401  (before torch)
import outdir  # noqa: E402
from checkpoint import save_json  # noqa: E402
from errors import MissingFileError, UserError, resolve_device, run_main  # noqa: E402
from experiments import senses  # noqa: E402
from model import is_backpack  # noqa: E402


def training_counts(tok, words):
    """{word: {'en': n, 'fr': n}}: how often each lower-cased word occurs on each side of the training
    pairs (words.json; 0 when absent)."""
    try:
        counts = {lang: dict(tok.words(lang)) for lang in ('en', 'fr')}
    except FileNotFoundError as e:
        raise MissingFileError(str(e)) from None
    return {w: {lang: counts[lang].get(w.lower(), 0) for lang in ('en', 'fr')} for w in words}


def sense_labels(model, tok, out_dir, device, labels_path=None):
    """(k labels, where they came from): --labels, out_dir/sense_labels.json, or label_senses now."""
    path = labels_path or os.path.join(out_dir, 'sense_labels.json')
    if labels_path and not os.path.isfile(labels_path):
        raise MissingFileError(f"--labels {labels_path} not found (run_full_evaluation.py writes sense_labels.json)")
    if os.path.isfile(path):
        labels = senses.load_sense_labels(path)
        if len(labels) != model.config.n_senses:
            raise UserError(f"{path} has {len(labels)} labels but the model in {out_dir} has "
                            f"{model.config.n_senses} senses: it comes from another model "
                            "(rerun run_full_evaluation.py)")
        return labels, str(path)
    return [s['label'] for s in senses.label_senses(model, tok, device)], 'label_senses (derived now)'


def print_counts(counts, analysis):
    print(f"{'word':<20} {'EN count':>9} {'FR count':>9}  pieces")
    for word, c in counts.items():
        print(f"{word:<20} {c['en']:>9} {c['fr']:>9}  {' '.join(analysis['words'][word]['pieces'])}")
    print()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a Backpack training out_dir (best.pt or ckpt.pt)')
    p.add_argument('--words', nargs='+', help='words to analyse, English or French (default: the probe words)')
    p.add_argument('--lang', choices=['en', 'fr'], help='without --words: the probe words of this language only')
    p.add_argument('--top_k', type=int, default=5, help='tokens shown per list (top, bottom, nearest)')
    p.add_argument('--all_tokens', action='store_true', help='show every token but tags/EOS, not only EN/FR ones')
    p.add_argument('--labels', help='a sense_labels.json (default: out_dir/sense_labels.json, else derived now)')
    p.add_argument('--json', help="also write the analysis as JSON to this file ('-': stdout, instead of the text)")
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error('--top_k must be at least 1')
    if args.words and args.lang:
        p.error('--lang selects probe words: give --words or --lang, not both')
    device = resolve_device(args.device)

    model, _ = outdir.load_model(args.out_dir, device)
    if not is_backpack(model):
        raise UserError(f"{args.out_dir} holds a {model.info['model_type']}, which has no sense vectors: "
                        "give a Backpack's out_dir")
    tok = outdir.load_tokenizer(args.out_dir)
    words = args.words or [w for lang in ([args.lang] if args.lang else ['en', 'fr']) for w in senses.PROBE_WORDS[lang]]
    words = list(dict.fromkeys(words))
    labels, labels_from = sense_labels(model, tok, args.out_dir, device, args.labels)
    counts = training_counts(tok, words)
    to_stdout = args.json == '-'
    analysis = senses.analyze_sense_vectors(model, tok, words, device, top_k=args.top_k, verbose=False,
                                            filter_tokens=not args.all_tokens, labels=labels)
    if not to_stdout:
        print(f"{args.out_dir}: iteration {model.info['iter_num']}, {model.config.n_senses} senses; "
              f"labels from {labels_from}\n")
        print_counts(counts, analysis)
        senses.print_analysis(analysis)
    if args.json:
        record = outdir.to_json({'out_dir': str(args.out_dir), 'iter_num': model.info['iter_num'],
                                   'checkpoint': model.info['checkpoint'], 'labels_from': labels_from,
                                   'training_counts': counts, **analysis})
        if to_stdout:
            print(json.dumps(record, ensure_ascii=False, indent=1))
        else:
            save_json(record, args.json)
            print(f"\nwrote {args.json}")


if __name__ == '__main__':
    run_main(main)
