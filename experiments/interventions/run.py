"""
Running the experiments: run_interventions, one results dict of the selected experiments (what
run_full_evaluation.py stores under 'interventions'), and the command line (main), which writes it for one
out_dir with the model it was computed from and prints the report.
"""
import argparse
import os
import time
from pathlib import Path

import system
from experiments import eval_data
from experiments.interventions import cost, edits, false_friends, gender, report, topic, words
from experiments.interventions.words import DATA_DIR
from experiments.sentence import require_eval
from model import is_backpack

MODULES = {'gender': gender, 'topic': topic, 'false_friends': false_friends}  # each with its experiment and check
EXPERIMENTS = tuple(MODULES)
DATA_FILES = {name: module.FILES for name, module in MODULES.items()}  # what each experiment reads from data_dir


def run_interventions(model, tok, device, experiments=EXPERIMENTS, data_dir=DATA_DIR, cost_documents=200,
                      strengths=topic.STRENGTHS, samples=4, max_new_tokens=32, seed=0):
    """{'settings', experiment: results..., 'timing_s'} for the selected experiments (their modules'
    docstrings); the settings name the word lists read ('files': eval_data.record_inputs records them with
    their sha256)."""
    require_eval(model)
    out = {'settings': {'experiments': list(experiments), 'data_dir': str(data_dir),
                        'files': [str(Path(data_dir) / f) for name in experiments for f in DATA_FILES[name]],
                        'cost_documents': cost_documents,
                        'strengths': list(strengths), 'samples': samples, 'max_new_tokens': max_new_tokens,
                        'seed': seed, 'model_type': 'backpack' if is_backpack(model) else 'transformer'},
           'timing_s': {}}
    runs = {'gender': lambda: gender.gender_experiment(model, tok, device, data_dir, cost_documents),
            'topic': lambda: topic.topic_experiment(model, tok, device, data_dir, strengths, samples, max_new_tokens,
                                                    seed),
            'false_friends': lambda: false_friends.false_friend_experiment(model, tok, device, data_dir, seed=seed)}
    for name in experiments:
        t0 = time.time()
        out[name] = runs[name]()
        out['timing_s'][name] = round(time.time() - t0, 2)
    return out


def run_name(out_dir):
    """What the results call a run: the name of its out_dir ('tiny_backpack'), not the machine's path to it."""
    return Path(out_dir).resolve().name


def main(argv=None):
    import outdir  # the command line only: the experiments themselves take a model and a tokenizer
    from checkpoint import save_json
    from errors import resolve_device
    from experiments import interventions
    documented = (interventions, edits, words, gender, cost, topic, false_friends)  # the method, in reading order
    description = '\n'.join(module.__doc__ for module in documented)
    p = argparse.ArgumentParser(prog='python -m experiments.interventions', description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a training out_dir (Backpack: the sense edits; Transformer: the baselines)')
    p.add_argument('--experiment', default='all', choices=(*EXPERIMENTS, 'all'))
    p.add_argument('--output', help='results JSON (default: OUT_DIR/interventions.json)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--data_dir', default=str(DATA_DIR), help='the word lists and templates')
    p.add_argument('--cost_documents', type=int, default=200, help='val documents scored for the cost of each edit')
    p.add_argument('--strengths', type=float, nargs='+', default=list(topic.STRENGTHS))
    p.add_argument('--samples', type=int, default=4, help='generations per prompt and setting')
    p.add_argument('--max_new_tokens', type=int, default=32)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    experiments = EXPERIMENTS if args.experiment == 'all' else (args.experiment,)
    model, _ = outdir.load_model(args.out_dir, device)
    tok = outdir.check_vocabulary(model, outdir.load_tokenizer(args.out_dir))
    section = run_interventions(model, tok, device, experiments, args.data_dir, args.cost_documents, args.strengths,
                                args.samples, args.max_new_tokens, args.seed)
    info = model.info
    run = run_name(args.out_dir)
    results = {'model': {'out_dir': run, 'model_type': info['model_type'], 'iter_num': info['iter_num'],
                         'checkpoint': info['checkpoint'], 'tokenizer': outdir.tokenizer_record(tok),
                         'n_senses': model.config.n_senses if is_backpack(model) else None},
               'settings': {'interventions': list(experiments)}, 'machine': system.machine(device),
               'interventions': section}
    results['inputs'] = eval_data.record_inputs(results, args.out_dir)  # portable paths: no absolute one
    output = args.output or os.path.join(args.out_dir, 'interventions.json')
    save_json(outdir.to_json(results), output)
    print('\n'.join(report.report_lines(section)))
    print(f"wrote {eval_data.portable_path(output, args.out_dir)} (run {run})")
