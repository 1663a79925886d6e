"""
The reference experiment at the seed's shape on one GPU, in one command and at most 9 minutes on an H100/H200-class
GPU: a Backpack (config/train_europarl_gpu.py: d 384, 6 layers, 6 heads, k 16 senses, T 512, batch 32, bfloat16,
torch.compile), its Transformer twin (the same contextual network) and the Transformer widened to the Backpack's
parameter count (n_embd 528 at this shape: cpu_reference.wide_width's rule), each trained for the same compute,
evaluated, compared, and collected as evidence (never weights) into results/gpu_reference/.

    python data/europarl/prepare.py --language_pair en-fr --source local --src_dir ../shared/data/europarl_v7_fr_en \
        --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_bpe8k     # once, before; not in the 9 minutes
    python tools/gpu_reference.py             # the defaults: --device cuda --data_dir data/europarl_bpe8k

It has not been run on a GPU yet: the budget below is an estimate, and run.json records what each step took
(wall_s per step, total_s against limit_s) so that the first run on a GPU checks it.

The same experiment as tools/cpu_reference.py, built from its pieces: one speed probe per model shape, all
in the plan step, turns a budget in probe-minutes (--budget, default 0.4 per model) into iterations
(max_iters = lr_decay_iters, cpu_sweep.fitted_iters, which keeps 10 % for the evaluations during training), so
the three models get the same GPU time, whatever their speed; plan.json also states it in train.py's training FLOPs.
The steps, each skipped when its output exists (rerunning the command continues an interrupted one):
  plan      the probes -> WORK/plan.json.
  train     train.py by iterations into WORK/<size>/<model>_seed<s> (a run short of max_iters is resumed).
  evaluate  run_full_evaluation.py, greedy, on the Europarl test split, with EVALUATION's workload (below).
  compare   compare_models.py, same settings (it reuses each evaluation): WORK/<size>/comparison[_wide]_seed<s>.
  collect   results/gpu_reference/<size>/<model>_seed<s>/ (results, report, training log, train.py's output
            train.log, PNGs, translation files, and the test sentences, meta.json and tokenizer that
            `verify_evaluation.py --committed` reads), the comparison folders, plan.json and run.json: every
            command with its wall-clock, each step's total, each run's tokens/s and MFU (train.py's log lines:
            the median over its log intervals, the first of each segment, with the compilation, left out), the
            evaluation workload, the machine, the git revision. Paths are written relative to the repository.
The size is L (the config's shape: larger than cpu_reference's S and M); --tiny's is tiny.

The 9 minutes, estimated. train.py's FLOPs per token (flops_per_token, x 16,384 tokens per iteration): the
Backpack 185 M (3.04 TFLOP per iteration), the twin 96 M (1.58), the wide twin 165 M (2.71). Assumed throughput
140 TFLOP/s: 35 % MFU of ~400 TFLOP/s, or 14 % of the 989 TFLOP/s dense bf16 datasheet peak of an H100 SXM / H200
that train.py's MFU divides by (at d 384 the matmuls are too small to keep the GPU busy). A step then takes
~22, 11 and 19 ms, and 0.4 probe-minutes (0.36 of training after fitted_iters' margin) buy ~1,000, ~1,900 and
~1,100 iterations (16 M, 31 M, 18 M tokens).
  plan      ~2.5 min  3 probes of ~50 s: process start and CUDA ~8 s, a cold torch.compile of the training and
                      evaluation graphs ~35 s, 100 iterations, a checkpoint
  train     ~2.2 min  3 x 0.4 probe-minutes (evaluations included), plus ~20 s per run: process start, the
                      compilation again from inductor's on-disk cache, checkpoints, the loss plot
  evaluate  ~2.7 min  run_full_evaluation.py with translation_samples 200 per direction (greedy), sentence_pairs
                      1000, interventions all (its defaults), the models as evaluate.load_model loads them
                      (float32, eager); the CPU reference's extra translations (beam 4, newstest2014) are left
                      out. The Backpack ~80 s, each Transformer ~40 s. The largest single part, lexicon induction,
                      ranks the Backpack's 18 representations on the host's CPU: at this shape 149 CPU seconds
                      on the 2-core Xeon of the development machine (tools/eval_speed.py --sections bli on
                      an untrained Backpack), ~30 s assumed on the GPU host's 16 cores
  compare   ~0.6 min  2 comparisons that reuse the evaluations; their paired bootstrap of the word-similarity
                      Spearman intervals takes ~12 s of one core each, whatever the model (measured, --tiny)
  total     ~8 min    run.json: wall_s of each step, total_s, command_wall_s, limit_s 540, within_limit
Only the training part is set by the probes; if the fixed costs come out larger, lower --budget (each 0.1
probe-minutes is 18 s of the total).

--tiny runs the same steps with tiny shapes (1 layer, d 32, T 32, no compile), a budget of a few iterations and
a token evaluation (what tests/test_gpu_reference.py runs on a CPU, on a slice of the bundled sample); its
numbers mean nothing. --device (default cuda; cpu with --tiny) is checked first: a CUDA device torch cannot see
is one line, as is a data dir not prepared yet.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402  (before torch: the OpenMP setting torch reads when it loads)
from errors import MissingFileError, UserError, resolve_device, run_main  # noqa: E402
from tools.cpu_reference import (  # noqa: E402
    EVIDENCE, MODELS, Runner, evaluation_current, git_revision, minutes, plan_entry, python, read_config,
    read_plan, run_name, runs, train, train_defaults, wide_width)
from tools.cpu_reference import seed as seed_number  # noqa: E402  (the --seeds parser)
from tools.cpu_sweep import probe_ms_per_iter  # noqa: E402

STEPS = ('plan', 'train', 'evaluate', 'compare', 'collect')
LIMIT_S = 540  # the whole experiment, probes to comparisons, on one H100/H200-class GPU
# each size: train.py settings over the config's. L is the config itself (the seed's shape, larger than
# cpu_reference's S and M); tiny tests the plumbing on a CPU
SIZES = {'L': {},
         'tiny': {'block_size': 32, 'n_layer': 1, 'n_head': 2, 'n_embd': 32, 'n_senses': 16, 'batch_size': 8,
                  'compile': False, 'learning_rate': 1e-2, 'warmup_iters': 2, 'min_lr': 1e-3, 'eval_iters': 2,
                  'log_interval': 2}}
BUDGET = {'L': 0.4, 'tiny': 0.002}  # probe-minutes of training per run (tiny: about fitted_iters' floor, 10)
PROBE_ITERS = {'L': 100, 'tiny': 8}  # 3 log intervals after the first (which compiles)
# run_full_evaluation.py's workload (compare_models.py gets the same, so it reuses each evaluation)
EVALUATION = {'L': {'translation_samples': 200, 'sentence_pairs': 1000, 'interventions': 'all'},
              'tiny': {'translation_samples': 4, 'sentence_pairs': 20, 'interventions': 'none'}}
DEFAULTS = {  # (data_dir, work_dir, results) of each mode
    'L': ('data/europarl_bpe8k', 'out/gpu_reference', 'results/gpu_reference'),
    'tiny': ('data/europarl_sample', 'out/gpu_reference_tiny', 'out/gpu_reference_tiny/results')}
PREPARE = {
    'L': 'python data/europarl/prepare.py --language_pair en-fr --source local --src_dir '
         '../shared/data/europarl_v7_fr_en --tokenizer bpe --vocab_size 8000 --out_dir {}',
    'tiny': 'python data/europarl/prepare.py --language_pair en-fr --source sample --tokenizer bpe '
            '--vocab_size 8000 --out_dir {}'}
TEXT = ('.json', '.md', '.log')  # collected with their paths made relative to the repository
# train.py's line at each log interval, and the header that starts each segment (a resume starts another)
TRAIN_LINE = re.compile(r'iter \d+: loss \S+, lr \S+, ([\d.]+) ms/iter, ([\d,]+) tok/s, '
                        r'(?:mfu ([\d.]+)%|[\d.]+ TFLOP/s)(?:, peak memory ([\d.]+) GiB)?')
SEGMENT = re.compile(r'^\w+: [\d,]+ parameters; data ', re.M)


def shown(path):
    """A path as the commands get it: relative to the repository (their working directory) when inside it."""
    path = Path(path).resolve()
    return os.path.relpath(path, REPO) if REPO in path.parents or path == REPO else str(path)


def check_inputs(args):
    """The device and the data, before any work; returns the data's vocabulary size."""
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device} but torch {torch.__version__} sees no CUDA device: run it on "
                            f"a GPU machine, or --tiny --device cpu to test the plumbing here")
    args.device = resolve_device(args.device)
    meta = args.data / 'meta.json'
    if not meta.is_file():
        raise MissingFileError(f"{shown(meta)} not found: prepare the data first "
                               f"({PREPARE[args.size].format(args.data_dir)})")
    if {**train_defaults(), **read_config(args.config)}['max_minutes']:
        raise UserError(f"config {args.config} sets max_minutes: the reference runs go by iterations, set it to 0")
    return json.loads(meta.read_text())['vocab_size']


def model_settings(model, size, wide_n_embd):
    """train.py settings of a model of a size, over the config's."""
    return {'model_type': 'backpack' if model == 'backpack' else 'transformer', **SIZES[size],
            **({'n_embd': wide_n_embd} if model == 'transformer_wide' else {})}


def common_args(args):
    peak = ['--peak_flops', args.peak_tflops * 1e12] if args.peak_tflops else []
    return ['--config', args.config, '--data_dir', shown(args.data), '--device', args.device, *peak]


def setting_args(settings):
    return [a for k, v in settings.items() for a in (f'--{k}', v)]


def plan(args, vocab_size):
    """One probe per model (each is its own shape) -> each model's iterations for the budget, in WORK/plan.json."""
    path = args.work_dir / 'plan.json'
    plan = read_plan(path)
    plan.setdefault('device', args.device)
    if plan['device'] != args.device:
        raise UserError(f"{shown(path)} was probed on {plan['device']}, not --device {args.device}: plan into "
                        f"another --work_dir, or remove it to probe again")
    size, budget = args.size, args.budget
    sized = plan['sizes'].setdefault(size, {'probe_minutes': budget, 'settings': SIZES[size], 'models': {}})
    if sized['probe_minutes'] != budget:
        raise UserError(f"{shown(path)} planned {sized['probe_minutes']:g} probe-minutes per run, not --budget "
                        f"{budget:g}: plan into another --work_dir, or remove it to plan again")
    config = {**read_config(args.config), **SIZES[size]}
    (args.work_dir / size).mkdir(exist_ok=True)
    wide, target, _ = wide_width(config, vocab_size)
    for model in MODELS:
        if model in sized['models']:
            continue
        settings = model_settings(model, size, wide)
        started = time.time()
        ms = round(probe_ms_per_iter(f'{size} {model}', [*common_args(args), *setting_args(settings), '--overwrite'],
                                     args.work_dir / 'probe' / f'{size}-{model}',
                                     args.work_dir / size / f'{model}.probe.log', args.probe_iters), 1)
        entry = sized['models'][model] = {**plan_entry(config, vocab_size, settings, ms, budget),
                                           'probe_wall_s': round(time.time() - started, 1)}
        print(f"[plan] {size} {model}: {ms:.1f} ms/iter -> {entry['max_iters']} iterations ({budget:g} "
              f"probe-minutes, {entry['train_flops']:.3e} FLOPs), {entry['params']:,} parameters (the Backpack has "
              f"{target:,})", flush=True)
        path.write_text(json.dumps(plan, indent=1))
    plan['seeds'][size] = sorted(set(plan['seeds'].get(size, [])) | set(args.seeds))
    path.write_text(json.dumps(plan, indent=1))
    shutil.rmtree(args.work_dir / 'probe', ignore_errors=True)
    return plan


def train_args(args, size, model, seed, entry):
    return [*common_args(args), '--out_dir', shown(args.work_dir / run_name(size, model, seed)),
            *setting_args(entry['settings']), '--seed', seed, '--max_iters', entry['max_iters'],
            '--lr_decay_iters', entry['max_iters'], '--eval_interval', entry['eval_interval']]


def evaluation_args(args, *keys):
    return [a for k in keys for a in (f'--{k}', args.evaluation[k])]


def evaluate_models(args, run):
    for size, model, seed, out_dir in runs(args):
        if not evaluation_current(out_dir / 'evaluation_results.json', out_dir):
            run('evaluate', run_name(size, model, seed),
                python('run_full_evaluation.py', '--out_dir', shown(out_dir), '--device', args.device,
                       *evaluation_args(args, 'translation_samples', 'sentence_pairs', 'interventions')),
                args.work_dir / f'{run_name(size, model, seed)}.evaluate.log')


def compare(args, run):
    for seed in args.seeds:
        backpack = shown(args.work_dir / run_name(args.size, 'backpack', seed))
        for other, folder in (('transformer', 'comparison'), ('transformer_wide', 'comparison_wide')):
            run('compare', run_name(args.size, other, seed),
                python('compare_models.py', '--backpack_dir', backpack,
                       '--transformer_dir', shown(args.work_dir / run_name(args.size, other, seed)),
                       '--device', args.device, *evaluation_args(args, 'translation_samples', 'sentence_pairs'),
                       '--output_dir', shown(args.work_dir / args.size / f'{folder}_seed{seed}')),
                args.work_dir / args.size / 'compare.log')


def training_speed(log_path, entry, train_wall_s, peak_tflops):
    """A run's speed from train.py's log lines (tok/s, and mfu when train.py knows the peak): the median over
    its log intervals, leaving out each segment's first (compilation and warm-up); tflops is train.py's FLOPs
    estimate at that rate, effective_tokens_per_s the whole run's (start, compilation, evaluations included)."""
    lines = [line for segment in SEGMENT.split(log_path.read_text())[1:] for line in TRAIN_LINE.findall(segment)[1:]]
    if not lines:
        raise UserError(f"{shown(log_path)} has no steady log interval: raise the budget above a few log intervals")
    tokens_per_s = round(statistics.median(int(toks.replace(',', '')) for _, toks, _, _ in lines))
    mfus = [float(mfu) for _, _, mfu, _ in lines if mfu]
    memory = [float(gib) for *_, gib in lines if gib]
    return {'tokens_per_s': tokens_per_s,
            'ms_per_iter': round(statistics.median(float(ms) for ms, *_ in lines), 2),
            'tflops': float(f"{entry['flops_per_token'] * tokens_per_s / 1e12:.6g}"),
            'mfu_percent': round(statistics.median(mfus), 2) if mfus else None, 'peak_tflops': peak_tflops or None,
            'peak_memory_gib': max(memory) if memory else None, 'log_intervals': len(lines),
            'effective_tokens_per_s': round(entry['tokens_per_iter'] * entry['max_iters'] / train_wall_s)
            if train_wall_s else None}


def peak_tflops(args):
    """The peak train.py divides by for its MFU: --peak_tflops, else its PEAK_FLOPS entry for this GPU."""
    if args.peak_tflops or not args.device.startswith('cuda'):
        return args.peak_tflops
    import torch
    from train import PEAK_FLOPS
    name = torch.cuda.get_device_name(args.device)
    return next((v / 1e12 for k, v in PEAK_FLOPS.items() if k in name), None)


def portable(text, dirs):
    """text with every absolute path under one of `dirs` made relative to the repository, as results name
    their inputs (eval_data.portable_path: '../shared/...' for one beside it)."""
    for d in sorted({str(Path(d).resolve()) for d in dirs}, key=len, reverse=True):
        rel = Path(os.path.relpath(d, REPO)).as_posix()
        text = re.sub(re.escape(d) + r'(/|(?=["\s\',)\]]|$))',
                      lambda m: rel + m[1] if rel != '.' else '' if m[1] else '.', text)
    return text


def copy_evidence(file, dest, dirs):
    if file.is_dir():
        shutil.copytree(file, dest, dirs_exist_ok=True)
    elif file.suffix in TEXT:
        dest.write_text(portable(file.read_text(encoding='utf-8'), dirs), encoding='utf-8')
    else:
        shutil.copy(file, dest)


def collect(args, run):
    missing = [shown(path) for path in [*(out_dir / 'evaluation_results.json' for *_, out_dir in runs(args)),
                                        *(args.work_dir / args.size / f'{folder}_seed{s}' / 'comparison.json'
                                          for s in args.seeds for folder in ('comparison', 'comparison_wide'))]
               if not path.is_file()]
    if missing:
        raise UserError(f"nothing to collect yet: {missing[0]} not found (run the evaluate and compare steps)")
    meta = json.loads((args.data / 'meta.json').read_text())
    dirs = [REPO, args.work_dir, args.results, args.data, *filter(None, [meta['source'].get('src_dir')])]
    target, plan = args.results, read_plan(args.work_dir / 'plan.json')
    for size, model, seed, out_dir in runs(args):
        dest = target / run_name(size, model, seed)
        dest.mkdir(parents=True, exist_ok=True)
        for file in [f for pattern in EVIDENCE for f in sorted(out_dir.glob(pattern))]:
            copy_evidence(file, dest / file.name, dirs)
        copy_evidence(args.work_dir / f'{run_name(size, model, seed)}.train.log', dest / 'train.log', dirs)
    for seed in args.seeds:
        for folder in (f'comparison_seed{seed}', f'comparison_wide_seed{seed}'):
            (target / args.size / folder).mkdir(parents=True, exist_ok=True)
            for file in sorted((args.work_dir / args.size / folder).iterdir()):
                copy_evidence(file, target / args.size / folder / file.name, dirs)
    copy_evidence(args.work_dir / 'plan.json', target / 'plan.json', dirs)
    commands, models, peak = run.records, plan['sizes'][args.size]['models'], peak_tflops(args)
    command_wall = round(time.time() - args.started, 1)
    wall = {'plan': round(sum(entry['probe_wall_s'] for entry in models.values()), 1),
            **{step: round(sum(c['wall_s'] for c in commands if c['step'] == step), 1) for step in STEPS[1:4]}}
    train_wall, speed = {}, {}
    for size, model, seed, _ in runs(args):
        name = run_name(size, model, seed)
        train_wall[name] = round(sum(c['wall_s'] for c in commands if c['step'] == 'train' and c['model'] == name), 1)
        speed[name] = training_speed(args.work_dir / f'{name}.train.log', models[model], train_wall[name], peak)
    result = {
        'command': 'python tools/gpu_reference.py ' + ' '.join(sys.argv[1:]),
        'size': args.size, 'seeds': args.seeds, 'config': args.config, 'data_dir': shown(args.data),
        'device': args.device, 'budget_probe_minutes': args.budget,
        'evaluation': {**args.evaluation, 'beam_size': 1,
                       'test_set': 'the Europarl test split, greedy (no beam 4, no extra test sets)'},
        # the steps' commands, and this command from its start (the whole experiment when it ran in one go)
        'limit_s': LIMIT_S, 'wall_s': wall, 'total_s': round(sum(wall.values()), 1), 'command_wall_s': command_wall,
        'within_limit': max(sum(wall.values()), command_wall) <= LIMIT_S, 'train_wall_s': train_wall, 'speed': speed,
        'machine': system.machine(args.device), 'git_revision': git_revision(), 'commands': commands}
    (target / 'run.json').write_text(portable(json.dumps(result, indent=1), dirs) + '\n')
    print(f"[collect] {shown(target)}: steps {result['total_s']:.0f} s, this command {command_wall:.0f} s "
          f"(limit {LIMIT_S} s)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', help='cuda (the default), cuda:N; cpu with --tiny (the default there)')
    p.add_argument('--tiny', action='store_true', help='tiny shapes and budget, no compile: the plumbing, on a CPU')
    p.add_argument('--data_dir', help=f'made by data/europarl/prepare.py (default {DEFAULTS["L"][0]}; '
                                      f'{DEFAULTS["tiny"][0]} with --tiny)')
    p.add_argument('--config', default='train_europarl_gpu')
    p.add_argument('--budget', type=minutes, help=f'probe-minutes of training per run (default {BUDGET["L"]:g})')
    p.add_argument('--seeds', nargs='+', type=seed_number, default=[0],
                   help='train.py --seed (each seed: another 9 minutes)')
    p.add_argument('--steps', nargs='+', default=list(STEPS), choices=STEPS)
    p.add_argument('--probe_iters', type=int, help=f'iterations per probe (default {PROBE_ITERS["L"]})')
    p.add_argument('--translation_samples', type=int, help='test pairs per direction (default 200)')
    p.add_argument('--sentence_pairs', type=int, help='sentence-retrieval pairs (default 1000)')
    p.add_argument('--interventions', help='run_full_evaluation.py --interventions (default all)')
    p.add_argument('--peak_tflops', type=float, default=0.0,
                   help="the device's peak for the MFU (default: train.py's PEAK_FLOPS entry for the GPU)")
    p.add_argument('--work_dir', type=Path, help='runs and checkpoints (default out/gpu_reference)')
    p.add_argument('--results', type=Path, help='the evidence (default results/gpu_reference)')
    args = p.parse_args(argv)
    args.started = time.time()
    args.size = 'tiny' if args.tiny else 'L'
    data_dir, work_dir, results = DEFAULTS[args.size]
    args.device = args.device or ('cpu' if args.tiny else 'cuda')
    args.data_dir = args.data_dir or data_dir
    args.data = (REPO / args.data_dir if (REPO / args.data_dir).is_dir() else REPO / 'data' / args.data_dir).resolve()
    args.budget = args.budget or BUDGET[args.size]
    args.probe_iters = args.probe_iters or PROBE_ITERS[args.size]
    args.evaluation = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in EVALUATION[args.size].items()}
    args.seeds = list(dict.fromkeys(args.seeds))
    args.sizes, args.seeds_of, args.models = [args.size], {args.size: args.seeds}, MODELS  # cpu_reference.runs
    vocab_size = check_inputs(args)
    args.work_dir = (REPO / (args.work_dir or work_dir)).resolve()
    args.results = (REPO / (args.results or results)).resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run = Runner(args.work_dir)
    planned = plan(args, vocab_size) if 'plan' in args.steps or 'train' in args.steps else None
    if 'train' in args.steps:
        train(args, run, planned, train_args)
    if 'evaluate' in args.steps:
        evaluate_models(args, run)
    if 'compare' in args.steps:
        compare(args, run)
    if 'collect' in args.steps:
        collect(args, run)


if __name__ == '__main__':
    run_main(main)
