"""
The CPU reference experiment in one command: a Backpack, its Transformer twin (the same contextual network) and
the Transformer widened to the Backpack's parameter count, each trained for the same wall-clock budget, fully
evaluated, compared, and collected as evidence (never weights) into results/cpu_reference/.

    python experiments/cpu_reference.py --data_dir data/europarl_bpe8k --minutes 45

Steps (--steps, default all), each skipped when its output exists and is current, so rerunning the same
command after an interruption continues where it stopped:
  plan      speed probe per model -> max_iters = lr_decay_iters fitted to the budget (cpu_sweep's rule); the
            wide Transformer's n_embd is the multiple of 8 x n_head whose parameter count is closest to the
            Backpack's. Kept in WORK/plan.json so that a resumed run keeps its schedule.
  train     `train.py --config CONFIG --model_type M --max_minutes MINUTES ...` into WORK/<model>; a run with a
            ckpt.pt but not finished is continued with --init_from resume (the budget spans all segments).
  evaluate  run_full_evaluation.py (greedy, Europarl test), then evaluate.py --translation with beam 4 and on
            each --test_sets set (greedy and beam 4) into WORK/<model>/translation_<set>_beam<b>.json.
  compare   compare_models.py: Backpack vs twin (WORK/comparison), Backpack vs wide (WORK/comparison_wide).
  collect   results/cpu_reference/: each model's results, report, logs, PNGs and translation files (with the
            test sentences, meta.json and tokenizer that `verify_evaluation.py --committed` reads), the
            comparisons, the sweep if there is one, plan.json and run.json (every command with its wall-clock, the
            machine, the git revision).

Models run one after another: each gets the whole machine, which is what "the same wall-clock budget" means.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402  (before torch: the OpenMP setting torch reads when it loads)
from errors import MissingFileError, UserError, run_main  # noqa: E402
from experiments.cpu_sweep import fitted_iters, probe_ms_per_iter  # noqa: E402

MODELS = ('backpack', 'transformer', 'transformer_wide')
STEPS = ('plan', 'train', 'evaluate', 'compare', 'collect')
EXTRA_BEAM = 4
# copied from each out_dir into the results: evidence, never weights; with what verify_evaluation.py --committed
# reads to check it (the held-out test sentences, meta.json, the tokenizer)
EVIDENCE = ('evaluation_results.json', 'evaluation_report.md', 'training_log.json', 'sense_labels.json', '*.png',
            'translation_*.json', 'meta.json', 'test.en', 'test.fr', 'tokenizer')


def python(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


class Runner:
    """Runs commands from the repository root, prints and records each with its wall-clock."""

    def __init__(self, work):
        self.path = work / 'commands.json'
        self.records = json.loads(self.path.read_text()) if self.path.is_file() else []

    def __call__(self, step, model, cmd, log_path):
        shown = 'python ' + ' '.join([os.path.relpath(cmd[1], REPO), *map(str, cmd[2:])])
        print(f"[{step}] {model}: {shown}", flush=True)
        t0 = time.time()
        with open(log_path, 'a') as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.records.append({'step': step, 'model': model, 'command': shown, 'wall_s': round(time.time() - t0, 1),
                             'exit': proc.returncode, 'finished_at': time.strftime('%Y-%m-%d %H:%M:%S'),
                             'git_revision': git_revision()})
        self.path.write_text(json.dumps(self.records, indent=1))
        if proc.returncode:
            tail = Path(log_path).read_text(errors='replace').strip().splitlines()[-1:] or ['']
            raise UserError(f"{step} {model} failed (exit {proc.returncode}, log {log_path}): {tail[0]}")


def git_revision():
    # -dirty: the command ran with uncommitted changes
    return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def model_settings(name, wide_n_embd=None):
    return {'model_type': 'backpack' if name == 'backpack' else 'transformer',
            **({'n_embd': wide_n_embd} if name == 'transformer_wide' else {})}


def params_of(config, vocab_size, model_type, **overrides):
    """Total parameters of the model train.py would build from the config file (and overrides)."""
    from dataclasses import fields
    from checkpoint import build_model
    from model import ModelConfig
    settings = {**config, **overrides, 'vocab_size': vocab_size}
    args = {f.name: settings[f.name] for f in fields(ModelConfig) if f.name in settings}
    return build_model(model_type, args).get_num_params(non_embedding=False)


def read_config(name):
    path = REPO / 'config' / f'{name}.py' if not name.endswith('.py') else Path(name)
    if not path.is_file():
        raise MissingFileError(f"config {path} not found")
    scope = {}
    exec(path.read_text(), scope)
    return {k: v for k, v in scope.items() if not k.startswith('_')}


def wide_width(config, vocab_size):
    """The n_embd (a multiple of 8 x n_head) whose Transformer is closest in parameters to the Backpack."""
    target = params_of(config, vocab_size, 'backpack')
    step = 8 * config["n_head"]
    widths = range(config['n_embd'], 4 * config['n_embd'] + 1, step)
    best = min(widths, key=lambda d: abs(params_of(config, vocab_size, 'transformer', n_embd=d) - target))
    return best, target, params_of(config, vocab_size, 'transformer', n_embd=best)


def train_args(args, model, entry):
    return ['--config', args.config, '--data_dir', args.data_dir, '--device', 'cpu',
            '--out_dir', args.work_dir / model, *[a for k, v in entry['settings'].items() for a in (f'--{k}', v)],
            '--max_iters', entry['max_iters'], '--lr_decay_iters', entry['max_iters'],
            '--eval_interval', entry['eval_interval'], '--max_minutes', args.minutes]


def finished(out_dir, minutes, max_iters):
    log_path = out_dir / 'training_log.json'
    if not log_path.is_file():
        return False
    log = json.loads(log_path.read_text())
    # the iteration reached (train.py's iter_num), not the last evaluation's, which can be short of max_iters;
    # logs written before train.py recorded it have only the evaluations
    reached = log.get('iter_num', log['evals'][-1]['iter'] if log['evals'] else 0)
    return reached >= max_iters or log.get('elapsed_s', 0) >= 60 * minutes


def plan(args):
    path = args.work_dir / 'plan.json'
    entries = json.loads(path.read_text()) if path.is_file() else {}
    config = read_config(args.config)
    data = REPO / args.data_dir
    meta_path = (data if data.is_dir() else REPO / 'data' / args.data_dir) / 'meta.json'  # train.py's rule
    if not meta_path.is_file():
        raise MissingFileError(f"{meta_path} not found: prepare the data first (python data/europarl/prepare.py "
                               f"--source local --tokenizer bpe --vocab_size 8000 --out_dir {args.data_dir})")
    vocab_size = json.loads(meta_path.read_text())['vocab_size']
    wide, target, got = wide_width(config, vocab_size)
    for model in args.models:
        if model in entries:
            continue
        settings = model_settings(model, wide)
        probe_args = ['--config', args.config, '--data_dir', args.data_dir, '--device', 'cpu',
                      *[a for k, v in settings.items() for a in (f'--{k}', v)], '--overwrite']
        ms = probe_ms_per_iter(model, probe_args, args.work_dir / 'probe' / model,
                               args.work_dir / f'{model}.probe.log', args.probe_iters)
        iters = fitted_iters(ms, args.minutes)
        entries[model] = {'settings': settings, 'probe_ms_per_iter': round(ms, 1), 'max_iters': iters,
                          'eval_interval': max(1, iters // 5),
                          'params': params_of(config, vocab_size, settings['model_type'],
                                              **{k: v for k, v in settings.items() if k != 'model_type'})}
        print(f"[plan] {model}: {ms:.0f} ms/iter -> {iters} iterations, {entries[model]['params']:,} parameters "
              f"(the Backpack has {target:,})", flush=True)
        path.write_text(json.dumps(entries, indent=1))
    shutil.rmtree(args.work_dir / 'probe', ignore_errors=True)
    return entries


def train(args, run, entries):
    for model in args.models:
        out_dir, entry = args.work_dir / model, entries[model]
        if finished(out_dir, args.minutes, entry['max_iters']):
            print(f"[train] {model}: finished", flush=True)
            continue
        resume = ['--init_from', 'resume'] if (out_dir / 'ckpt.pt').is_file() else ['--overwrite']
        run('train', model, python('train.py', *train_args(args, model, entry), *resume), args.work_dir / f'{model}.train.log')


def evaluation_current(path, out_dir):
    import evaluate
    return path.is_file() and evaluate.stale_results(json.loads(path.read_text()), out_dir) is None


def evaluate_models(args, run):
    for model in args.models:
        out_dir, log = args.work_dir / model, args.work_dir / f'{model}.evaluate.log'
        if not evaluation_current(out_dir / 'evaluation_results.json', out_dir):
            run('evaluate', model, python('run_full_evaluation.py', '--out_dir', out_dir, '--device', 'cpu',
                                          '--translation_samples', args.translation_samples), log)
        for name, files in [('europarl', None), *args.test_sets]:
            for beam in (1, EXTRA_BEAM):
                if name == 'europarl' and beam == 1:
                    continue  # in evaluation_results.json
                path = out_dir / f'translation_{name}_beam{beam}.json'
                if evaluation_current(path, out_dir):
                    continue
                source = ['--src_file', files[0], '--tgt_file', files[1]] if files else []
                run('evaluate', model, python('evaluate.py', '--out_dir', out_dir, '--device', 'cpu', '--translation',
                                              '--translation_samples', args.translation_samples, *source,
                                              '--beam_size', beam, '--output', path), log)


def compare(args, run):
    for other, folder in (('transformer', 'comparison'), ('transformer_wide', 'comparison_wide')):
        if {'backpack', other} <= set(args.models):
            run('compare', other, python('compare_models.py', '--backpack_dir', args.work_dir / 'backpack',
                                         '--transformer_dir', args.work_dir / other, '--device', 'cpu',
                                         '--translation_samples', args.translation_samples,
                                         '--output_dir', args.work_dir / folder), args.work_dir / 'compare.log')


def collect(args):
    target = args.results
    target.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        (target / model).mkdir(exist_ok=True)
        for pattern in EVIDENCE:
            for file in (args.work_dir / model).glob(pattern):
                if file.is_dir():
                    shutil.copytree(file, target / model / file.name, dirs_exist_ok=True)
                else:
                    shutil.copy(file, target / model / file.name)
    for folder in ('comparison', 'comparison_wide'):
        if (args.work_dir / folder).is_dir():
            shutil.copytree(args.work_dir / folder, target / folder, dirs_exist_ok=True)
    shutil.copy(args.work_dir / 'plan.json', target / 'plan.json')
    revision = git_revision()
    commands = json.loads((args.work_dir / 'commands.json').read_text())
    run = {'command': 'python experiments/cpu_reference.py ' + ' '.join(sys.argv[1:]),
           'minutes': args.minutes, 'config': args.config, 'data_dir': str(args.data_dir),
           'machine': system.machine('cpu'), 'git_revision': revision, 'commands': commands,
           'wall_s': {step: round(sum(c['wall_s'] for c in commands if c['step'] == step), 1) for step in STEPS
                      if any(c['step'] == step for c in commands)}}
    (target / 'run.json').write_text(json.dumps(run, indent=1) + '\n')
    print(f"[collect] {target}", flush=True)


def test_set(text):
    name, _, files = text.partition('=')
    src, _, tgt = files.partition(',')
    if not (name and src and tgt):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=EN_FILE,FR_FILE")
    return name, (src, tgt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data_dir', default='data/europarl_bpe8k', help='made by data/europarl/prepare.py')
    p.add_argument('--config', default='train_europarl_cpu')
    p.add_argument('--minutes', type=float, default=45.0, help='wall-clock budget of each training run')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    p.add_argument('--steps', nargs='+', default=list(STEPS), choices=STEPS)
    p.add_argument('--probe_iters', type=int, default=30)
    p.add_argument('--translation_samples', type=int, default=200, help='test pairs per direction and set')
    p.add_argument('--test_sets', nargs='*', type=test_set, metavar='NAME=EN_FILE,FR_FILE',
                   default=[('newstest2014', ('../shared/data/mt_testsets/newstest2014.en-fr.en',
                                              '../shared/data/mt_testsets/newstest2014.en-fr.fr'))],
                   help='more translation test sets, greedy and beam 4 (default: newstest2014 from ../shared)')
    p.add_argument('--work_dir', type=Path, default=Path('out/cpu_reference'), help='runs and checkpoints')
    p.add_argument('--results', type=Path, default=REPO / 'results' / 'cpu_reference')
    args = p.parse_args(argv)
    for name, files in args.test_sets:
        for f in files:
            if 'evaluate' in args.steps and not (REPO / f).is_file():
                raise MissingFileError(f"test set {name}: {f} not found (the shared mt_testsets; pass --test_sets "
                                       f"NAME=EN,FR with your copy, or --test_sets with nothing to skip extra sets)")
    args.work_dir = (REPO / args.work_dir).resolve() if not args.work_dir.is_absolute() else args.work_dir
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run = Runner(args.work_dir)
    entries = plan(args) if 'plan' in args.steps or 'train' in args.steps else None
    if 'train' in args.steps:
        train(args, run, entries)
    if 'evaluate' in args.steps:
        evaluate_models(args, run)
    if 'compare' in args.steps:
        compare(args, run)
    if 'collect' in args.steps:
        collect(args)


if __name__ == '__main__':
    run_main(main)
