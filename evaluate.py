"""
Evaluate a trained model (the out_dir of train.py). Importable as the seed's snippets use it:

    from evaluate import load_model, load_tokenizer, generate_translation
    model, meta = load_model('out/tiny_backpack', 'cpu')
    tokenizer = load_tokenizer('out/tiny_backpack')      # offline equivalent of AutoTokenizer.from_pretrained(...)
    generate_translation(model, tokenizer, 'Thank you, Mr President.', 'cpu', greedy=True)

Command line (every evaluation when none is selected):

    python evaluate.py --out_dir out/tiny_backpack --device cpu
    python evaluate.py --out_dir out/tiny_backpack --multisimlex --cross_lingual --languages en fr
    python evaluate.py --out_dir results/cpu_reference/S/backpack_seed0/hf --data_dir data/europarl_bpe8k \
        --perplexity --output perplexity.json

--out_dir is a training out_dir (best.pt or ckpt.pt) or an export of export_hf.py (config.json +
model.safetensors, with the meta.json and tokenizer files it copies). The held-out files (val_*.bin,
test.en/test.fr, words.json) are read from --data_dir, by default --out_dir, where train.py copies them; an
export holds none: pass the prepared data dir the model was trained on.

The metrics themselves live in experiments/ (one module per evaluation, pure metric functions in
experiments/metrics.py), and loading a run's model, tokenizer and results in outdir.py (whose names this file
re-exports); this file lets the seed's HF-tokenizer snippets work, and composes the evaluations into one
results dict (run_evaluations), which run_full_evaluation.py and compare_models.py build on.
"""
import system  # first: the OpenMP setting torch reads when it loads
import os
import argparse
import functools
import time

import checkpoint
import tokenizer as tokenizer_module
from errors import MissingFileError, UserError, check_range, resolve_device, run_main
from outdir import (  # noqa: F401  (the seed's snippets import them from here)
    check_vocabulary, checkpoint_record, headline_metrics, load_model, load_tokenizer, read_results, sha256_file,
    stale_results, to_json, tokenizer_record)
from experiments import alignment, eval_data, lexical, perplexity, sense_roles, senses, sentence, translation
from experiments.eval_data import read_parallel
from model import is_backpack

SENSE_LABELS = senses.SENSE_LABELS
PROBE_WORDS = senses.PROBE_WORDS


# the files each evaluation reads from the data dir (tokenizer.data_dir), besides meta.json and the tokenizer
DATA_FILES = {'perplexity': ('val_en.bin', 'val_fr.bin', 'test_en.bin', 'test_fr.bin'),
              'translation': ('test.en', 'test.fr'), 'sentence_similarity': ('test.en', 'test.fr'),
              'bli': ('words.json',), 'senses': ('words.json',)}  # words.json: the training words, by frequency


def check_data_dir(data_dir, which, extra=()):
    """Before anything is loaded: data_dir holds the held-out files the evaluations `which` (and the names in
    `extra`) read. One line names the missing ones and where they come from, instead of a failure minutes
    into the evaluation."""
    needed = dict.fromkeys(['meta.json', *(f for name in which for f in DATA_FILES.get(name, ())), *extra])
    missing = [name for name in needed if not os.path.isfile(os.path.join(data_dir, name))]
    if missing:
        what = 'an export of export_hf.py, which holds no evaluation data' if os.path.isfile(
            os.path.join(data_dir, checkpoint.RELEASE)) else 'not a complete prepared data dir'
        raise MissingFileError(f"no {', '.join(missing)} in {data_dir} ({what}): pass --data_dir, the data dir the "
                               f"model was trained on (data/europarl/prepare.py writes it; train.py copies its "
                               f"held-out files into the out_dir)")


def resolve_tokenizer(tok, model):
    """Our Tokenizer for `model`, also when the caller passes a Hugging Face tokenizer.

    The seed's snippets pass AutoTokenizer.from_pretrained('xlm-roberta-base'). Our ids may be a
    compacted XLM-R vocabulary plus language tags, so the out_dir's own tokenizer is used instead,
    after checking that the given tokenizer segments text the same way."""
    if isinstance(tok, tokenizer_module.Tokenizer):
        return check_vocabulary(model, tok)
    out_dir = getattr(model, 'info', {}).get('out_dir')
    if out_dir is None or not hasattr(tok, 'encode'):
        raise TypeError("pass the tokenizer from evaluate.load_tokenizer(out_dir) (or load the model with "
                        "evaluate.load_model so that its own tokenizer can be found)")
    ours = load_tokenizer(out_dir)
    probe = "The Parliament adopted the resolution. Le Parlement a adopté la résolution."
    theirs = [int(i) for i in tok.encode(probe, add_special_tokens=False)]
    mine = ours.encode(probe)
    if ours.vocab_map is not None:
        mine = ours.vocab_map[mine].tolist()
    if theirs != mine:
        raise ValueError(f"the given tokenizer does not segment text like the one this model was trained with "
                         f"({ours.meta['tokenizer']['type']}); use evaluate.load_tokenizer({out_dir!r})")
    return check_vocabulary(model, ours)


def _any_tokenizer(fn):
    """Wrap an experiments/ function (model, tokenizer, ...) so that it accepts an HF tokenizer too."""
    @functools.wraps(fn)
    def wrapper(model, tok, *args, **kwargs):
        return fn(model, resolve_tokenizer(tok, model), *args, **kwargs)
    return wrapper


generate_translation = _any_tokenizer(translation.generate_translation)
evaluate_translation_accuracy = _any_tokenizer(translation.evaluate_translation_accuracy)
evaluate_multisimlex = _any_tokenizer(lexical.evaluate_multisimlex)
evaluate_word_similarity = _any_tokenizer(lexical.evaluate_word_similarity)
evaluate_bli = _any_tokenizer(lexical.evaluate_bli)
evaluate_sentence_similarity = _any_tokenizer(sentence.evaluate_sentence_similarity)
evaluate_perplexity = _any_tokenizer(perplexity.evaluate_perplexity)
analyze_sense_vectors = _any_tokenizer(senses.analyze_sense_vectors)
label_senses = _any_tokenizer(senses.label_senses)
cross_lingual_sense_alignment = _any_tokenizer(senses.cross_lingual_sense_alignment)

EVALUATIONS = ('perplexity', 'translation', 'word_similarity', 'bli', 'sentence_similarity', 'senses')
# run only when asked for (--alignment): not part of "every evaluation", so that default results stay as they were
OPTIONAL_EVALUATIONS = ('alignment',)


def run_evaluations(model, tok, device, which=EVALUATIONS, translation_samples=200, translation_files=None,
                    beam_size=1, sentence_pairs=1000, languages=('en', 'fr'), cross_lingual=True,
                    max_abs_diff=1.0, word_pairs=(), out_dir=None, verbose=False, alignment_twin=None,
                    alignment_ibm1=None):
    """Run the selected evaluations; returns one JSON-serialisable dict with the settings it used.

    translation_samples: test pairs per direction (None = all); translation_files: (en_path, fr_path)
    instead of the held-out test split; word_pairs: more `word1 word2 score` files for word similarity,
    each under its file's stem. 'alignment' (only when in `which`): experiments/alignment.evaluate_alignment on the
    bundled WPT-03 Hansards gold, with the twin Transformer of out_dir alignment_twin as the attention baseline and
    the IBM 1 table file alignment_ibm1 (written by python experiments/alignment.py) when given. Sense analyses run
    for a Backpack only; sense labels are
    saved as out_dir/sense_labels.json when out_dir is given. The results name the run by model.info's 'run'
    (an export's source run) or out_dir; when out_dir is not the directory the weights were read from
    (a re-evaluation of an export), 'model_dir' names that one.

    Every input the results name (test files, dictionaries, word-pair files, the out_dir) is recorded as an
    eval_data.portable_path, relative to the repository or to the out_dir, never absolute; 'inputs' maps each
    input file to its sha256, so that a copy of the results elsewhere is checked against the same bytes."""
    tok = resolve_tokenizer(tok, model)
    backpack = is_backpack(model)
    info = getattr(model, 'info', {})
    run_dir = out_dir or info.get('out_dir')
    results = {
        'model': {'run': info.get('run') or run_name(run_dir), 'out_dir': repo_path(run_dir),
                  'model_type': 'backpack' if backpack else 'transformer',
                  'iter_num': info.get('iter_num'), 'val_loss': info.get('val_loss'),
                  'checkpoint': info.get('checkpoint'), 'tokenizer': tokenizer_record(tok),
                  'n_senses': model.config.n_senses if backpack else None, 'params': model.param_counts()},
        'settings': {'which': list(which), 'translation_samples': translation_samples,
                     'translation_files': list(translation_files) if translation_files else None,
                     'beam_size': beam_size, 'sentence_pairs': sentence_pairs, 'languages': list(languages),
                     'cross_lingual': cross_lingual, 'max_abs_diff': max_abs_diff, 'word_pairs': list(word_pairs),
                     'device': str(device)},
        'machine': system.machine(device),  # timings and the last digits of scores depend on it
        'timing_s': {},
    }

    def timed(name, fn):
        t0 = time.time()
        results[name] = fn()
        results['timing_s'][name] = round(time.time() - t0, 2)
        print(f"evaluated {name} in {results['timing_s'][name]:.1f} s", flush=True)  # progress in a log file too

    if 'perplexity' in which:
        timed('perplexity', lambda: perplexity.evaluate_perplexity(model, tok, device))
    if 'translation' in which:
        src, tgt = translation_files or (None, None)
        timed('translation', lambda: translation.evaluate_translation_accuracy(
            model, tok, device, src_path=src, tgt_path=tgt, max_samples=translation_samples, beam_size=beam_size))
    if 'word_similarity' in which:
        timed('word_similarity', lambda: {**lexical.evaluate_multisimlex(
            model, tok, device, languages=tuple(languages), cross_lingual=cross_lingual, max_abs_diff=max_abs_diff),
            **lexical.evaluate_word_pair_files(model, tok, device, word_pairs)})
    if 'bli' in which:
        timed('bli', lambda: lexical.evaluate_bli(model, tok, device))
    if 'sentence_similarity' in which:
        timed('sentence_similarity', lambda: sentence.evaluate_sentence_similarity(
            model, tok, device, max_pairs=sentence_pairs))
    if 'senses' in which and backpack:
        def sense_block():
            labels = senses.label_senses(model, tok, device, out_dir=out_dir)
            words = [w for lang in languages for w in PROBE_WORDS[lang]]
            return {'labels': labels,
                    'probe_words': senses.analyze_sense_vectors(model, tok, words, device, verbose=verbose,
                                                                labels=[l['label'] for l in labels]),
                    'cross_lingual_alignment': senses.cross_lingual_sense_alignment(model, tok, device),
                    # per-sense BLI from this run's bli section (absent when bli is not evaluated with it)
                    'roles': sense_roles.evaluate_sense_roles(model, tok, device, bli=results.get('bli', {}),
                                                              labels=labels)}
        timed('senses', sense_block)
    if 'alignment' in which:
        results['settings']['alignment'] = {
            'twin': eval_data.portable_path(alignment_twin) if alignment_twin else None,
            'ibm1_table': eval_data.portable_path(alignment_ibm1) if alignment_ibm1 else None}
        timed('alignment', lambda: alignment_section(model, tok, device, alignment_twin, alignment_ibm1))
    model_dir = info.get('out_dir')
    if model_dir and run_dir and os.path.realpath(model_dir) != os.path.realpath(run_dir):
        results['model']['model_dir'] = repo_path(model_dir)  # weights read from elsewhere (an export)
    results['inputs'] = eval_data.record_inputs(results, run_dir)
    return results


def alignment_section(model, tok, device, twin_dir=None, ibm1_table=None):
    """experiments/alignment.evaluate_alignment of `model`, with the twin read from twin_dir and the IBM 1 table from
    the file ibm1_table (python experiments/alignment.py writes it) when given; the twin's checkpoint is recorded."""
    twin = twin_tok = None
    if twin_dir:
        twin, _ = load_model(twin_dir, device)
        twin_tok = load_tokenizer(twin_dir)
    ibm1 = alignment.IBM1Table.load(ibm1_table) if ibm1_table else None
    section = alignment.evaluate_alignment(model, tok, device, twin=twin, twin_tok=twin_tok, ibm1=ibm1)
    if twin_dir:
        section['twin_checkpoint'] = checkpoint_record(twin_dir)
    return section


def repo_path(out_dir):
    """out_dir relative to the repository when it lies inside it ('out/tiny_backpack'), else None: a directory
    elsewhere means nothing on another machine, and the run is named by run_name."""
    if not out_dir:
        return None
    path = eval_data.portable_path(out_dir)
    return None if path.startswith('..') else path


def run_name(out_dir):
    """What reports call a run: the name of its out_dir (e.g. 'backpack' for out/cpu_reference/backpack)."""
    return os.path.basename(os.path.normpath(str(out_dir))) if out_dir else None


ARGUMENT_RANGES = {'translation_samples': '>= 0', 'beam_size': '>= 1', 'sentence_pairs': '>= 2',
                   'max_abs_diff': '>= 0'}  # the numeric options of evaluate.py and run_full_evaluation.py


def check_arguments(args):
    """evaluate.py's and run_full_evaluation.py's arguments, before anything is loaded: each numeric option
    in its range (those the script has), the device, a checkpoint in --out_dir. Returns the device to use."""
    for name, rule in ARGUMENT_RANGES.items():
        if hasattr(args, name):
            check_range(name, getattr(args, name), rule)
    device = resolve_device(args.device)
    checkpoint.checkpoint_path(args.out_dir)
    return device


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True,
                   help='training output dir (best.pt or ckpt.pt), or an export of export_hf.py')
    p.add_argument('--data_dir', help='the prepared data dir whose held-out files are evaluated (default: --out_dir, '
                                      'where train.py copies them; an export holds none: pass the data dir it was '
                                      'trained on, e.g. data/europarl_bpe8k)')
    p.add_argument('--device', default='cpu')
    for name in EVALUATIONS + OPTIONAL_EVALUATIONS:
        p.add_argument(f'--{name}', action='store_true', help=f'run the {name.replace("_", " ")} evaluation')
    p.add_argument('--multisimlex', action='store_true', help='alias of --word_similarity (the seed name)')
    p.add_argument('--cross_lingual', action='store_true',
                   help='with --multisimlex: include the EN-FR reconstruction (always on when running everything)')
    p.add_argument('--languages', nargs='+', default=['en', 'fr'], choices=['en', 'fr'])
    p.add_argument('--max_abs_diff', type=float, default=1.0,
                   help='EN-FR reconstruction: keep concept pairs whose EN and FR scores differ by at most this')
    p.add_argument('--word_pairs', nargs='+', default=[], metavar='FILE',
                   help='word similarity on these `word1 word2 score` files too (each reported under its file name; '
                        'implies --word_similarity when no evaluation is selected)')
    p.add_argument('--translation_samples', type=int, default=200, help='test pairs per direction (0 = all)')
    p.add_argument('--src_file', help='English side of an aligned test set (instead of the held-out split)')
    p.add_argument('--tgt_file', help='French side of that test set')
    p.add_argument('--beam_size', type=int, default=1)
    p.add_argument('--sentence_pairs', type=int, default=1000)
    add_alignment_arguments(p)
    p.add_argument('--output', help='write the results as JSON here (default: print only)')
    p.add_argument('--verbose', action='store_true', help='print the sense analysis of the probe words')
    args = p.parse_args(argv)
    if bool(args.src_file) != bool(args.tgt_file):
        p.error('--src_file and --tgt_file go together')
    # every input is checked before the (long) evaluations start, so that a mistake costs seconds
    args.device = check_arguments(args)
    if args.src_file:
        read_parallel(args.src_file, args.tgt_file)
    for path in args.word_pairs:
        eval_data.read_word_pairs(path)

    check_alignment_arguments(args)
    which = [name for name in EVALUATIONS + OPTIONAL_EVALUATIONS if getattr(args, name)
             or (name == 'word_similarity' and (args.multisimlex or args.word_pairs))]
    cross_lingual = args.cross_lingual or not which
    which = which or list(EVALUATIONS)  # (not the optional ones: --alignment asks for it)
    data_dir = args.data_dir or args.out_dir
    check_data_dir(data_dir, [name for name in which if not (name == 'translation' and args.src_file)])
    tok = load_tokenizer(args.out_dir, data_dir)
    model, _ = load_model(args.out_dir, args.device)
    if args.senses and not is_backpack(model):
        raise UserError(f"--senses: {args.out_dir} holds a Transformer, which has no senses; drop --senses, or "
                        f"pass the out_dir of a Backpack")
    export = checkpoint.is_export(args.out_dir)
    results = run_evaluations(model, tok, args.device, which=which,
                              translation_samples=args.translation_samples or None,
                              translation_files=(args.src_file, args.tgt_file) if args.src_file else None,
                              beam_size=args.beam_size, sentence_pairs=args.sentence_pairs,
                              languages=args.languages, cross_lingual=cross_lingual,
                              max_abs_diff=args.max_abs_diff, word_pairs=args.word_pairs,
                              out_dir=None if export else args.out_dir,  # no sense_labels.json into an export
                              verbose=args.verbose, alignment_twin=args.alignment_twin,
                              alignment_ibm1=args.alignment_ibm1)
    print(summary_table(results))
    if args.output:
        checkpoint.save_json(to_json(results), args.output)
        print(f"wrote {args.output}")


def add_alignment_arguments(p):
    """--alignment_twin and --alignment_ibm1 (evaluate.py and run_full_evaluation.py)."""
    p.add_argument('--alignment_twin', metavar='DIR', help='with --alignment: the twin Transformer (its out_dir), whose '
                                                           'attention is the baseline')
    p.add_argument('--alignment_ibm1', metavar='FILE', help='with --alignment: an IBM 1 table written by python '
                                                            'experiments/alignment.py (ibm1_<pairs>.json.gz)')


def check_alignment_arguments(args):
    """Before anything is loaded: the twin has a checkpoint, the IBM 1 table and the gold files are there."""
    if (args.alignment_twin or args.alignment_ibm1) and not args.alignment:
        raise UserError("--alignment_twin and --alignment_ibm1 go with --alignment")
    if args.alignment_twin:
        checkpoint.checkpoint_path(args.alignment_twin)
    if args.alignment_ibm1 and not os.path.isfile(args.alignment_ibm1):
        raise MissingFileError(f"--alignment_ibm1 {args.alignment_ibm1}: no such file (python experiments/alignment.py "
                               f"--out_dir OUT --ibm1_pairs N writes it)")
    if args.alignment:
        for split in alignment.SPLITS:
            alignment.read_gold(split)


def summary_table(results):
    rows = [f"| {name} | {value:.4g} |" for name, value in headline_metrics(results).items()]
    model = results['model']
    head = f"{model['model_type']} {model.get('run') or run_name(model['out_dir'])} (iter {model['iter_num']})"
    return '\n'.join([head, '| metric | value |', '|---|---:|', *rows])


if __name__ == '__main__':
    run_main(main)
