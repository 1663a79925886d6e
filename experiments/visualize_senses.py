"""
Pictures of a Backpack's senses, and a sense explorer that opens in any browser, offline:

    python experiments/visualize_senses.py --out_dir out/tiny_backpack
    python experiments/visualize_senses.py --out_dir out/tiny_backpack --words bank droit --n_words 3000 --output viz/

Writes into --output (default: out_dir/senses/):
  senses_<word>.png     the senses x top next tokens of each --words word (default: the probe words,
                        experiments.senses.PROBE_WORDS, of both languages), as in run_full_evaluation.py;
  alpha_<i>_<lang>.png  the contextualization weights α of every sense over the stored example sentences:
                        the first --n_sentences held-out test pairs (out_dir/test.en, test.fr) whose two
                        sides have 6 to 14 words and fit the context, the English and the French side each;
  sense_explorer.html   one self-contained page (its data is JSON inside it: no network, no CDN):
                        - search a word, English or French: its k senses, each with its derived label and
                          the --top_k tokens it pushes up most and least (E·C(w)_l), coloured by language;
                        - the word's cross-lingual neighbours (bilingual lexicon induction);
                        - the α heatmaps of the example sentences, both languages side by side;
                        - the sense-role heatmaps (experiments/sense_roles.py): mean cos(C(en)_l, C(fr)_m)
                          over MUSE translation pairs and over shuffled pairs.

The explorer holds the --n_words most frequent covered words of each language of the training pairs
(out_dir/words.json: counted on each side of the training pairs; a word of both lists is held once); any
other word is one `experiments/sense_vector.py --words WORD` away. What each part means:
  senses      as experiments/senses.py's analyze_sense_vectors: a word's vector C(w)_l is the mean over its
              pieces; top/bottom among the English and French tokens (seen >= 3 times in training, at least
              half of the time on that side), strongest first. (Entropies: experiments/sense_vector.py.)
  labels      out_dir/sense_labels.json (run_full_evaluation.py) when it is there, else derived now by
              label_senses (nothing is written into out_dir).
  colours     a token's language by its training counts: EN when >= 2/3 of its occurrences were on the
              English side, FR when <= 1/3, else both (the thresholds of senses.LABEL_RULE).
  neighbours  the --n_neighbours best words of the other language's list by CSLS (k = 10), with the mean
              sense vector and with the input embedding, the two representations BLI reports
              (experiments/lexical.py); a ✓ marks a translation in the MUSE test dictionary.
  α           model.contextualization over `<lang> sentence`: row i = the weights position i gives to
              positions j <= i for one sense (each row sums to 1).
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import outdir  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from errors import MissingFileError, UserError, resolve_device, run_main, warn  # noqa: E402
from experiments import eval_data, lexical, metrics, plots, sense_roles, senses  # noqa: E402
from experiments.sense_vector import sense_labels, training_counts  # noqa: E402
from model import is_backpack  # noqa: E402

TEMPLATE_DIR = Path(__file__).resolve().parent / 'explorer'
REPRESENTATIONS = ('mean_sense', 'embedding')  # the two of evaluate_bli's headline rows
SENSE_LAYOUT = ['top ids', 'bottom ids']  # one word's sense l in the page's data


def token_language(en_count, fr_count):
    """'en', 'fr' or 'both' by the English share of a token's training occurrences (module docstring)."""
    share = en_count / max(en_count + fr_count, 1)
    return 'en' if share >= 2 / 3 else 'fr' if share <= 1 / 3 else 'both'


def example_sentences(out_dir, tok, block_size, n):
    """The first n (english, french) held-out test pairs whose two sides have 6 to 14 words and fit the
    model's context (`<lang> sentence` at most block_size tokens: nothing is cut)."""
    paths = [os.path.join(out_dir, f'test.{lang}') for lang in ('en', 'fr')]
    for path in paths:
        if not os.path.isfile(path):
            raise MissingFileError(f"{path} not found: train.py copies the held-out test files into out_dir")
    pairs = []
    for en, fr in zip(*eval_data.read_parallel(*paths)):
        if len(pairs) == n:
            break
        if all(6 <= len(s.split()) <= 14 and 1 + len(tok.encode(s)) <= block_size for s in (en, fr)):
            pairs.append((en, fr))
    return pairs


@torch.no_grad()
def alpha_of(model, tok, text, lang, device):
    """(token strings, α (k, T, T) as a numpy array) over `<lang> text`."""
    ids = [tok.lang_id(lang)] + tok.encode(text)
    alpha = model.contextualization(torch.tensor([ids], device=device))[0].float().cpu().numpy()
    return [tok.token_str(i) for i in ids], alpha


@torch.no_grad()
def word_senses(model, tok, ids_list, device, top_k, chunk=256):
    """For each word (its piece ids): per sense, [top_k ids, bottom_k ids], the allowed tokens with the
    highest and lowest logits E·C(w)_l, best first (analyze_sense_vectors' definition, filter_tokens on;
    its entropies are left out: over the full vocabulary in float64 they cost 4x the rest here)."""
    C = lexical.word_vectors(model, ids_list, device, 'senses')  # (n, k, d)
    _, k, d = C.shape
    E = model.input_embeddings().float()
    allowed = senses.allowed_tokens(tok, filter_tokens=True)
    out = []
    for rows in C.split(chunk):  # (chunk * k, V) logits at a time
        logits = rows.reshape(-1, d).to(device) @ E.T
        top = senses.masked_topk(logits, allowed, top_k).view(len(rows), k, -1).tolist()
        bottom = senses.masked_topk(logits, allowed, top_k, largest=False).view(len(rows), k, -1).tolist()
        out += [[[top[w][l], bottom[w][l]] for l in range(k)] for w in range(len(rows))]
    return out


def neighbours(model, lists, index, device, n_neighbours, csls_k):
    """{word index: {target lang: {rep: [[word index, CSLS], ...]}}}: each word of one language's list
    against the other language's list, best first."""
    found = {}
    for rep in REPRESENTATIONS:
        vectors = {lang: lexical.word_vectors(model, list(words.values()), device, rep)
                   for lang, words in lists.items()}
        for src, tgt in (('en', 'fr'), ('fr', 'en')):
            scores = torch.from_numpy(metrics.csls_scores(vectors[src], vectors[tgt], csls_k))
            best = metrics.top_columns(scores, min(n_neighbours, scores.shape[1]))
            targets = [index[w] for w in lists[tgt]]
            for row, word in enumerate(lists[src]):
                found.setdefault(index[word], {}).setdefault(tgt, {})[rep] = [
                    [targets[c], round(float(scores[row, c]), 4)] for c in best[row].tolist()]
    return found


def gold_translations(words_by_lang):
    """{word: {target lang: sorted MUSE test translations}} for the words of each list."""
    gold = {}
    for src, tgt in (('en', 'fr'), ('fr', 'en')):
        dictionary = {}
        for s, targets in eval_data.read_dictionary(eval_data.default_path(f'muse_{src}_{tgt}')).items():
            dictionary.setdefault(s.lower(), set()).update(t.lower() for t in targets)
        for word in words_by_lang[src]:
            if word in dictionary:
                gold.setdefault(word, {})[tgt] = sorted(dictionary[word])
    return gold


def explorer_data(model, tok, device, labels, pairs, n_words=3000, top_k=5, n_neighbours=5, csls_k=10):
    """Everything the explorer page shows, as one JSON-serialisable dict (see the module docstring)."""
    lists = {lang: lexical.candidate_words(tok, lang, n_words) for lang in ('en', 'fr')}
    words = list(dict.fromkeys([*lists['en'], *lists['fr']]))
    index = {w: i for i, w in enumerate(words)}
    ids_of = {**lists['en'], **lists['fr']}
    counts = training_counts(tok, words)
    sense_rows = word_senses(model, tok, [ids_of[w] for w in words], device, top_k)
    near = neighbours(model, lists, index, device, n_neighbours, csls_k)
    gold = gold_translations(lists)
    entries = [{'word': w, 'counts': counts[w], 'lists': [lang for lang in ('en', 'fr') if w in lists[lang]],
                'pieces': [tok.token_str(i) for i in ids_of[w]], 'senses': sense_rows[i], 'neighbours': near.get(i, {}),
                'gold': gold.get(w, {})} for i, w in enumerate(words)]
    shown = sorted({t for row in sense_rows for sense in row for t in sense[0] + sense[1]})
    lang_counts = tok.token_lang_counts
    tokens = {t: [tok.token_str(t), token_language(*lang_counts[t].tolist()), *lang_counts[t].tolist()] for t in shown}
    sentences = []
    for i, pair in enumerate(pairs):
        for lang, text in zip(('en', 'fr'), pair):
            toks, alpha = alpha_of(model, tok, text, lang, device)
            # row i of each sense keeps its causal part j <= i only
            sentences.append({'pair': i, 'lang': lang, 'text': text, 'tokens': toks,
                              'alpha': [[np.round(a[r, :r + 1], 3).tolist() for r in range(len(toks))] for a in alpha]})
    info = model.info
    return {'model': {'out_dir': info['out_dir'], 'model_type': info['model_type'], 'iter_num': info['iter_num'],
                      'n_senses': model.config.n_senses, 'vocab_size': tok.vocab_size,
                      'tokenizer': tok.meta['tokenizer']['type'], 'checkpoint': info['checkpoint']['file'],
                      'sha256': info['checkpoint']['sha256']},
            'settings': {'n_words': n_words, 'top_k': top_k, 'n_neighbours': n_neighbours, 'csls_k': csls_k,
                         'representations': list(REPRESENTATIONS), 'sense_layout': SENSE_LAYOUT,
                         'n_en': len(lists['en']), 'n_fr': len(lists['fr'])},
            'labels': labels, 'words': entries, 'tokens': tokens, 'sentences': sentences}


def role_summary(result):
    """What the explorer shows of experiments/sense_roles.py's analysis: the k x k role matrices (3 decimals), the
    dominances, the permutation test's p, the pair contrast and the matching."""
    return {'matrix': np.round(result['matrix'], 3).tolist(), 'shuffled': np.round(result['shuffled_matrix'], 3).tolist(),
            'dominance': result['dominance'], 'p': result['permutation_test']['p'],
            'n_permutations': result['permutation_test']['n_permutations'], 'contrast': result['pair_contrast']['mean'],
            'contrast_ci': [result['pair_contrast']['ci']['low'], result['pair_contrast']['ci']['high']],
            'matching': result['matching']['matching'], 'n_pairs': result['n_pairs']}


def render_html(data):
    """The page: the template with its CSS, its script and the data (JSON, '<' escaped so that no
    string can close the script element) inlined."""
    template = (TEMPLATE_DIR / 'template.html').read_text(encoding='utf-8')
    payload = json.dumps(data, ensure_ascii=False, separators=(',', ':')).replace('<', '\\u003c')
    parts = {'/*EXPLORER_CSS*/': (TEMPLATE_DIR / 'explorer.css').read_text(encoding='utf-8'),
             '/*EXPLORER_JS*/': (TEMPLATE_DIR / 'explorer.js').read_text(encoding='utf-8'),
             '"EXPLORER_DATA"': payload}
    for placeholder, text in parts.items():
        assert template.count(placeholder) == 1, placeholder
        template = template.replace(placeholder, text)
    return template


def safe_name(word):
    """A file-name part for a word: the word when it is letters, digits, '-' or '_', else its hex."""
    return word if re.fullmatch(r'[\w-]+', word) else word.encode().hex()


def sense_pngs(model, tok, words, labels, output, device):
    """senses_<word>.png of each covered word; returns the file names (OOV words are skipped, said)."""
    analysis = senses.analyze_sense_vectors(model, tok, words, device, top_k=8, verbose=False,
                                            analyze_relatedness=False, analyze_syntax=False, labels=labels)
    made = []
    for word, entry in analysis['words'].items():
        if entry['oov']:
            print(f"'{word}' is OOV (a piece never occurred in training): no senses_{safe_name(word)}.png")
            continue
        name = f'senses_{safe_name(word)}.png'
        plots.plot_sense_top_words(word, [[t['token'] for t in s['top']] for s in entry['senses']],
                                   [[t['score'] for t in s['top']] for s in entry['senses']], labels,
                                   os.path.join(output, name))
        made.append(name)
    return made


def alpha_pngs(data, output):
    made = []
    for s in data['sentences']:
        k, T = len(s['alpha']), len(s['tokens'])
        alpha = np.zeros((k, T, T))
        for l in range(k):
            for r, row in enumerate(s['alpha'][l]):
                alpha[l, r, :len(row)] = row
        name = f"alpha_{s['pair']}_{s['lang']}.png"
        plots.plot_contextualization(alpha, s['tokens'], os.path.join(output, name),
                                     f"contextualization weights α, {s['lang'].upper()} example {s['pair']}")
        made.append(name)
    return made


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a Backpack training out_dir (best.pt or ckpt.pt)')
    p.add_argument('--output', help='where the PNGs and sense_explorer.html go (default: out_dir/senses)')
    p.add_argument('--words', nargs='+', help='words with a senses_<word>.png (default: the probe words)')
    p.add_argument('--n_words', type=int, default=3000, help='explorer: most frequent words per language')
    p.add_argument('--top_k', type=int, default=5, help='explorer: tokens shown per sense, top and bottom')
    p.add_argument('--n_neighbours', type=int, default=5, help='explorer: cross-lingual neighbours per word')
    p.add_argument('--n_sentences', type=int, default=3, help='example sentence pairs with α heatmaps')
    p.add_argument('--labels', help='a sense_labels.json (default: out_dir/sense_labels.json, else derived now)')
    p.add_argument('--no_png', action='store_true', help='write the explorer only')
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    for name in ('n_words', 'top_k', 'n_neighbours'):
        if getattr(args, name) < 1:
            p.error(f'--{name} must be at least 1')
    if args.n_sentences < 0:
        p.error('--n_sentences must be at least 0')
    device = resolve_device(args.device)
    output = args.output or os.path.join(args.out_dir, 'senses')
    if os.path.isfile(output):
        raise UserError(f"--output {output} is a file: give a directory")

    model, _ = outdir.load_model(args.out_dir, device)
    if not is_backpack(model):
        raise UserError(f"{args.out_dir} holds a {model.info['model_type']}, which has no sense vectors: "
                        "give a Backpack's out_dir")
    tok = outdir.load_tokenizer(args.out_dir)
    labels, labels_from = sense_labels(model, tok, args.out_dir, device, args.labels)
    pairs = example_sentences(args.out_dir, tok, model.config.block_size, args.n_sentences)
    if len(pairs) < args.n_sentences:
        warn(f"only {len(pairs)} of the held-out test pairs have 6 to 14 words a side and fit the context "
             f"({model.config.block_size} tokens): {len(pairs)} example pairs instead of {args.n_sentences}")
    data = explorer_data(model, tok, device, labels, pairs, n_words=args.n_words, top_k=args.top_k,
                         n_neighbours=args.n_neighbours)
    data['roles'] = role_summary(sense_roles.evaluate_sense_roles(model, tok, device, bli={}, labels=[]))
    data['settings']['labels_from'] = labels_from
    html = render_html(data)
    os.makedirs(output, exist_ok=True)
    made = []
    if not args.no_png:
        words = args.words or [w for lang in ('en', 'fr') for w in senses.PROBE_WORDS[lang]]
        made += sense_pngs(model, tok, list(dict.fromkeys(words)), labels, output, device)
        made += alpha_pngs(data, output)
    path = os.path.join(output, 'sense_explorer.html')
    atomic_write(path, lambda f: f.write(html.encode('utf-8')))
    print(f"explorer: {len(data['words'])} words ({data['settings']['n_en']} EN, {data['settings']['n_fr']} FR), "
          f"{len(data['sentences'])} example sentences, {len(html.encode()) / 1e6:.1f} MB: {path}")
    if made:
        print(f"wrote {len(made)} PNGs to {output}: {', '.join(made)}")


if __name__ == '__main__':
    run_main(main)
