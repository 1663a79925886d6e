"""
One table of any number of evaluated runs (other tokenizers, sizes, model types), with plots:

    python experiments/analyze_results.py out/tiny_backpack out/tiny_transformer --out out/analysis
    python experiments/analyze_results.py bpe32k=out/backpack_full xlmr=out/backpack_xlmr/evaluation_results.json

Each run is `[NAME=]PATH`, PATH an evaluation_results.json (run_full_evaluation.py, evaluate.py --output)
or the directory holding one; NAME defaults to that directory's name. Writes into --out:
  results.md    the table: what each model is (type, tokenizer, parameters, iterations), then every
                headline metric (outdir.headline_metrics) that any run has, '—' where a run lacks it; the
                best value of a row in bold (lowest for perplexity and bits/byte, highest otherwise).
  results.csv   the same numbers at full precision.
  bits_per_byte.png   per-language val/test bits per byte of every run (per UTF-8 byte of the same text,
                so it compares across tokenizers), and perplexity beside it only when all runs share one
                tokenizer.
  metrics.png   translation, word similarity, BLI and retrieval scores side by side.
  loss_curves.png     the training curves of the runs that have training_log.json beside their results.

Perplexity and the training's val loss are per token: when the runs' tokenizers differ (by the tokenizer
fingerprint the results record), those rows are marked not comparable and get no bold; compare bits/byte.
The table is also printed.
"""
import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import system  # noqa: E402,F401  (before torch: outdir imports it)
import outdir  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from experiments import plots  # noqa: E402  (sets the Agg backend before pyplot loads)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PER_TOKEN = ('ppl ', 'best val loss')  # rows measured per token: comparable only with the same tokenizer
LOWER_IS_BETTER = ('ppl ', 'bits/byte ', 'best val loss')
NOT_COMPARABLE = 'per token, not comparable: different tokenizers (compare bits/byte)'
# metrics.png: (panel title, which headline metrics go in it)
PANELS = (('translation (BLEU, chrF; 0–100)', lambda m: m.startswith(('BLEU ', 'chrF '))),
          ('word similarity (Spearman ρ)',
           lambda m: m.startswith('Spearman ') and m.endswith((' embedding', ' mean_sense'))),
          ('BLI P@1, CSLS', lambda m: m.startswith('BLI ') and ' csls ' in m),
          ('sentence retrieval P@1', lambda m: m.startswith('retrieval ')))


# ----------------------------------------------------------------------------- reading

def parse_run(arg):
    """'[NAME=]PATH' -> (name or None, path of an evaluation_results.json)."""
    name, sep, path = arg.partition('=')
    if not sep:
        name, path = None, arg
    if os.path.isdir(path) or not path.endswith('.json'):  # an out_dir, there or not (read_results says so)
        path = os.path.join(path, 'evaluation_results.json')
    return name, path


def load_runs(args):
    """{name: results} in the order given. Unnamed runs are called after their directory (with its
    parent when two share a name); a name used twice is an error."""
    runs = [(name, path, outdir.read_results(path)) for name, path in map(parse_run, args)]
    dirs = [Path(os.path.abspath(path)).parent for _, path, _ in runs]
    short = [d.name for d in dirs]
    named = {}
    for (name, path, results), d in zip(runs, dirs):
        name = name or (d.name if short.count(d.name) == 1 else f'{d.parent.name}/{d.name}')
        if name in named:
            raise UserError(f"two runs are called {name!r}: name them, e.g. {name}_a={path}")
        named[name] = results
        results['_dir'] = str(d)
    return named


# ----------------------------------------------------------------------------- the table

def model_rows(runs):
    """(metric, [value per run]) describing each model."""
    def get(r, *keys):
        for key in keys:
            r = r.get(key) if isinstance(r, dict) else None
        return r

    rows = [('model type', [get(r, 'model', 'model_type') for r in runs.values()]),
            ('tokenizer', [f"{get(r, 'model', 'tokenizer', 'type')} {get(r, 'model', 'tokenizer', 'vocab_size')}"
                           for r in runs.values()]),
            ('senses k', [get(r, 'model', 'n_senses') for r in runs.values()])]
    parts = dict.fromkeys(part for r in runs.values() for part in (get(r, 'model', 'params') or {}))
    rows += [(f'params {part}', [get(r, 'model', 'params', part) for r in runs.values()]) for part in parts]
    rows += [('training iterations', [get(r, 'model', 'iter_num') for r in runs.values()]),
             ('best val loss', [get(r, 'model', 'val_loss') for r in runs.values()])]
    return rows


def same_tokenizer(runs):
    return len({r['model'].get('tokenizer', {}).get('sha256') for r in runs.values()}) == 1


def table(runs):
    """[(metric, [value or None per run], note)]: the model rows, then every headline metric any run has."""
    headline = {name: outdir.headline_metrics(r) for name, r in runs.items()}
    metrics = list(dict.fromkeys(m for h in headline.values() for m in h))
    rows = model_rows(runs) + [(m, [headline[name].get(m) for name in runs]) for m in metrics]
    comparable = same_tokenizer(runs)
    return [(m, values, '' if comparable or not m.startswith(PER_TOKEN) else NOT_COMPARABLE) for m, values in rows]


def fmt(value):
    if value is None:
        return '—'
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f'{value:,}'
    return 'nan' if math.isnan(value) else f'{value:.4g}'


def best_column(metric, values, note):
    """Index of the best value of a metric row (None: not a score, not comparable, fewer than 2 values, or a tie)."""
    numbers = [(v, i) for i, v in enumerate(values) if isinstance(v, float) and not math.isnan(v)]
    if note or len(numbers) < 2 or metric.startswith(('params ', 'training iterations', 'senses k')):
        return None
    best = (min if metric.startswith(LOWER_IS_BETTER) else max)(v for v, _ in numbers)
    at = [i for v, i in numbers if v == best]
    return at[0] if len(at) == 1 else None  # a tie has no winner


def markdown(runs, rows):
    lines = ['| metric | ' + ' | '.join(runs) + ' |', '|---|' + '---:|' * len(runs)]
    for metric, values, note in rows:
        best = best_column(metric, values, note)
        cells = [f'**{fmt(v)}**' if i == best else fmt(v) for i, v in enumerate(values)]
        lines.append(f"| {metric}{' †' if note else ''} | " + ' | '.join(cells) + ' |')
    if any(note for _, _, note in rows):
        lines += ['', f'† {NOT_COMPARABLE}.']
    sources = [f"- {name}: {r['model'].get('out_dir')} ({r['_dir']})" for name, r in runs.items()]
    return '\n'.join(lines + ['', 'Runs:'] + sources) + '\n'


def csv_text(runs, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(['metric', *runs, 'note'])
    for metric, values, note in rows:
        writer.writerow([metric, *('' if v is None else v for v in values), note])
    return out.getvalue()


# ----------------------------------------------------------------------------- plots

def grouped_bars(ax, names, groups, values, title):
    """Bars of values[run][group] (nan: absent), one colour per run."""
    x = np.arange(len(groups))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values[i], width, label=name, color=f'C{i}')
    ax.set_xticks(x, groups, rotation=30, ha='right', fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(axis='y', alpha=0.3)


def plot_perplexity(runs, path):
    """bits/byte per language and split; perplexity too when all runs share a tokenizer. False when no
    run has perplexity results."""
    keys = list(dict.fromkeys(k for r in runs.values() for k in r.get('perplexity', {})))
    if not keys:
        return False
    measures = [('bpb', 'bits per byte (lower is better)')]
    if same_tokenizer(runs):
        measures.append(('ppl', 'perplexity per token (same tokenizer)'))
    fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures), 4), squeeze=False)
    for ax, (measure, title) in zip(axes[0], measures):
        values = [[r.get('perplexity', {}).get(k, {}).get(measure, np.nan) for k in keys] for r in runs.values()]
        grouped_bars(ax, list(runs), [k.replace('_', ' ') for k in keys], values, title)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_metrics(runs, rows, path):
    """One panel per metric family of PANELS that any run has. False when none has any."""
    by_metric = {metric: values for metric, values, _ in rows}
    panels = [(title, [m for m in by_metric if keep(m)]) for title, keep in PANELS]
    panels = [(title, ms) for title, ms in panels if ms]
    if not panels:
        return False
    cols = min(2, len(panels))
    rows_ = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6 * cols, 4.2 * rows_), squeeze=False)
    for ax, (title, ms) in zip(axes.flat, panels):
        values = [[np.nan if by_metric[m][i] is None else by_metric[m][i] for m in ms] for i in range(len(runs))]
        short = [m.split(' ', 1)[1].replace(' csls', '').replace(' P@1', '') if not m.startswith(('BLEU', 'chrF'))
                 else m for m in ms]
        grouped_bars(ax, list(runs), short, values, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def training_logs(runs):
    """{name: training_log} of the runs with a training_log.json beside their results."""
    logs = {}
    for name, r in runs.items():
        path = os.path.join(r['_dir'], 'training_log.json')
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                logs[name] = json.load(f)
    return logs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', metavar='[NAME=]PATH',
                   help='an evaluation_results.json or the directory holding one, optionally named')
    p.add_argument('--out', default='out/analysis', help='where results.md, results.csv and the PNGs go')
    args = p.parse_args(argv)

    runs = load_runs(args.runs)
    if os.path.isfile(args.out):
        raise UserError(f"--out {args.out} is a file: give a directory")
    os.makedirs(args.out, exist_ok=True)
    rows = table(runs)
    md = markdown(runs, rows)
    atomic_write(os.path.join(args.out, 'results.md'), lambda f: f.write(md.encode()))
    atomic_write(os.path.join(args.out, 'results.csv'), lambda f: f.write(csv_text(runs, rows).encode()))
    made = ['results.md', 'results.csv']
    if plot_perplexity(runs, os.path.join(args.out, 'bits_per_byte.png')):
        made.append('bits_per_byte.png')
    if plot_metrics(runs, rows, os.path.join(args.out, 'metrics.png')):
        made.append('metrics.png')
    logs = training_logs(runs)
    if logs:
        plots.plot_loss_curves(logs, os.path.join(args.out, 'loss_curves.png'))
        made.append('loss_curves.png')
    print(md)
    print(f"wrote {', '.join(made)} to {args.out}")


if __name__ == '__main__':
    run_main(main)
