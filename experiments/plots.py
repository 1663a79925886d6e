"""Figures made from training logs and evaluation results (matplotlib, written as PNG files)."""
import matplotlib

matplotlib.use('Agg')  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(values, window):
    """Trailing moving average (the first points average what exists so far)."""
    values = np.asarray(values, dtype=float)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_loss_curves(logs, path):
    """Loss curves of one or more runs: {label: training_log dict} -> PNG at `path`.

    Left: training loss per iteration (moving average over ~1% of the run) and validation loss at each
    evaluation. Right: per-language validation loss (EN solid, FR dashed).
    """
    fig, (ax_all, ax_lang) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, log) in enumerate(logs.items()):
        color = f'C{i}'
        train = log['train_loss']
        if train:
            ax_all.plot(np.arange(1, len(train) + 1), smooth(train, max(1, len(train) // 100)),
                        color=color, alpha=0.5, label=f'{label} train')
        evals = log['evals']
        iters = [e['iter'] for e in evals]
        ax_all.plot(iters, [e['val'] for e in evals], 'o-', color=color, label=f'{label} val')
        ax_lang.plot(iters, [e['val_en'] for e in evals], 'o-', color=color, label=f'{label} val EN')
        ax_lang.plot(iters, [e['val_fr'] for e in evals], 's--', color=color, label=f'{label} val FR')
    for ax, title in ((ax_all, 'loss (nats/token)'), (ax_lang, 'per-language validation loss')):
        ax.set_xlabel('iteration')
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
