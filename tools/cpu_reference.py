"""
The CPU reference experiment in one command: a Backpack, its Transformer twin (the same contextual network) and
the Transformer widened to the Backpack's parameter count, each trained for the same compute, fully evaluated,
compared, and collected as evidence (never weights) into results/cpu_reference/.

The whole reference (size S with 3 training seeds, size M with 1; bfloat16 and torch.compile come from the config):

    python tools/cpu_reference.py --data_dir data/europarl_bpe8k --sizes S M --seeds 0 1 2 --size_seeds M=0

It can be run in pieces (the plan first, for all sizes and seeds at once, then e.g. `--sizes S --seeds 1`): every
step keeps what is done, and collect gathers every planned run that has been evaluated.

Equal compute that does not depend on the host's load: one speed probe per distinct model shape, all taken
together in the plan step before any training, turns each size's budget in probe-minutes (--budget, default S=30
M=60) into iterations (max_iters = lr_decay_iters, cpu_sweep's rule); the runs then go by iterations only, however
loaded the host is while they train (no --max_minutes), and the wall-clock each took is recorded beside them.
plan.json states each budget in probe-minutes and in training FLOPs (train.py's flops_per_token, which counts the
sense network and the sense mixture, x tokens per iteration x iterations).

Sizes (--sizes): S = the config's recipe (d 128, 2 layers, 2 heads); M = the next size up, as in the recorded
sweep (results/cpu_reference/sweep: d 192, 3 layers, 3 heads, learning rate 1.5e-3). In each size the wide
Transformer's n_embd is the multiple of 8 x n_head whose parameter count is closest to that size's Backpack.
Seeds (--seeds, per size --size_seeds SIZE=S1,S2): train.py's --seed (weights and batch order).

Steps (--steps, default all), each skipped when its output exists and is current, so rerunning the same
command after an interruption continues where it stopped:
  plan      the probes -> WORK/plan.json (kept, so that a resumed run keeps its schedule).
  train     `train.py --config CONFIG --model_type M --seed S --max_iters N --lr_decay_iters N ...` into
            WORK/<size>/<model>_seed<s>; a run with a ckpt.pt that has not reached max_iters is continued with
            --init_from resume.
  evaluate  run_full_evaluation.py (greedy, Europarl test), then evaluate.py --translation with beam 4 and on
            each --test_sets set (greedy and beam 4) into WORK/<size>/<run>/translation_<set>_beam<b>.json.
  compare   compare_models.py per size and seed: Backpack vs twin (WORK/<size>/comparison_seed<s>), Backpack vs
            wide (WORK/<size>/comparison_wide_seed<s>).
  analyses  per size and seed, once the Backpack and its twin are trained: experiments/alignment.py (the twin's
            attention and IBM 1 on IBM1_PAIRS pairs as baselines; the IBM 1 table cached in WORK) and
            experiments/cross_edit.py (with the twin) into the Backpack's WORK dir, alignment.json and
            cross_edit.json, each redone only when its models' checkpoints changed.
  collect   results/cpu_reference/<size>/<model>_seed<s>/ for every planned run evaluated so far: its results,
            report, training log, translation files, the PNGs (alpha and senses for seed 0 only) and the test
            sentences, meta.json and tokenizer that `verify_evaluation.py --committed` reads (kept once in
            results/cpu_reference/shared/, linked from each run); results/cpu_reference/<size>/
            comparison[_wide]_seed<s>/; plan.json and run.json (every command with its wall-clock and git
            revision, each run's training wall-clock, the machine, the runs still pending). Paths under the
            checkout the runs were made in are written relative to it. Then tools/seed_statistics.py
            over the seeds collected so far: <size>/seeds.{json,md} (means over seeds with intervals holding
            the seeds' variance, paired Backpack − twin and − wide differences) and seeds.md (size M beside S).

  release   export_hf.py of seed 0 of each size-S model into its collected evidence, <model>_seed0/hf/ (the
            weights, about 30 MB for the three; what the export shares with the evidence is linked, not copied).

Runs go one after another: each gets the whole machine.
"""
import argparse
import fcntl
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
from tools.cpu_sweep import fitted_iters, probe_ms_per_iter  # noqa: E402

MODELS = ('backpack', 'transformer', 'transformer_wide')
STEPS = ('plan', 'train', 'evaluate', 'compare', 'analyses', 'collect', 'release')
IBM1_PAIRS = 200_000  # the analyses' IBM 1 baseline: Europarl training pairs (the table is trained once, cached)
# each size: train.py settings over the config's. S is the recipe itself; M the sweep's next size up
# (results/cpu_reference/sweep/sweep.json, d192-L3-k16-T128: n_embd % n_head == 0 and n_embd % n_senses == 0)
SIZES = {'S': {}, 'M': {'n_embd': 192, 'n_layer': 3, 'n_head': 3, 'learning_rate': 1.5e-3}}
BUDGET = {'S': 30.0, 'M': 60.0}  # probe-minutes of training per run
EXTRA_BEAM = 4
# copied from each out_dir into the results: evidence, never weights; with what verify_evaluation.py --committed
# reads to check it (the held-out test sentences, meta.json, the tokenizer)
EVIDENCE = ('evaluation_results.json', 'evaluation_report.md', 'training_log.json', 'sense_labels.json',
            'sense_roles.json', 'alignment.json', 'cross_edit.json', '*.png', 'translation_*.json', 'meta.json', 'test.en', 'test.fr', 'tokenizer')
SHARED = ('meta.json', 'test.en', 'test.fr', 'tokenizer')  # the data's: alike in every run, kept once
TEXT_EVIDENCE = ('.json', '.md')  # rewritten with paths relative to the runs' checkout
RELEASE = ('S', 0)  # the size and seed whose models are released with their weights (about 30 MB for the three)
FIGURE_SEED = 0  # the figures of one seed are enough to look at; every seed's numbers are kept
ALL_SEEDS_FIGURES = ('loss_curve.png',)
FULL_COMMAND = ('python tools/cpu_reference.py --data_dir data/europarl_bpe8k --sizes S M --seeds 0 1 2 '
                '--size_seeds M=0')
PLAN_NOTE = ("Each run trains max_iters = lr_decay_iters iterations, whatever the host's load: the iterations its "
             "size's budget buys at the speed probed for its shape (one probe per shape, all in the plan step; "
             "cpu_sweep.fitted_iters keeps 10% for the evaluations). probe_minutes = the budget; "
             "planned_probe_minutes = max_iters x probe_ms_per_iter; train_flops = flops_per_token (train.py's "
             "estimate: 6 x weights per token, attention, and for the Backpack the sense network run for every "
             "token and the sense mixture) x tokens_per_iter x max_iters. The wall-clock each run took is in "
             "run.json.")


def python(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


class Runner:
    """Runs commands from the repository root, prints and records each with its wall-clock in commands.json.
    Each record is added under a lock to what the file holds then, so that a second driver (evaluating one run
    while the first trains the next) keeps both drivers' records."""

    def __init__(self, work):
        self.path = work / 'commands.json'

    @property
    def records(self):
        return json.loads(self.path.read_text()) if self.path.is_file() else []

    def record(self, entry):
        with open(self.path.with_suffix('.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tmp = self.path.with_suffix('.tmp')
            tmp.write_text(json.dumps([*self.records, entry], indent=1))
            tmp.replace(self.path)

    def __call__(self, step, model, cmd, log_path):
        shown = 'python ' + ' '.join([os.path.relpath(cmd[1], REPO), *map(str, cmd[2:])])
        print(f"[{step}] {model}: {shown}", flush=True)
        t0, revision = time.time(), git_revision()  # the code the command starts with
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, 'a') as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.record({'step': step, 'model': model, 'command': shown, 'wall_s': round(time.time() - t0, 1),
                     'exit': proc.returncode, 'finished_at': time.strftime('%Y-%m-%d %H:%M:%S'),
                     'git_revision': revision})
        if proc.returncode:
            tail = Path(log_path).read_text(errors='replace').strip().splitlines()[-1:] or ['']
            raise UserError(f"{step} {model} failed (exit {proc.returncode}, log {log_path}): {tail[0]}")


def git_revision():
    # -dirty: the command ran with uncommitted changes
    return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def run_name(size, model, seed):
    return f'{size}/{model}_seed{seed}'


def model_settings(name, size, wide_n_embd=None):
    """train.py settings of a model of a size, over the config's."""
    return {'model_type': 'backpack' if name == 'backpack' else 'transformer', **SIZES[size],
            **({'n_embd': wide_n_embd} if name == 'transformer_wide' else {})}


def train_defaults():
    import train as train_py
    return {k: getattr(train_py, k) for k in train_py.CONFIG_KEYS}


def built(config, vocab_size, model_type, **overrides):
    """(total parameters, ModelConfig) of the model train.py would build from the config file (and overrides)."""
    from dataclasses import fields
    from checkpoint import build_model
    from model import ModelConfig
    settings = {**train_defaults(), **config, **overrides, 'vocab_size': vocab_size}
    args = {f.name: settings[f.name] for f in fields(ModelConfig) if f.name in settings}
    model = build_model(model_type, args)
    return model.get_num_params(non_embedding=False), model.config


def params_of(config, vocab_size, model_type, **overrides):
    return built(config, vocab_size, model_type, **overrides)[0]


def training_flops(config, vocab_size, settings, max_iters):
    """train.py's estimate: flops_per_token x tokens per iteration (one process on the CPU) x iterations."""
    from train import flops_per_token
    merged = {**train_defaults(), **config, **settings}
    model_type = settings['model_type']
    _, model_cfg = built(config, vocab_size, model_type, **{k: v for k, v in settings.items() if k != 'model_type'})
    per_token = flops_per_token(model_type, model_cfg, merged['block_size'])
    tokens_per_iter = merged['gradient_accumulation_steps'] * merged['batch_size'] * merged['block_size']
    return per_token, tokens_per_iter, per_token * tokens_per_iter * max_iters


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
    best, best_gap = None, None
    for d in range(config['n_embd'], 4 * config['n_embd'] + 1, step):
        got = params_of(config, vocab_size, 'transformer', n_embd=d)
        if best_gap is None or abs(got - target) < best_gap:
            best, best_gap, best_params = d, abs(got - target), got
        if got > target:  # the count grows with n_embd: no wider one is closer
            break
    return best, target, best_params


def train_args(args, size, model, seed, entry):
    return ['--config', args.config, '--data_dir', args.data_dir, '--device', 'cpu',
            '--out_dir', args.work_dir / run_name(size, model, seed),
            *[a for k, v in entry['settings'].items() for a in (f'--{k}', v)], '--seed', seed,
            '--max_iters', entry['max_iters'], '--lr_decay_iters', entry['max_iters'],
            '--eval_interval', entry['eval_interval']]


def finished(out_dir, max_iters):
    log_path = out_dir / 'training_log.json'
    if not log_path.is_file():
        return False
    log = json.loads(log_path.read_text())
    # the iteration reached (train.py's iter_num), not the last evaluation's, which can be short of max_iters;
    # logs written before train.py recorded it have only the evaluations
    reached = log.get('iter_num', log['evals'][-1]['iter'] if log['evals'] else 0)
    return reached >= max_iters


def plan_entry(config, vocab_size, settings, ms, budget):
    """plan.json's entry of a model: the iterations its probed speed (ms per iteration) buys in `budget`
    probe-minutes, and what they amount to in parameters and training FLOPs."""
    iters = fitted_iters(ms, budget)
    per_token, tokens_per_iter, flops = training_flops(config, vocab_size, settings, iters)
    return {'settings': settings, 'probe_ms_per_iter': ms, 'max_iters': iters, 'eval_interval': max(1, iters // 5),
            'params': params_of(config, vocab_size, settings['model_type'],
                                **{k: v for k, v in settings.items() if k != 'model_type'}),
            'probe_minutes': budget, 'planned_probe_minutes': round(iters * ms / 60_000, 2),
            'flops_per_token': per_token, 'tokens_per_iter': tokens_per_iter, 'train_flops': flops}


def read_plan(path):
    if not path.is_file():
        return {'note': PLAN_NOTE, 'sizes': {}, 'seeds': {}}
    plan = json.loads(path.read_text())
    if 'sizes' not in plan:
        raise UserError(f"{path} is an older plan (one size, a wall-clock budget per run): plan into another "
                        f"--work_dir, or remove it to probe again")
    return plan


def plan(args):
    path = args.work_dir / 'plan.json'
    plan = read_plan(path)
    config = read_config(args.config)
    minutes_cap = {**train_defaults(), **config}['max_minutes']
    if minutes_cap:
        raise UserError(f"config {args.config} sets max_minutes = {minutes_cap:g}: the reference runs go by "
                        f"iterations only (fitted to the budget by the speed probe), set it to 0")
    data = REPO / args.data_dir
    meta_path = (data if data.is_dir() else REPO / 'data' / args.data_dir) / 'meta.json'  # train.py's rule
    if not meta_path.is_file():
        raise MissingFileError(f"{meta_path} not found: prepare the data first (python data/europarl/prepare.py "
                               f"--source local --tokenizer bpe --vocab_size 8000 --out_dir {args.data_dir})")
    vocab_size = json.loads(meta_path.read_text())['vocab_size']
    probed = {json.dumps(e['settings'], sort_keys=True): e['probe_ms_per_iter']
              for s in plan['sizes'].values() for e in s['models'].values()}  # one probe per shape
    for size in args.sizes:
        budget = args.budget[size]
        sized = plan['sizes'].setdefault(size, {'probe_minutes': budget, 'settings': SIZES[size], 'models': {}})
        if sized['probe_minutes'] != budget:
            raise UserError(f"{path} planned size {size} for {sized['probe_minutes']:g} probe-minutes, not "
                            f"--budget {size}={budget:g}: plan into another --work_dir, or remove it to plan again")
        size_config = {**config, **SIZES[size]}
        (args.work_dir / size).mkdir(exist_ok=True)
        wide, target, _ = wide_width(size_config, vocab_size)
        for model in args.models:
            if model in sized['models']:
                continue
            settings = model_settings(model, size, wide)
            shape = json.dumps(settings, sort_keys=True)
            if shape not in probed:
                probe_args = ['--config', args.config, '--data_dir', args.data_dir, '--device', 'cpu',
                              *[a for k, v in settings.items() for a in (f'--{k}', v)], '--overwrite']
                probed[shape] = round(probe_ms_per_iter(
                    f'{size} {model}', probe_args, args.work_dir / 'probe' / f'{size}-{model}',
                    args.work_dir / size / f'{model}.probe.log', args.probe_iters), 1)
            entry = sized['models'][model] = plan_entry(config, vocab_size, settings, probed[shape], budget)
            print(f"[plan] {size} {model}: {entry['probe_ms_per_iter']:.0f} ms/iter -> {entry['max_iters']} iterations "
                  f"({budget:g} probe-minutes, {entry['train_flops']:.3e} FLOPs), {entry['params']:,} parameters "
                  f"(the Backpack has {target:,})", flush=True)
            path.write_text(json.dumps(plan, indent=1))
    for size in args.sizes:
        plan['seeds'][size] = sorted(set(plan['seeds'].get(size, [])) | set(args.seeds_of[size]))
    path.write_text(json.dumps(plan, indent=1))
    shutil.rmtree(args.work_dir / 'probe', ignore_errors=True)
    return plan


def runs(args):
    """(size, model, seed, out_dir) of every run the command names, in training order."""
    return [(size, model, seed, args.work_dir / run_name(size, model, seed))
            for size in args.sizes for seed in args.seeds_of[size] for model in args.models]


def train(args, run, plan, arguments=train_args):
    """Trains each run to its planned iterations (arguments(args, size, model, seed, entry): train.py's flags):
    a finished run is kept, an unfinished one resumes from its ckpt.pt."""
    for size, model, seed, out_dir in runs(args):
        name, entry = run_name(size, model, seed), plan['sizes'][size]['models'][model]
        if finished(out_dir, entry['max_iters']):
            print(f"[train] {name}: finished", flush=True)
            continue
        resume = ['--init_from', 'resume'] if (out_dir / 'ckpt.pt').is_file() else ['--overwrite']
        run('train', name, python('train.py', *arguments(args, size, model, seed, entry), *resume),
            args.work_dir / f'{name}.train.log')


def evaluation_current(path, out_dir):
    import evaluate
    return path.is_file() and evaluate.stale_results(json.loads(path.read_text()), out_dir) is None


def extra_translations(args):
    """(file name, set name, (EN file, FR file) or None for the out_dir's Europarl test, beam) of each translation
    evaluated beside evaluation_results.json: Europarl at beam 4, each --test_sets set greedy and at beam 4."""
    return [(f'translation_{set_name}_beam{beam}.json', set_name, files, beam)
            for set_name, files in [('europarl', None), *args.test_sets] for beam in (1, EXTRA_BEAM)
            if not (set_name == 'europarl' and beam == 1)]  # (greedy Europarl: in evaluation_results.json)


def evaluate_models(args, run, plan):
    for size, model, seed, out_dir in runs(args):
        name = run_name(size, model, seed)
        entry = plan['sizes'].get(size, {}).get('models', {}).get(model)
        if entry is None:
            raise UserError(f"{name} is not in {args.work_dir / 'plan.json'}: run --steps plan (or train) first")
        if not finished(out_dir, entry['max_iters']):
            print(f"[evaluate] {name}: not trained to its planned iterations yet, skipped", flush=True)
            continue
        log = args.work_dir / f'{name}.evaluate.log'
        if not evaluation_current(out_dir / 'evaluation_results.json', out_dir):
            run('evaluate', name, python('run_full_evaluation.py', '--out_dir', out_dir, '--device', 'cpu',
                                         '--translation_samples', args.translation_samples), log)
        for file_name, _, files, beam in extra_translations(args):
            path = out_dir / file_name
            if evaluation_current(path, out_dir):
                continue
            source = ['--src_file', files[0], '--tgt_file', files[1]] if files else []
            run('evaluate', name, python('evaluate.py', '--out_dir', out_dir, '--device', 'cpu', '--translation',
                                         '--translation_samples', args.translation_samples, *source,
                                         '--beam_size', beam, '--output', path), log)


def evaluated(args, out_dir):
    """Whether every evaluation of a run is there (evaluation_results.json and extra_translations'): collect
    takes only those, so that a run still being evaluated is not committed half-way."""
    return all((out_dir / name).is_file() for name in ['evaluation_results.json',
                                                        *(f for f, *_ in extra_translations(args))])


def compare(args, run):
    for size in args.sizes:
        for seed in args.seeds_of[size]:
            for other, folder in (('transformer', 'comparison'), ('transformer_wide', 'comparison_wide')):
                if {'backpack', other} <= set(args.models):
                    run('compare', run_name(size, other, seed),
                        python('compare_models.py', '--backpack_dir', args.work_dir / run_name(size, 'backpack', seed),
                               '--transformer_dir', args.work_dir / run_name(size, other, seed), '--device', 'cpu',
                               '--translation_samples', args.translation_samples,
                               '--output_dir', args.work_dir / size / f'{folder}_seed{seed}'),
                        args.work_dir / size / 'compare.log')


def analyses_current(path, *out_dirs):
    """Whether an analysis JSON exists and names the checkpoints its models have now (by sha256)."""
    import outdir
    if not path.is_file():
        return False
    text = path.read_text()
    return all(outdir.checkpoint_record(d)['sha256'] in text for d in out_dirs)


def analyses(args, run, plan):
    """The bilingual analyses of issue 23 that need the twin as well as the Backpack (module docstring)."""
    for size in args.sizes:
        for seed in args.seeds_of[size]:
            bp, tw = (args.work_dir / run_name(size, m, seed) for m in ('backpack', 'transformer'))
            models = plan['sizes'][size]['models']
            name = run_name(size, 'backpack', seed)
            if not (finished(bp, models['backpack']['max_iters']) and finished(tw, models['transformer']['max_iters'])):
                print(f"[analyses] {name}: the Backpack or its twin is not trained yet, skipped", flush=True)
                continue
            log = args.work_dir / f'{name}.analyses.log'
            if not analyses_current(bp / 'alignment.json', bp, tw):
                run('analyses', name, python('experiments/alignment.py', '--out_dir', bp, '--twin_dir', tw,
                                             '--ibm1_pairs', IBM1_PAIRS,
                                             '--ibm1_table', args.work_dir / f'ibm1_{IBM1_PAIRS}.json.gz',
                                             '--output', bp / 'alignment.json'), log)
            if not analyses_current(bp / 'cross_edit.json', bp, tw):
                run('analyses', name, python('experiments/cross_edit.py', '--out_dir', bp, '--twin', tw,
                                             '--output', bp / 'cross_edit.json'), log)


def run_root(work_dir):
    """The checkout the runs were made in (the git work tree holding work_dir, else this repository): the
    paths the runs wrote under it are written relative to it in the collected evidence."""
    top = subprocess.run(['git', 'rev-parse', '--show-toplevel'], cwd=work_dir, capture_output=True, text=True)
    return Path(top.stdout.strip()).resolve() if top.returncode == 0 else REPO


def portable_text(text, root):
    """`text` with every absolute path under the runs' checkout `root`, or beside it (its ../shared), written
    relative to it: train.py's config records its out_dir as given (cpu_reference gives absolute ones), and
    meta.json the source folder prepare.py read."""
    return text.replace(f'{root}/', '').replace(f'{root.parent}/', '../')


def portable_copy(file, dest, root):
    """Copy one evidence file, a text file (TEXT_EVIDENCE) with portable_text."""
    if file.suffix in TEXT_EVIDENCE:
        dest.write_text(portable_text(file.read_text(encoding='utf-8'), root), encoding='utf-8')
    else:
        shutil.copy(file, dest)


def tree_sha256(path):
    """sha256 of a folder's files: their relative names and contents."""
    import hashlib
    from experiments.eval_data import sha256_file
    files = [(p.relative_to(path).as_posix(), sha256_file(p)) for p in sorted(path.rglob('*')) if p.is_file()]
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def share(item, dest, shared, root):
    """The data files every run of the reference copies alike (SHARED) are kept once, in `shared`; the run's
    folder gets a relative symlink to that copy, which verify_evaluation.py --committed reads through like the
    file itself. A run whose copy differs (another data dir) keeps its own."""
    kept, link = shared / item.name, dest / item.name
    copy = (lambda src, dst: shutil.copytree(src, dst, dirs_exist_ok=True)) if item.is_dir() else \
        (lambda src, dst: portable_copy(src, dst, root))
    if not kept.exists():
        shared.mkdir(parents=True, exist_ok=True)
        copy(item, kept)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    same = (tree_sha256(kept) == tree_sha256(item) if item.is_dir() else
            kept.read_bytes() == (portable_text(item.read_text(encoding='utf-8'), root).encode()
                                  if item.suffix in TEXT_EVIDENCE else item.read_bytes()))
    if same:
        link.symlink_to(os.path.relpath(kept, dest), target_is_directory=item.is_dir())
    else:
        copy(item, link)


def collect(args):
    """Copy every planned run that has been evaluated (all seeds plan.json names, whichever command trained
    them) into the results; those not evaluated yet are listed in run.json as pending, unless an earlier collect
    has them in the results already (a work dir on another machine): those are kept, with their command records."""
    target, root = args.results, run_root(args.work_dir)
    target.mkdir(parents=True, exist_ok=True)
    plan = read_plan(args.work_dir / 'plan.json')
    collected, pending = [], []
    previous = json.loads((target / 'run.json').read_text()) if (target / 'run.json').is_file() else {}
    for size, seeds in plan['seeds'].items():
        for seed in seeds:
            for model in plan['sizes'][size]['models']:
                out_dir = args.work_dir / run_name(size, model, seed)
                if not evaluated(args, out_dir):
                    # collected by an earlier collect (e.g. committed, and this work dir is another machine's):
                    # kept as it is, and counted
                    kept = evaluated(args, target / run_name(size, model, seed))
                    (collected if kept else pending).append(run_name(size, model, seed))
                    continue
                collected.append(run_name(size, model, seed))
                dest = target / run_name(size, model, seed)
                dest.mkdir(parents=True, exist_ok=True)
                for pattern in EVIDENCE:
                    for file in sorted(out_dir.glob(pattern)):
                        if file.name in SHARED:
                            share(file, dest, target / 'shared', root)
                        elif file.suffix == '.png' and seed != FIGURE_SEED and file.name not in ALL_SEEDS_FIGURES:
                            continue
                        elif file.is_dir():
                            shutil.copytree(file, dest / file.name, dirs_exist_ok=True)
                        else:
                            portable_copy(file, dest / file.name, root)
            for folder in (f'comparison_seed{seed}', f'comparison_wide_seed{seed}'):
                source = args.work_dir / size / folder
                if source.is_dir():
                    (target / size / folder).mkdir(parents=True, exist_ok=True)
                    for file in sorted(source.iterdir()):
                        portable_copy(file, target / size / folder / file.name, root)
    portable_copy(args.work_dir / 'plan.json', target / 'plan.json', root)
    commands = json.loads((args.work_dir / 'commands.json').read_text())
    # the earlier collect's records of runs this work dir has none of (made on another machine) are kept
    here = {(c['step'], c['model']) for c in commands}
    commands = [c for c in previous.get('commands', []) if (c['step'], c['model']) not in here] + commands
    run = {'command': FULL_COMMAND, 'collected_by': 'python tools/cpu_reference.py ' + ' '.join(sys.argv[1:]),
           'budget_probe_minutes': {size: sized['probe_minutes'] for size, sized in plan['sizes'].items()},
           'seeds': plan['seeds'], 'collected': collected, 'pending': pending,
           'figures': f"alpha and sense PNGs of seed {FIGURE_SEED} only (each run's report names them; the numbers "
                      f"behind them are in every run's results)",
           'config': args.config, 'data_dir': str(args.data_dir),
           'machine': system.machine('cpu'), 'collected_at_revision': git_revision(),
           'runs_made_at_revisions': sorted({c['git_revision'] for c in commands}), 'commands': commands,
           'wall_s': {step: round(sum(c['wall_s'] for c in commands if c['step'] == step), 1) for step in STEPS
                      if any(c['step'] == step for c in commands)},
           # each run's training wall-clock, all its segments: beside the iterations of plan.json
           'train_wall_s': {name: round(sum(c['wall_s'] for c in commands if c['step'] == 'train'
                                            and c['model'] == name), 1)
                            for name in dict.fromkeys(c['model'] for c in commands if c['step'] == 'train')}}
    text = json.dumps(run, indent=1) + '\n'
    (target / 'run.json').write_text(portable_text(text, root))
    print(f"[collect] {target}: {len(collected)} runs" + (f", pending {', '.join(pending)}" if pending else ''),
          flush=True)
    if any('/backpack_seed' in name for name in collected):
        from tools import seed_statistics
        for path, text in seed_statistics.outputs(target).items():  # the statistics over the seeds collected so far
            path.write_text(text, encoding='utf-8')
            print(f"[collect] {path.relative_to(target)}", flush=True)


def release(args):
    """Export the released models (RELEASE: seed 0 of size S) with export_hf.py into their collected evidence,
    results/cpu_reference/S/<model>_seed0/hf/ (fp32 safetensors, config, tokenizers, model card, release.json),
    unless the export there is already of the collected results; then link what the export holds alike with the
    evidence beside it (its evaluation_results.json is the collected one, which verify_evaluation.py checks, and
    its meta.json and tokenizer are the shared data's), so that nothing is committed twice."""
    from experiments.eval_data import sha256_file
    size, seed = RELEASE
    for model in MODELS:
        name = run_name(size, model, seed)
        dest, hf = args.results / name, args.results / name / 'hf'
        if not (dest / 'evaluation_results.json').is_file():
            print(f"[release] {name}: not collected yet", flush=True)
            continue
        record = hf / 'release.json'
        if not (record.is_file() and json.loads(record.read_text())['evaluation_results']['sha256']
                == sha256_file(dest / 'evaluation_results.json')):
            shown_hf = os.path.relpath(hf, REPO) if REPO in hf.resolve().parents else hf  # the model card names it
            cmd = python('export_hf.py', '--out_dir', args.work_dir / name, '--hf_dir', shown_hf, '--overwrite')
            print(f"[release] {name}: {' '.join(map(str, cmd[1:]))}", flush=True)
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                raise UserError(f"export of {name} failed: {(proc.stderr.strip().splitlines() or [''])[-1]}")
        for item, kept in (('evaluation_results.json', dest / 'evaluation_results.json'),
                           ('meta.json', args.results / 'shared' / 'meta.json'),
                           ('tokenizer', args.results / 'shared' / 'tokenizer')):
            link_alike(hf / item, kept)
        print(f"[release] {hf.relative_to(args.results)}", flush=True)


def link_alike(path, kept):
    """Replace `path` by a relative symlink to `kept` when both hold the same bytes (file or folder)."""
    if path.is_symlink() or not path.exists() or not kept.exists() or path.is_dir() != kept.is_dir():
        return
    same = tree_sha256(path) == tree_sha256(kept) if path.is_dir() else path.read_bytes() == kept.read_bytes()
    if same:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.symlink_to(os.path.relpath(kept, path.parent), target_is_directory=kept.is_dir())


def test_set(text):
    name, _, files = text.partition('=')
    src, _, tgt = files.partition(',')
    if not (name and src and tgt):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=EN_FILE,FR_FILE")
    return name, (src, tgt)


def seed(text):
    value = int(text) if text.isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is an integer >= 0")
    return value


def minutes(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: minutes must be a number > 0")
    return value


def per_size(parse_value):
    """SIZE=VALUE, VALUE parsed by parse_value."""
    def parse(text):
        size, _, value = text.partition('=')
        if size not in SIZES or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: expected SIZE=VALUE with SIZE one of {', '.join(SIZES)}")
        return size, parse_value(value)
    return parse


def seed_list(text):
    return [seed(s) for s in text.split(',')]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data_dir', default='data/europarl_bpe8k', help='made by data/europarl/prepare.py')
    p.add_argument('--config', default='train_europarl_cpu')
    p.add_argument('--sizes', nargs='+', default=['S'], choices=list(SIZES),
                   help='S: the recipe (d 128, 2 layers); M: d 192, 3 layers, 3 heads')
    p.add_argument('--budget', nargs='+', type=per_size(minutes), default=[], metavar='SIZE=MINUTES',
                   help='training budget of each run of a size, in probe-minutes (default '
                        + ' '.join(f'{k}={v:g}' for k, v in BUDGET.items()) + ')')
    p.add_argument('--seeds', nargs='+', type=seed, default=[0], help="train.py --seed of each size's runs")
    p.add_argument('--size_seeds', nargs='+', type=per_size(seed_list), default=[], metavar='SIZE=SEED[,SEED...]',
                   help='other seeds for a size (e.g. M=0: one seed of M while --seeds gives S three)')
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
    args.sizes = list(dict.fromkeys(args.sizes))
    args.budget = {**BUDGET, **dict(args.budget)}
    args.seeds_of = {size: list(dict.fromkeys(args.seeds)) for size in args.sizes}
    args.seeds_of.update({size: list(dict.fromkeys(s)) for size, s in args.size_seeds if size in args.sizes})
    for name, files in args.test_sets:
        for f in files:
            if 'evaluate' in args.steps and not (REPO / f).is_file():
                raise MissingFileError(f"test set {name}: {f} not found (the shared mt_testsets; pass --test_sets "
                                       f"NAME=EN,FR with your copy, or --test_sets with nothing to skip extra sets)")
    args.work_dir = (REPO / args.work_dir).resolve() if not args.work_dir.is_absolute() else args.work_dir
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run = Runner(args.work_dir)
    planned = plan(args) if {'plan', 'train'} & set(args.steps) else read_plan(args.work_dir / 'plan.json') \
        if {'evaluate', 'analyses'} & set(args.steps) else None
    if 'train' in args.steps:
        train(args, run, planned)
    if 'evaluate' in args.steps:
        evaluate_models(args, run, planned)
    if 'compare' in args.steps:
        compare(args, run)
    if 'analyses' in args.steps:
        analyses(args, run, planned)
    if 'collect' in args.steps:
        collect(args)
    if 'release' in args.steps:
        release(args)


if __name__ == '__main__':
    run_main(main)
