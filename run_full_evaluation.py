"""
Run every evaluation on one trained model and write its report into out_dir:

    python run_full_evaluation.py --out_dir out/tiny_backpack --device cpu [--translation_samples 200]

Writes out_dir/evaluation_results.json (everything, with the settings used and the checkpoint file and sha256
the numbers come from), out_dir/evaluation_report.md
(the headline table, translation examples, sense labels), out_dir/sense_labels.json (Backpack) and PNGs:
loss_curve.png (from training_log.json), senses_<word>.png (senses x top words) and
alpha_en.png / alpha_fr.png (the contextualization weights over an English and a French test sentence).
The sense interventions of experiments/interventions/ (gender bias, topic control, false friends; for a
Transformer, their baselines) run too, into 'interventions' and a report section (--interventions none: skip).
--alignment adds word alignment on the WPT-03 Hansards (experiments/alignment.py: the Backpack's exact sense
attribution, or a Transformer's attention, against the diagonal; --alignment_twin DIR adds the twin's attention,
--alignment_ibm1 FILE an IBM 1 table); it is not run by default (about 1 s on the tiny models; 10 s on the S
reference Backpack with its twin, on 2 shared CPU cores). --cross_edit adds the cross-lingual sense editing of
experiments/cross_edit.py (a Backpack; --cross_edit_twin DIR adds its twin's methods): English edits measured in
French, into 'cross_edit' and a report section; not run by default (about 25 min on the S reference pair).
Check the results with verify_evaluation.py.

A released model (an export of export_hf.py, e.g. results/cpu_reference/S/backpack_seed0/hf) is evaluated
again, with the same numbers as its committed evaluation (same weights, same data), by

    python run_full_evaluation.py --out_dir results/cpu_reference/S/backpack_seed0/hf \
        --data_dir data/europarl_bpe8k --results_dir out/reeval/backpack_seed0

--data_dir is the prepared data dir whose held-out files are read (default: --out_dir, where train.py copies
them; an export holds none), checked to have the model's tokenizer; --results_dir is where the results,
report, sense labels and figures go (default: --out_dir; an export's files are the release, so there it
must be given), with a copy of the model's meta.json and tokenizer files, so that
`verify_evaluation.py --out_dir <results_dir> --committed` checks them. The loss curve is drawn when
--out_dir has its training_log.json.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import json
import time

import torch

import checkpoint
import evaluate
from checkpoint import OutDirLock, save_json
from errors import UserError, run_main
from experiments import alignment, cross_edit, eval_data, interventions, plots, sense_roles
from tokenizer import copy_tokenizer

HEATMAP_WORDS = {'en': 'parliament', 'fr': 'droit'}


def figures(model, tok, results, out_dir, device, results_dir=None):
    """The PNGs of the report, written into results_dir (default out_dir), the test sentences read from the data
    dir (tok.data_dir), the training log from out_dir; returns their file names."""
    made = []
    log_path = os.path.join(out_dir, 'training_log.json')
    where = results_dir or out_dir
    if os.path.isfile(log_path):
        with open(log_path) as f:
            plots.plot_loss_curves({results['model']['model_type']: json.load(f)},
                                   os.path.join(where, 'loss_curve.png'))
        made.append('loss_curve.png')
    if 'senses' not in results:
        return made
    labels = [entry['label'] for entry in results['senses']['labels']]
    for lang, word in HEATMAP_WORDS.items():
        analysis = evaluate.analyze_sense_vectors(model, tok, [word], device, top_k=8, verbose=False,
                                                  analyze_relatedness=False, analyze_syntax=False, labels=labels)
        entry = analysis['words'][word]
        if entry.get('oov'):
            continue
        tokens = [[t['token'] for t in s['top']] for s in entry['senses']]
        scores = [[t['score'] for t in s['top']] for s in entry['senses']]
        name = f'senses_{word}.png'
        plots.plot_sense_top_words(word, tokens, scores, labels, os.path.join(where, name))
        made.append(name)
    for lang in ('en', 'fr'):
        with open(os.path.join(tok.data_dir, f'test.{lang}'), encoding='utf-8') as f:
            sentence = next(line.strip() for line in f if 6 <= len(line.split()) <= 14)
        ids = ([tok.lang_id(lang)] + tok.encode(sentence))[:model.config.block_size]  # a short context crops it
        with torch.no_grad():
            alpha = model.contextualization(torch.tensor([ids], device=device))[0].float().cpu().numpy()
        name = f'alpha_{lang}.png'
        plots.plot_contextualization(alpha, [tok.token_str(i) for i in ids], os.path.join(where, name),
                                     f'contextualization weights α over a {lang.upper()} test sentence')
        made.append(name)
    if 'roles' in results['senses']:
        sense_roles.plot_roles(results['senses']['roles'], os.path.join(where, 'sense_roles.png'))
        made.append('sense_roles.png')
    return made


def report(results, pngs):
    """evaluation_report.md: the headline table, translation examples, sense labels, figures."""
    model = results['model']
    weights = f"; weights read from `{model['model_dir'] or 'outside the repository'}`" if 'model_dir' in model else ''
    lines = [f"# Evaluation of {model['run']} ({model['model_type']}, iteration {model['iter_num']})", '',
             f"out_dir `{model['out_dir'] or 'outside the repository'}`{weights}; checkpoint "
             f"{model['checkpoint']['file']} sha256 {model['checkpoint']['sha256'][:12]}", '',
             evaluate.summary_table(results), '',
             '| section | seconds |', '|---|---:|', *[f'| {name} | {secs:.1f} |' for name, secs in results['timing_s'].items()],
             f"| total | {sum(results['timing_s'].values()):.1f} |", '']
    for direction, r in results.get('translation', {}).items():
        lines += [f"## Translation {direction} (n={r['n']}, {r['decoding']})", '',
                  f"BLEU signature: `{r['bleu_signature']}`; chrF signature: `{r['chrf_signature']}`", '']
        for ex in r['examples']:
            lines += [f"- src: {ex['src']}", f"  - ref: {ex['ref']}", f"  - hyp: {ex['hyp']}"]
        lines.append('')
    if 'senses' in results:
        lines += ['## Sense labels (derived from the model)', '', '| sense | label | EN share | entropy (nats) |',
                  '|---:|---|---:|---:|']
        lines += [f"| {s['index']} | {s['label']} | {s['language_skew']['en']:.2f} | {s['entropy']:.2f} |"
                  for s in results['senses']['labels']]
        lines.append('')
        if 'roles' in results['senses']:
            lines += ['## Sense roles across languages (experiments/sense_roles.py)', '',
                      *sense_roles.report_lines(results['senses']['roles']), '']
    if 'alignment' in results:
        lines += ['## Word alignment on the WPT-03 Hansards (experiments/alignment.py)', '',
                  *alignment.report_lines(results['alignment']), '']
    if 'cross_edit' in results:
        lines += ['## Cross-lingual sense editing (experiments/cross_edit.py)', '',
                  *cross_edit.report_lines(results['cross_edit']), '']
    if 'interventions' in results:
        lines += interventions.report_lines(results['interventions'])
    lines += ['## Figures', ''] + [f'![{png}]({png})' for png in pngs]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='training output dir (best.pt or ckpt.pt), or an export of '
                                                    'export_hf.py')
    p.add_argument('--data_dir', help='the prepared data dir whose held-out files are evaluated (default: --out_dir, '
                                      'where train.py copies them; an export holds none: pass the data dir it was '
                                      'trained on, e.g. data/europarl_bpe8k)')
    p.add_argument('--results_dir', help='where evaluation_results.json, evaluation_report.md, sense_labels.json and '
                                         'the figures are written (default: --out_dir; required for an export)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--translation_samples', type=int, default=200, help='test pairs per direction (0 = all)')
    p.add_argument('--beam_size', type=int, default=1)
    p.add_argument('--sentence_pairs', type=int, default=1000)
    p.add_argument('--interventions', default='all', choices=('all', 'none', *interventions.EXPERIMENTS),
                   help='the sense interventions to run (experiments/interventions/, default settings)')
    p.add_argument('--alignment', action='store_true', help='also evaluate word alignment (experiments/alignment.py)')
    evaluate.add_alignment_arguments(p)
    p.add_argument('--cross_edit', action='store_true',
                   help='also run the cross-lingual sense editing (experiments/cross_edit.py; a Backpack)')
    p.add_argument('--cross_edit_twin', metavar='DIR', help="with --cross_edit: the twin Transformer's out_dir (its "
                                                            "methods are the baselines)")
    p.add_argument('--cross_edit_task', metavar='DIR', help='with --cross_edit: people.tsv, templates.tsv and '
                                                            'institutions.tsv (default: data/cross_edit)')
    args = p.parse_args(argv)
    evaluate.check_alignment_arguments(args)
    if (args.cross_edit_twin or args.cross_edit_task) and not args.cross_edit:
        raise UserError("--cross_edit_twin and --cross_edit_task go with --cross_edit")
    args.cross_edit_task = args.cross_edit_task or cross_edit.DATA_DIR
    if args.cross_edit_twin:
        checkpoint.checkpoint_path(args.cross_edit_twin)
    if args.cross_edit:
        cross_edit.read_task(args.cross_edit_task)
    args.device = evaluate.check_arguments(args)
    args.data_dir = args.data_dir or args.out_dir
    args.results_dir = args.results_dir or args.out_dir
    check_results_dir(args)
    which = {'all': interventions.EXPERIMENTS, 'none': ()}.get(args.interventions, (args.interventions,))
    evaluate.check_data_dir(args.data_dir, evaluate.EVALUATIONS,
                            [f for name in which for f in INTERVENTION_DATA.get(name, ())])
    os.makedirs(args.results_dir, exist_ok=True)
    with OutDirLock(args.results_dir, 'run_full_evaluation.py'):  # two at once would overwrite each other's report
        evaluate_into_out_dir(args, which)


# what the interventions read from the data dir: val documents (the cost of an edit), training words
INTERVENTION_DATA = {'gender': ('val_en.bin', 'val_fr.bin'), 'false_friends': ('words.json',)}


def check_results_dir(args):
    """--results_dir is a directory (or will be), and not the export being evaluated: an export's files are
    the release (its evaluation_results.json is the one release.json records), never overwritten."""
    if os.path.exists(args.results_dir) and not os.path.isdir(args.results_dir):
        raise UserError(f"--results_dir {args.results_dir} is a file, not a directory")
    if checkpoint.is_export(args.out_dir) and os.path.realpath(args.results_dir) == os.path.realpath(args.out_dir):
        raise UserError(f"--out_dir {args.out_dir} is an export of export_hf.py, whose files are the release: pass "
                        f"--results_dir DIR for the results of this evaluation (and --data_dir, the data it was "
                        f"trained on)")


def evaluate_into_out_dir(args, which):
    """Every evaluation of args.out_dir's model (the interventions `which`) on the held-out files of
    args.data_dir; its results, report and figures written into args.results_dir."""
    model, _ = evaluate.load_model(args.out_dir, args.device)
    tok = evaluate.load_tokenizer(args.out_dir, args.data_dir)
    results = evaluate.run_evaluations(model, tok, args.device, translation_samples=args.translation_samples or None,
                                       which=evaluate.EVALUATIONS + (('alignment',) if args.alignment else ()),
                                       beam_size=args.beam_size, sentence_pairs=args.sentence_pairs,
                                       out_dir=args.results_dir, alignment_twin=args.alignment_twin,
                                       alignment_ibm1=args.alignment_ibm1)
    if which:
        t0 = time.time()
        results['interventions'] = interventions.run_interventions(model, tok, args.device, which)
        results['settings']['interventions'] = list(which)
        results['timing_s']['interventions'] = round(time.time() - t0, 2)
        print(f"evaluated interventions in {results['timing_s']['interventions']:.1f} s", flush=True)
        results['inputs'] = {**results['inputs'],
                             **eval_data.record_inputs(results['interventions'], args.results_dir)}
    if args.cross_edit:
        if not evaluate.is_backpack(model):
            raise UserError(f"--cross_edit: {args.out_dir} holds a Transformer; pass the Backpack's out_dir, and this "
                            f"one as --cross_edit_twin")
        t0 = time.time()
        twin = evaluate.load_model(args.cross_edit_twin, args.device)[0] if args.cross_edit_twin else None
        results['cross_edit'] = cross_edit.run_cross_edit(model, twin, tok, args.cross_edit_task)
        results['cross_edit']['twin_checkpoint'] = evaluate.checkpoint_record(args.cross_edit_twin) if twin else None
        results['settings']['cross_edit'] = {'twin': eval_data.portable_path(args.cross_edit_twin) if twin else None,
                                             'task': eval_data.portable_path(args.cross_edit_task)}
        results['timing_s']['cross_edit'] = round(time.time() - t0, 2)
        print(f"evaluated cross_edit in {results['timing_s']['cross_edit']:.1f} s", flush=True)
    pngs = figures(model, tok, results, args.out_dir, args.device, args.results_dir)
    if os.path.realpath(args.results_dir) != os.path.realpath(args.out_dir):
        # the tokenizer beside the results, so that verify_evaluation.py --committed checks them there
        copy_tokenizer(args.out_dir, args.results_dir)
    save_json(evaluate.to_json(results), os.path.join(args.results_dir, 'evaluation_results.json'))
    with open(os.path.join(args.results_dir, 'evaluation_report.md'), 'w', encoding='utf-8') as f:
        f.write(report(results, pngs))
    print(evaluate.summary_table(results))
    print(f"wrote evaluation_results.json, evaluation_report.md and {len(pngs)} figures to {args.results_dir}")


if __name__ == '__main__':
    run_main(main)
