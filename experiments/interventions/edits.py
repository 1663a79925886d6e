"""
The edits the experiments share, and scoring with one in force. A Backpack's logits are log-linear in its
senses: logits_i = E sum_l sum_{j<=i} alpha_lij C(x_j)_l, and alpha does not depend on the senses. Scaling
sense l of the word at position j by s therefore moves the logits at every later position i by exactly
(s - 1) alpha_lij E C(x_j)_l (tested to fp32 tolerance in tests/test_interventions.py). The edits go through
the model's own hooks: model(idx, senses=S) with S the per-position senses (B, T, k, d) edited (or
model._final_hidden(idx, senses=S), what the LM head reads, when only a few positions' logits are needed), so
the weights are never touched. The Transformer has no senses; its edits are on what it does have, the input
embeddings (a forward hook on the embedding, removed after the call) and the vector its LM head reads.
"""
import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from experiments.sentence import length_batches, pad
from model import is_backpack


@dataclass
class SenseScale:
    """Scale sense l by scales[l] at the marked positions (Backpack)."""
    scales: dict

    def apply(self, S, mask):
        """S (B, T, k, d) per-position senses, mask (B, T) bool -> the edited copy."""
        S = S.clone()
        for l, s in self.scales.items():
            S[:, :, l] = torch.where(mask[..., None], s * S[:, :, l], S[:, :, l])
        return S


@dataclass
class Projection:
    """Remove the share 1 - keep of the component along `direction` from the input embeddings of the
    marked positions (both models)."""
    direction: torch.Tensor
    keep: float

    def project(self, x):
        g = self.direction.to(x) / self.direction.norm()
        return x - (1 - self.keep) * (x @ g)[..., None] * g


def edited_hidden(model, idx, mask, edit=None):
    """What the LM head reads (B, T, d), o for a Backpack and ln_f(h) for a Transformer, with `edit`: the
    logits are its product with model.lm_head.weight (taken only where needed: a vocabulary of 50k rows
    times every position would be most of the cost)."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model._final_hidden(idx, **kwargs))


def edited_logits(model, idx, mask, edit=None):
    """model(idx, return_logits=True)'s logits (B, T, V) with `edit`."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model(idx, return_logits=True, **kwargs)[0])


def edited_loss(model, idx, mask, edit, targets):
    """model(idx, targets)'s loss (the mean NLL over the targets that are not -1) with `edit`."""
    return _edited_call(model, idx, mask, edit, lambda **kwargs: model(idx, targets, **kwargs)[1])


def _edited_call(model, idx, mask, edit, call):
    """call(**kwargs) with `edit` (None, SenseScale or Projection) at the positions `mask` (B, T) in force. A
    Backpack always gets its senses through senses= (also unedited), so that an edit that marks no position
    gives bit-identical results."""
    kwargs = {}
    if is_backpack(model):
        S = position_senses(model, idx)
        if isinstance(edit, SenseScale):
            S = edit.apply(S, mask)
        elif isinstance(edit, Projection) and mask.any():
            S = S.clone()
            S[mask] = model.sense_network(edit.project(model.transformer.wte(idx[mask])))
        kwargs['senses'] = S
    elif isinstance(edit, SenseScale):
        raise TypeError(f"a sense edit needs a BackpackLM: {type(model).__name__} has no senses")
    with projected_inputs(model, idx, mask, edit) if isinstance(edit, Projection) else contextlib.nullcontext():
        return call(**kwargs)


def position_senses(model, idx):
    """C(x_j) of every position (B, T, k, d), the sense network run once per distinct id."""
    tokens, where = torch.unique(idx, return_inverse=True)
    return model.sense_vectors(tokens)[where]


@contextlib.contextmanager
def projected_inputs(model, idx, mask, edit):
    """While open, the token embedding of `idx` (the very tensor given to model(idx)) is projected at the
    marked positions, by a forward hook on the embedding that is removed on exit."""
    def hook(module, args, output):
        if args[0] is not idx:  # another lookup (e.g. the sense network's): untouched
            return None
        return torch.where(mask[..., None], edit.project(output), output)
    handle = model.transformer.wte.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------------
# scoring continuations with an edit

def scored_rows(seqs, masks, starts):
    """Rows (ids, mask, targets) where row r scores seqs[r][starts[r]:] for output r; a target is
    (position whose logits predict it, token, output index)."""
    return [(s, m, [(t - 1, s[t], r) for t in range(st, len(s))]) for r, (s, m, st) in enumerate(zip(seqs, masks, starts))]


@torch.no_grad()
def continuation_logprobs(model, rows, n, edit, device, batch_size=64):
    """(n,) summed log-probabilities of the targets of `rows` (scored_rows) per output index, with `edit`
    at the marked positions."""
    out = np.zeros(n)
    for batch in length_batches([len(r[0]) for r in rows], batch_size):
        idx, mask, b, i, token, owner = _batch(rows, batch, device)
        logits = (edited_hidden(model, idx, mask, edit)[b, i] @ model.lm_head.weight.T).float()  # scored positions
        lp = torch.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        out += np.bincount(owner, weights=lp.double().cpu().numpy(), minlength=n)
    return out


@torch.no_grad()
def sense_scale_grid(model, rows, n, scales, device, batch_size=32):
    """continuation_logprobs for SenseScale({l: s}) for every sense l and scale s, (k, len(scales), n),
    from one pass: with M_l = sum_j alpha_lij C(x_j)_l and D_l its part from the marked positions,
    the edited logits are E (sum_l M_l + (s - 1) D_l) (log-linearity; tested against the hook)."""
    W = model.lm_head.weight
    k = model.config.n_senses
    out = np.zeros((k, len(scales), n))
    for batch in length_batches([len(r[0]) for r in rows], batch_size):
        idx, mask, b, i, token, owner = _batch(rows, batch, device)
        C = position_senses(model, idx)                                           # (B, T, k, d)
        alpha = model.contextualization(idx)                                      # (B, k, T, T)
        o = torch.einsum('blij,bjld->bid', alpha, C)
        D = torch.einsum('blij,bjld->blid', alpha, C * mask[:, :, None, None])  # (B, k, T, d)
        logits0 = (o[b, i] @ W.T).float()                                         # (N, V)
        for l in range(k):
            delta = (D[b, l, i] @ W.T).float()  # what sense l of the marked tokens adds to the logits
            for g, s in enumerate(scales):
                lp = torch.log_softmax(logits0 + (s - 1) * delta, -1).gather(1, token[:, None])[:, 0]
                out[l, g] += np.bincount(owner, weights=lp.double().cpu().numpy(), minlength=n)
    return out


def _batch(rows, batch, device):
    """idx, mask (B, T) of the rows `batch`, and their targets as tensors b, i (where), token, and the
    numpy array of output indices."""
    idx = pad([rows[r][0] for r in batch], 0).to(device)
    mask = pad([rows[r][1] for r in batch], 0).bool().to(device)
    flat = [(b, i, t, o) for b, r in enumerate(batch) for i, t, o in rows[r][2]]
    b, i, token = (torch.tensor([f[j] for f in flat], device=device) for j in range(3))
    return idx, mask, b, i, token, np.array([f[3] for f in flat])
