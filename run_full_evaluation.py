"""
Run every evaluation on one trained model and write its report into out_dir:

    python run_full_evaluation.py --out_dir out/tiny_backpack --device cpu [--translation_samples 200]

Writes out_dir/evaluation_results.json (everything, with the settings used and the checkpoint file and sha256
the numbers come from), out_dir/evaluation_report.md
(the headline table, translation examples, sense labels), out_dir/sense_labels.json (Backpack) and PNGs:
loss_curve.png (from training_log.json), senses_<word>.png (senses x top words) and
alpha_en.png / alpha_fr.png (the contextualization weights over an English and a French test sentence).
The sense interventions of experiments/interventions.py (gender bias, topic control, false friends; for a
Transformer, their baselines) run too, into 'interventions' and a report section (--interventions none: skip).
Check the results with verify_evaluation.py.
"""
import system  # noqa: F401  (first: the OpenMP setting torch reads when it loads)
import os
import argparse
import json
import time

import torch

import evaluate
from checkpoint import OutDirLock, save_json
from errors import run_main
from experiments import eval_data, interventions, plots

HEATMAP_WORDS = {'en': 'parliament', 'fr': 'droit'}


def figures(model, tok, results, out_dir, device):
    """The PNGs of the report; returns their file names."""
    made = []
    log_path = os.path.join(out_dir, 'training_log.json')
    if os.path.isfile(log_path):
        with open(log_path) as f:
            plots.plot_loss_curves({results['model']['model_type']: json.load(f)},
                                   os.path.join(out_dir, 'loss_curve.png'))
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
        plots.plot_sense_top_words(word, tokens, scores, labels, os.path.join(out_dir, name))
        made.append(name)
    for lang in ('en', 'fr'):
        with open(os.path.join(out_dir, f'test.{lang}'), encoding='utf-8') as f:
            sentence = next(line.strip() for line in f if 6 <= len(line.split()) <= 14)
        ids = ([tok.lang_id(lang)] + tok.encode(sentence))[:model.config.block_size]  # a short context crops it
        with torch.no_grad():
            alpha = model.contextualization(torch.tensor([ids], device=device))[0].float().cpu().numpy()
        name = f'alpha_{lang}.png'
        plots.plot_contextualization(alpha, [tok.token_str(i) for i in ids], os.path.join(out_dir, name),
                                     f'contextualization weights α over a {lang.upper()} test sentence')
        made.append(name)
    return made


def report(results, pngs):
    """evaluation_report.md: the headline table, translation examples, sense labels, figures."""
    model = results['model']
    lines = [f"# Evaluation of {model['run']} ({model['model_type']}, iteration {model['iter_num']})", '',
             f"out_dir `{model['out_dir'] or 'outside the repository'}`; checkpoint {model['checkpoint']['file']} sha256 "
             f"{model['checkpoint']['sha256'][:12]}", '', evaluate.summary_table(results), '',
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
    if 'interventions' in results:
        lines += interventions.report_lines(results['interventions'])
    lines += ['## Figures', ''] + [f'![{png}]({png})' for png in pngs]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True)
    p.add_argument('--device', default='cpu')
    p.add_argument('--translation_samples', type=int, default=200, help='test pairs per direction (0 = all)')
    p.add_argument('--beam_size', type=int, default=1)
    p.add_argument('--sentence_pairs', type=int, default=1000)
    p.add_argument('--interventions', default='all', choices=('all', 'none', *interventions.EXPERIMENTS),
                   help='the sense interventions to run (experiments/interventions.py, default settings)')
    args = p.parse_args(argv)
    args.device = evaluate.check_arguments(args)
    with OutDirLock(args.out_dir, 'run_full_evaluation.py'):  # two at once would overwrite each other's report
        evaluate_into_out_dir(args)


def evaluate_into_out_dir(args):
    """Every evaluation of args.out_dir's model, its results, report and figures written there."""
    model, _ = evaluate.load_model(args.out_dir, args.device)
    tok = evaluate.load_tokenizer(args.out_dir)
    results = evaluate.run_evaluations(model, tok, args.device, translation_samples=args.translation_samples or None,
                                       beam_size=args.beam_size, sentence_pairs=args.sentence_pairs,
                                       out_dir=args.out_dir)
    which = {'all': interventions.EXPERIMENTS, 'none': ()}.get(args.interventions, (args.interventions,))
    if which:
        t0 = time.time()
        results['interventions'] = interventions.run_interventions(model, tok, args.device, which)
        results['settings']['interventions'] = list(which)
        results['timing_s']['interventions'] = round(time.time() - t0, 2)
        print(f"evaluated interventions in {results['timing_s']['interventions']:.1f} s", flush=True)
        results['inputs'] = {**results['inputs'], **eval_data.record_inputs(results['interventions'], args.out_dir)}
    pngs = figures(model, tok, results, args.out_dir, args.device)
    save_json(evaluate.to_json(results), os.path.join(args.out_dir, 'evaluation_results.json'))
    with open(os.path.join(args.out_dir, 'evaluation_report.md'), 'w', encoding='utf-8') as f:
        f.write(report(results, pngs))
    print(evaluate.summary_table(results))
    print(f"wrote evaluation_results.json, evaluation_report.md and {len(pngs)} figures to {args.out_dir}")


if __name__ == '__main__':
    run_main(main)
