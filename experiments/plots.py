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


def plot_sense_top_words(word, tokens, scores, labels, path):
    """Senses x top words of one word: cell (l, r) shows the r-th token sense l pushes up most,
    coloured by its logit E.C(w)_l. tokens/scores: k lists of top-k; labels: k sense labels."""
    scores = np.asarray(scores, dtype=float)
    k, top = scores.shape
    fig, ax = plt.subplots(figsize=(1.6 * top + 3, 0.45 * k + 1.5))
    im = ax.imshow(scores, aspect='auto', cmap='viridis')
    for l in range(k):
        for r in range(top):
            ax.text(r, l, tokens[l][r], ha='center', va='center', fontsize=8, color='white')
    ax.set_yticks(range(k), [f'{l}: {labels[l]}'[:40] for l in range(k)], fontsize=7)
    ax.set_xticks(range(top), [f'#{r + 1}' for r in range(top)])
    ax.set_title(f'top next-token predictions of each sense of "{word}" (logit E·C(w)_l)')
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_contextualization(alpha, tokens, path, title):
    """alpha (k, T, T) of one sentence: one panel per sense, row i = the weights position i gives
    to positions j <= i (each row sums to 1)."""
    alpha = np.asarray(alpha, dtype=float)
    k, T = alpha.shape[0], alpha.shape[1]
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1, 2.6 * rows + 1), squeeze=False)
    for l, ax in enumerate(axes.flat):
        if l >= k:
            ax.axis('off')
            continue
        ax.imshow(alpha[l], vmin=0, vmax=1, cmap='magma')
        ax.set_title(f'sense {l}', fontsize=8)
        ax.set_xticks(range(T), tokens, rotation=90, fontsize=5)
        ax.set_yticks(range(T), tokens, fontsize=5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
