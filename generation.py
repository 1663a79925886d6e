"""
Generation for both models of model.py: model.step(idx, cache) and model.generate(...) call step() and
generate() here. A KVCache keeps, per batch row, the transformer's keys and values and, for a Backpack,
its weight head's keys and the sense vectors of the tokens seen so far, so that a step feeds only the
new token. As in nanoGPT, the model only ever sees the last block_size tokens: once the sequence is
longer, every step recomputes the cropped window from scratch (learned absolute positions make the
old cache invalid), so the tokens are those of the uncached reference, at its cost. Only the first
model.n_tokens rows of E are candidates: padding rows are never generated. Like nanoGPT, generate()
does not switch train/eval mode: call model.eval() first.
"""
import torch
from torch.nn import functional as F


class KVCache:
    """Tensors (B, H, T, D) of the tokens seen so far (keys, values, senses), preallocated for max_len
    positions. A model step feeds either a whole prefix into the empty cache or a single token: it
    writes the new tokens' tensors at position `length` of each buffer and reads the whole prefix back;
    step() then advances `length`."""

    def __init__(self, max_len):
        self.max_len, self.length, self.buffers = max_len, 0, {}

    def append(self, name, x):
        B, H, T, D = x.shape
        assert self.length == 0 or T == 1, "the attention masks assume a prefix or one token at a time"
        if name not in self.buffers:
            self.buffers[name] = x.new_empty(B, H, self.max_len, D)
        buf = self.buffers[name]
        buf[:, :, self.length:self.length + T] = x
        return buf[:, :, :self.length + T]

    def reorder(self, rows):
        """Keep, repeat or permute the batch rows (beam search): row b becomes old row rows[b]. Only
        the `length` positions written so far are copied, into new buffers of max_len positions."""
        L = self.length
        for name, buf in self.buffers.items():
            new = buf.new_empty(len(rows), *buf.shape[1:])
            torch.index_select(buf[:, :, :L], 0, rows, out=new[:, :, :L])
            self.buffers[name] = new


def next_token_logits(model, x):
    """(B, n_tokens) logits from the last position's o or ln_f(h) x (B, d): E x over the token rows only."""
    return F.linear(x, model.input_embeddings())


@torch.no_grad()
def step(model, idx, cache):
    """Next-token logits (B, n_tokens) after feeding idx (B, T) on top of what `cache` holds: the whole
    prompt into an empty cache, then one token at a time; the cache advances by T. The positions so
    far must stay within block_size (learned absolute positions)."""
    assert cache.length + idx.size(1) <= model.config.block_size, "the cached sequence exceeds block_size"
    x = model._final_hidden(idx, cache=cache)
    cache.length += idx.size(1)
    return next_token_logits(model, x[:, -1])


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, greedy=False, stop_ids=None,
             use_cache=True):
    """idx (B, T) with max_new_tokens appended. greedy (or temperature 0) takes the argmax, else samples
    from softmax(logits / temperature) restricted to the top_k. A row that has produced one of stop_ids
    repeats that token from then on; generation ends early once every row has stopped.
    use_cache=False recomputes the whole (cropped) window each step, as nanoGPT does, a Backpack's
    senses included (no KV cache, no inference sense table)."""
    block_size, cache = model.config.block_size, None
    stop_ids = torch.as_tensor(list(stop_ids or []), dtype=idx.dtype, device=idx.device)
    stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        if not use_cache:  # nothing kept from one step to the next, a Backpack's sense table included
            x = model._final_hidden(idx[:, -block_size:], sense_table=False)
            logits = next_token_logits(model, x[:, -1])
        else:
            if cache is None or idx.size(1) > block_size:  # (re)start on the cropped window
                cache = KVCache(block_size)
            logits = model.step(idx[:, -block_size:][:, cache.length:], cache)
        if greedy or temperature == 0:
            idx_next = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('inf')
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
        idx_next = torch.where(stopped[:, None], idx[:, -1:], idx_next)
        idx = torch.cat((idx, idx_next), dim=1)
        stopped |= torch.isin(idx_next[:, 0], stop_ids)
        if stopped.all():
            break
    return idx
