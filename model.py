"""
Backpack language model (Hewitt et al., ACL 2023) exactly as stanfordnlp/backpack-gpt2 computes it, and
its Transformer twin, in one nanoGPT-style file.

Backpack. Each token x has k sense vectors C(x)_1..C(x)_k, computed from its embedding alone (no
position, no context) by the sense network. A GPT-2 transformer (learned positions, pre-LN, ln_f) reads
the sequence; a weight head turns its hidden states into, for each sense l, a causal softmax
alpha_lij over the prefix j <= i. The output is a non-contextual mixture of the senses of the prefix,
    o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l,        logits_i = E o_i,
with E the input embedding (tied); there is no LayerNorm on o and no 1/k.
StandardTransformerLM is the same contextual transformer with its tied LM head on ln_f(h).

The file reads top-down: the config; the Backpack's three pieces (sense network, weight head, the
mixture, explicit); the two language models; their contextual network (GPT-2); generation; the loader
of pretrained backpack-gpt2 weights. kernels.py holds the fast versions of the mixture and of the loss.

API (both models)
    model(idx)                                  -> (logits (B,1,V) of the last position, None)
    model(idx, return_logits=True)              -> (logits (B,T,V), None)
    model(idx, targets)                         -> (None, loss): the loss is computed in row chunks of
                                                   the tied LM head and B*T*V logits are never held
    model(idx, targets, return_logits=True)     -> (logits (B,T,V), loss)
    targets == -1 (nanoGPT) and -100 (Hugging Face) are ignored; any other negative target is a
    ValueError; the loss is the mean NLL over the others (nats), and 0 with a zero gradient when every
    target is ignored (nothing to score contributes nothing), on both paths.
    model.n_tokens -> how many rows of E are token ids: config.tokenizer_vocab_size, or all V rows
    model.hidden_states(idx) -> {'hidden': ln_f(h) (B,T,d)} (+ 'o': o (B,T,d) for a Backpack)
    model.input_embeddings() -> E[:n_tokens] (n_tokens, d), the tied input embedding / LM head
    model.generate(idx, max_new_tokens, temperature, top_k, greedy, stop_ids)  (KV cache)
    model.step(idx, cache) -> next-token logits (B, n_tokens), feeding idx on top of a KVCache
                              (cache.reorder(rows) keeps/repeats batch rows, for beam search)
    model.get_num_params(non_embedding=True), model.param_counts(), model.configure_optimizers(...)
Backpack only
    model.sense_vectors(token_ids) -> C (n, k, d)   model.sense_logits(token_ids) -> E C (n, k, n_tokens)
    model.contextualization(idx) -> alpha (B, k, T, T)   (alpha[b, l, i, j], rows sum to 1 over j <= i)
    Interventions: model(idx, alpha=A) mixes with an edited alpha (B,k,T,T) and model(idx, senses=S)
    with edited per-position senses S (B,T,k,d) (e.g. model.sense_vectors(idx.flatten()).view(B,T,k,d),
    then edited); both can be given together and combine with targets / return_logits as above.

Padding rows. backpack-gpt2's E has 50,264 rows for GPT-2's 50,257 ids (+ our two language tags):
rows past config.tokenizer_vocab_size are no token. forward() scores all V rows, the distribution the
model was trained with (its loss and logits); everything that picks or lists tokens sees only the
first n_tokens: step() and generate() (so padding is never generated), input_embeddings(),
sense_logits().

Speed. The training path never materialises alpha (B*k*T*T): kernels.causal_sense_mixing computes the
mixture by blocks of queries on CPU (flash-style; alpha recomputed block by block in backward) and with
F.scaled_dot_product_attention on CUDA (config.mix_kernel, config.mix_block); the loss never holds the
B*T*V logits (kernels.chunked_cross_entropy). The sense network depends on token identity only, so
(config.dedup_senses) it runs once per distinct token of the batch wherever that computes exactly what
running it per position computes: in eval mode, or with dropout 0. In training with dropout each
occurrence of a token draws its own dropout masks, as in backpack-gpt2's training, so the network runs
per position (with or without autograd: shared masks would not be exact either way);
config.sense_dropout_shared_per_batch=True dedups there too, an approximation: all occurrences of a
token in a batch then share one dropout mask. In eval mode without autograd (evaluation, generation)
the senses come from a table filled lazily with the C(x) of every token id seen (k*d floats each):
the sense network runs once per distinct id for as long as E and the sense network are unchanged
(model.train() and clear_sense_table() free it; generate(use_cache=False), the reference that keeps
nothing between steps, does not use it). Passing alpha= (e.g. model.contextualization(idx)) runs the
explicit path, kept for analysis; the paths agree to fp32 rounding, forward and backward
(tests/test_model.py, tests/test_kernels.py).

Generation. generate() caches the transformer's keys/values, the weight head's keys and the sense
vectors of past tokens. As in nanoGPT, the model only ever sees the last block_size tokens: once the
sequence is longer, every step recomputes the cropped window from scratch (learned absolute positions
make the old cache invalid), so the tokens are the same as without the cache, at uncached cost.
Like nanoGPT, generate() does not switch train/eval mode: call model.eval() first.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

from kernels import MIX_KERNELS, causal_sense_mixing, chunked_cross_entropy


@dataclass
class ModelConfig:
    block_size: int = 512
    vocab_size: int = 50264  # rows of E: backpack-gpt2's padded GPT-2 vocabulary; train.py takes it from meta.json
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    n_senses: int = 16  # Backpack only; StandardTransformerLM accepts it for config parity and ignores it
    dropout: float = 0.1
    bias: bool = False  # biases in Linears and LayerNorms (GPT-2 and backpack-gpt2 have them)
    sense_intermediate_scale: int = 4  # width of the sense network's final MLP, in units of n_embd
    scale_attn_by_inverse_layer_idx: bool = False  # also divide layer l's attention scores by l+1
    tokenizer_vocab_size: int = 0  # the leading rows of E that are token ids; 0: all vocab_size rows
    dedup_senses: bool = True  # the sense network once per distinct token, where exact (module docstring)
    sense_dropout_shared_per_batch: bool = False  # dedup in training with dropout too (approximate)
    mix_kernel: str = 'auto'  # the training path's mixture: 'blocks', 'sdpa' or 'auto' (kernels.py)
    mix_block: int = 64  # queries per block of the 'blocks' mixture

    def __post_init__(self):
        if not 0 <= self.tokenizer_vocab_size <= self.vocab_size:
            raise ValueError(f"tokenizer_vocab_size {self.tokenizer_vocab_size} must be in [0, vocab_size "
                             f"{self.vocab_size}] (0: every row of the embedding is a token id)")
        if self.mix_kernel not in MIX_KERNELS:
            raise ValueError(f"unknown mix_kernel {self.mix_kernel!r}; expected one of {MIX_KERNELS}")


# ----------------------------------------------------------------------------------------------------
# the Backpack's three pieces: sense network, weight head, mixture (GELU tanh, LayerNorm eps 1e-5)

class MLP(nn.Module):
    """c_fc -> GELU(tanh) -> c_proj -> dropout, as GPT-2's MLP and backpack-gpt2's BackpackMLP."""

    def __init__(self, n_in, n_hidden, n_out, config):
        super().__init__()
        self.c_fc = nn.Linear(n_in, n_hidden, bias=config.bias)
        self.c_proj = nn.Linear(n_hidden, n_out, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate='tanh')))


class NoMixBlock(nn.Module):
    """backpack-gpt2's BackpackNoMixBlock: a transformer block without attention, per token."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config.n_embd, 4 * config.n_embd, config.n_embd, config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.resid_dropout1 = nn.Dropout(config.dropout)
        self.resid_dropout2 = nn.Dropout(config.dropout)

    def forward(self, h0, r0):
        r1 = self.resid_dropout1(h0) + r0  # r1 = h0 + r0
        r2 = self.resid_dropout2(self.mlp(self.ln_1(r1))) + r1  # r2 = r1 + MLP(LN(r1)); HF drops out twice
        return self.ln_2(r2)


class SenseNetwork(nn.Module):
    """1. C(x): token embeddings (n, d) -> sense vectors (n, k, d). Output column l*d + c of final_mlp
    is sense l, dimension c (the layout of backpack-gpt2's reshape)."""

    def __init__(self, config):
        super().__init__()
        self.n_senses, self.n_embd = config.n_senses, config.n_embd
        self.dropout = nn.Dropout(config.dropout)
        self.ln = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.block = NoMixBlock(config)
        self.final_mlp = MLP(config.n_embd, config.sense_intermediate_scale * config.n_embd,
                             config.n_senses * config.n_embd, config)

    def forward(self, e):
        r0 = self.dropout(e)
        h0 = self.ln(r0)
        return self.final_mlp(self.block(h0, r0)).view(*e.shape[:-1], self.n_senses, self.n_embd)


class SenseWeightHead(nn.Linear):
    """2. The weight head on the contextual states ln_f(h) (B, T, d): per sense l, a query and a key of
    size d/k -> q, k (B, k, T, d/k), q already scaled by 1/sqrt(d/k). Linear(d, 2d), always with a bias
    as in backpack-gpt2; an nn.Linear itself, so that its parameters keep their checkpoint names."""

    def __init__(self, config):
        super().__init__(config.n_embd, 2 * config.n_embd, bias=True)
        self.n_senses = config.n_senses

    def forward(self, h):
        B, T, d = h.shape
        S = self.n_senses
        q, k = super().forward(h).view(B, T, 2, S, d // S).permute(2, 0, 3, 1, 4).unbind(0)
        return q * (S / d) ** 0.5, k


def sense_weights(q, k):
    """alpha (B, k, T, T), materialised: alpha_li = softmax over j <= i of q_li . k_lj."""
    T = q.size(2)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax((q @ k.transpose(-1, -2)).masked_fill(future, float('-inf')), dim=-1)


def mix_senses(alpha, senses):
    """3. o_i = sum_l sum_j alpha_lij C(x_j)_l: alpha (B, k, T, T), senses (B, k, T, d) -> o (B, T, d).
    The explicit version; kernels.causal_sense_mixing(q, k, senses) gives the same from q and k
    without holding alpha (what training runs)."""
    return torch.matmul(alpha, senses).sum(1)


def _gather_senses(table, where):
    """table (k, n, d) of sense vectors, where (B, T) row ids into it -> (B, k, T, d), gathered in that
    layout at once: row l*n + where[b, j] of the flattened table is sense l of position (b, j).
    A contiguous table is flattened as a view; any other (e.g. a slice of the inference table's
    buffer along n) is copied whole first, so the inference table passes its whole buffer."""
    S, n, D = table.shape
    rows = where[:, None, :] + n * torch.arange(S, device=where.device)[:, None]
    return F.embedding(rows, table.reshape(S * n, D))


def is_backpack(model):
    """Whether `model` has sense vectors: a BackpackLM (also under torch.compile, which forwards
    attributes) or a stand-in with its API. The one test for "is this a Backpack"."""
    return hasattr(model, 'sense_vectors')


# ----------------------------------------------------------------------------------------------------
# the two language models

class _LanguageModel(nn.Module):
    """What both models share: the contextual transformer, the tied LM head, the loss, init,
    optimizer groups, and generation (defined in its own section below). Subclasses define
    _final_hidden(idx, cache, sense_table) -> (B, T, d), what the LM head reads."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # E, tied

    def _init_weights(self):
        # nanoGPT / GPT-2: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 n_layer)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @property
    def n_tokens(self):
        """How many leading rows of E are token ids (the rest are padding, see the module docstring)."""
        return self.config.tokenizer_vocab_size or self.config.vocab_size

    def input_embeddings(self):
        """E (n_tokens, d): the token embedding, tied to the LM head, without its padding rows."""
        return self.transformer.wte.weight[:self.n_tokens]

    def crop_block_size(self, block_size):
        """Shrink the context (nanoGPT's model surgery), e.g. to finetune backpack-gpt2, made for 512
        positions, on shorter blocks: the first block_size learned positions are kept."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def forward(self, idx, targets=None, return_logits=False, **edits):
        """Logits over all vocab_size rows, padding included: the distribution the model is trained
        with (see the module docstring for what the arguments select)."""
        assert idx.size(1) <= self.config.block_size, f"sequence of {idx.size(1)} > block_size {self.config.block_size}"
        x = self._final_hidden(idx, **edits)
        if targets is None:
            return self.lm_head(x if return_logits else x[:, [-1]]), None
        targets = _loss_targets(targets).reshape(-1)
        if return_logits:
            logits = self.lm_head(x)
            # sum / count, not the mean: with every target ignored that is 0 (as the chunked loss), not 0/0 = NaN
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets, ignore_index=-1, reduction='sum')
            return logits, loss / (targets >= 0).sum().clamp(min=1)
        return None, chunked_cross_entropy(x.reshape(-1, x.size(-1)), self.lm_head.weight, targets)

    def get_num_params(self, non_embedding=True):
        """nanoGPT's count: the tied E counted once; position embeddings subtracted by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def param_counts(self):
        t = self.transformer
        counts = {'embedding': t.wte.weight.numel(), 'positions': t.wpe.weight.numel(),
                  'contextual_transformer': sum(p.numel() for m in (t.h, t.ln_f) for p in m.parameters())}
        counts.update(self._own_param_counts())
        counts['total'] = self.get_num_params(non_embedding=False)
        return counts

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # nanoGPT: matrices and embeddings decay; biases and LayerNorm gains do not
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    def step(self, idx, cache):
        """Next-token logits (B, n_tokens) after feeding idx (B, T) on top of what `cache` (a KVCache)
        holds: see the generation section."""
        return _step(self, idx, cache)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, greedy=False, stop_ids=None,
                 use_cache=True):
        """idx (B, T) with max_new_tokens appended: see the generation section."""
        return _generate(self, idx, max_new_tokens, temperature, top_k, greedy, stop_ids, use_cache)

    def _next_token_logits(self, x):
        """(B, n_tokens) logits from the last position's o or ln_f(h) x (B, d): only token rows, so
        that padding rows can never be generated."""
        return F.linear(x, self.input_embeddings())


def _loss_targets(targets):
    """Targets with every ignored position as -1: -1 (nanoGPT) and -100 (Hugging Face) are ignored.
    Any other negative target is refused rather than ignored or scored as some class. On CPU the
    check is free; on an accelerator a Python-level check would make the host wait for the device at
    every step, so the device asserts asynchronously (the error surfaces at the next sync)."""
    bad = (targets < 0) & (targets != -1) & (targets != -100)
    message = "targets must be token ids >= 0, or -1 / -100 for ignored positions"
    if targets.device.type == 'cpu':
        if bad.any():
            raise ValueError(f"{message}; got {targets[bad][0].item()}")
    else:
        torch._assert_async(~bad.any(), message)
    return targets.clamp(min=-1)


class BackpackLM(_LanguageModel):
    """The Backpack: logits_i = E o_i with o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l (module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        assert config.n_embd % config.n_senses == 0, "n_embd must split into n_senses query/key heads"
        self.sense_network = SenseNetwork(config)
        self.sense_weight_net = SenseWeightHead(config)
        self.clear_sense_table()
        self._init_weights()

    def _own_param_counts(self):
        return {'sense_network': sum(p.numel() for p in self.sense_network.parameters()),
                'weight_head': sum(p.numel() for p in self.sense_weight_net.parameters())}

    def _final_hidden(self, idx, cache=None, alpha=None, senses=None, sense_table=True):
        v = self._senses(idx, sense_table) if senses is None else senses.transpose(1, 2)
        if alpha is not None:  # the explicit path
            return mix_senses(alpha, v)
        q, k = self.sense_weight_net(self.transformer(idx, cache))
        if cache is not None:
            k, v = cache.append('sense_keys', k), cache.append('senses', v)
        if q.size(2) == k.size(2):
            return causal_sense_mixing(q, k, v, self.config.mix_kernel, self.config.mix_block)
        # one new token against the cache: alpha is (B, k, 1, T), small, and no position is masked
        return F.scaled_dot_product_attention(q, k, v, scale=1.0).sum(1)

    # --- the senses of every position

    def _senses(self, idx, sense_table=True):
        """C(x_j) for every position: (B, k, T, d), sense-major so each sense is one attention head."""
        if not self.config.dedup_senses:
            return self.sense_network(self.transformer.wte(idx)).transpose(1, 2).contiguous()
        # the table's bookkeeping (weight versions, ids new to it) is Python-side state that a
        # torch.compile'd graph cannot hold: compiled inference dedups within the batch only
        inference = not self.training and not torch.is_grad_enabled()
        if sense_table and inference and not torch.compiler.is_compiling():
            return self._table_senses(idx)
        if self.training and self.config.dropout > 0 and not self.config.sense_dropout_shared_per_batch:
            # each occurrence draws its own dropout masks, as in backpack-gpt2's training
            return self.sense_network(self.transformer.wte(idx)).transpose(1, 2).contiguous()
        tokens, where = torch.unique(idx, return_inverse=True)
        return _gather_senses(self.sense_network(self.transformer.wte(tokens)).transpose(0, 1), where)

    def _table_senses(self, idx):
        """C(x_j) looked up in the lazily filled table of the ids seen so far (the module docstring);
        only the ids new to it run through the sense network. The table holds what the sense
        network computed under the autocast state of that call, so a change of that state, of E or
        of the sense network starts a new one."""
        device = idx.device.type
        key = (self._sense_state(), idx.device, torch.is_autocast_enabled(device),
               torch.get_autocast_dtype(device), torch.is_inference_mode_enabled())
        if self._sense_table_key != key:
            self._sense_slot = torch.full((self.config.vocab_size,), -1, dtype=torch.long, device=idx.device)
            self._sense_table, self._sense_table_size, self._sense_table_key = None, 0, key
        slots = self._sense_slot[idx]
        missing = slots < 0
        if missing.any():  # ids new to the table (a cached generation step mostly has none)
            new = torch.unique(idx[missing])
            C = self.sense_vectors(new).transpose(0, 1)  # (k, n_new, d)
            n0, n1 = self._sense_table_size, self._sense_table_size + len(new)
            if self._sense_table is None or n1 > self._sense_table.size(1):  # grow by doubling
                table = C.new_empty(C.size(0), max(n1, 2 * n0, 64), C.size(2))
                if self._sense_table is not None:
                    table[:, :n0] = self._sense_table[:, :n0]
                self._sense_table = table
            self._sense_table[:, n0:n1] = C
            self._sense_slot[new] = torch.arange(n0, n1, device=idx.device)
            self._sense_table_size = n1
            slots = self._sense_slot[idx]
        # the whole (contiguous) buffer, not its filled slice [:, :size]: flattening a slice along n
        # would copy the table (k * n * d floats) at every call, i.e. at every generation step
        return _gather_senses(self._sense_table, slots)

    def clear_sense_table(self):
        """Free the inference table of sense vectors (it refills on the next inference call)."""
        self._sense_table = self._sense_slot = self._sense_table_key = None
        self._sense_table_size = 0

    def train(self, mode=True):
        if mode:  # the next optimizer step makes the table stale: free its memory during training
            self.clear_sense_table()
        return super().train(mode)

    def _sense_state(self):
        # a parameter's _version counts its in-place updates; data_ptr changes when it is replaced
        return [(p.data_ptr(), p._version) for p in (self.transformer.wte.weight, *self.sense_network.parameters())]

    # --- analysis

    def contextualization(self, idx):
        """alpha (B, k, T, T), materialised: alpha[b, l, i, j] = weight of sense l of token j at i."""
        return sense_weights(*self.sense_weight_net(self.transformer(idx)))

    def hidden_states(self, idx):
        """Per-position representations: the contextual transformer's ln_f(h) and the Backpack's o."""
        h = self.transformer(idx)
        q, k = self.sense_weight_net(h)
        return {'hidden': h, 'o': causal_sense_mixing(q, k, self._senses(idx), self.config.mix_kernel,
                                                      self.config.mix_block)}

    def sense_vectors(self, token_ids, chunk=4096):
        """C(x) (n, k, d) for a 1-D tensor of token ids, `chunk` tokens at a time (the whole
        vocabulary fits: the sense network's (n, 4d) intermediates never exist for all n at once)."""
        E = self.transformer.wte
        return torch.cat([self.sense_network(E(ids)) for ids in token_ids.split(chunk)])

    def sense_logits(self, token_ids):
        """E C(x)_l (n, k, n_tokens): the next-token logits each sense pushes up (Hewitt et al., sec. 5),
        over the token ids only."""
        return self.sense_vectors(token_ids) @ self.input_embeddings().t()


class StandardTransformerLM(_LanguageModel):
    """GPT-2 with a tied LM head on ln_f(h): the Backpack's contextual network used directly.
    The Backpack-only config fields (n_senses, dedup_senses, ...) are accepted and unused."""

    def __init__(self, config):
        super().__init__(config)
        self._init_weights()

    def _final_hidden(self, idx, cache=None, sense_table=True):  # sense_table: the Backpack's, unused here
        return self.transformer(idx, cache)

    def hidden_states(self, idx):
        """Per-position representations (e.g. for sentence vectors): ln_f(h) (B, T, d)."""
        return {'hidden': self.transformer(idx)}

    def _own_param_counts(self):
        return {}


# ----------------------------------------------------------------------------------------------------
# the contextual network: GPT-2

class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout, self.layer_idx = config.n_head, config.n_embd, config.dropout, layer_idx
        # GPT-2 scales scores by 1/sqrt(head_dim); backpack-gpt2 also by 1/(layer_idx+1)
        depth = layer_idx + 1 if config.scale_attn_by_inverse_layer_idx else 1
        self.scale = 1.0 / (math.sqrt(config.n_embd // config.n_head) * depth)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k = cache.append((self.layer_idx, 'k'), k)
            v = cache.append((self.layer_idx, 'v'), v)
        # queries as many as keys: the whole prefix, causal; a single query: the next token, sees all
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=q.size(2) == k.size(2), scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config.n_embd, 4 * config.n_embd, config.n_embd, config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """GPT-2: token + learned position embeddings, pre-LN blocks, ln_f. Returns ln_f(h) (B, T, d)."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)

    def forward(self, idx, cache=None):
        start = cache.length if cache is not None else 0
        pos = torch.arange(start, start + idx.size(1), dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x, cache)
        return self.ln_f(x)


# ----------------------------------------------------------------------------------------------------
# generation (model.step, model.generate)

class KVCache:
    """Tensors (B, H, T, D) of the tokens seen so far (keys, values, senses), preallocated for max_len
    positions. A model step feeds either a whole prefix into the empty cache or a single token: it
    writes the new tokens' tensors at position `length` of each buffer and reads the whole prefix back;
    generate() then advances `length`."""

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


@torch.no_grad()
def _step(model, idx, cache):
    """model.step: next-token logits (B, n_tokens) after feeding idx (B, T) on top of what `cache` holds:
    the whole prompt into an empty cache, then one token at a time; the cache advances by T.
    The positions so far must stay within block_size (learned absolute positions)."""
    assert cache.length + idx.size(1) <= model.config.block_size, "the cached sequence exceeds block_size"
    x = model._final_hidden(idx, cache=cache)
    cache.length += idx.size(1)
    return model._next_token_logits(x[:, -1])


@torch.no_grad()
def _generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, greedy=False, stop_ids=None,
              use_cache=True):
    """model.generate: append max_new_tokens to idx (B, T). greedy (or temperature 0) takes the argmax,
    else samples from softmax(logits / temperature) restricted to the top_k; only the n_tokens token
    ids are candidates. A row that has produced one of stop_ids repeats that token from then on;
    generation ends early once every row has stopped. use_cache=False recomputes the whole (cropped)
    window each step, as nanoGPT does, a Backpack's senses included (no KV cache, no sense table)."""
    block_size, cache = model.config.block_size, None
    stop_ids = torch.as_tensor(list(stop_ids or []), dtype=idx.dtype, device=idx.device)
    stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        if not use_cache:  # nothing kept from one step to the next, a Backpack's sense table included
            x = model._final_hidden(idx[:, -block_size:], sense_table=False)
            logits = model._next_token_logits(x[:, -1])
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


# ----------------------------------------------------------------------------------------------------
# pretrained stanfordnlp/backpack-gpt2, and the exports of export_hf.py (backpack-gpt2 or stock GPT-2)

def from_pretrained_backpack(path_or_name='stanfordnlp/backpack-gpt2', dropout=None):
    """BackpackLM with the weights of a HF backpack-gpt2 checkpoint: a local directory (config.json +
    model.safetensors or pytorch_model.bin), or a hub name when the hub is reachable. No remote code
    runs. `dropout` overrides the checkpoint's resid_pdrop (e.g. for finetuning)."""
    directory = Path(path_or_name)
    if not directory.is_dir():
        if not HUB_ID.fullmatch(str(path_or_name)):  # a path (/x, ./x, a/b/c), which no hub id looks like
            raise FileNotFoundError(f"--pretrained_path {path_or_name}: no such directory (a local backpack-gpt2 "
                                    f"is a directory with config.json and model.safetensors or pytorch_model.bin)")
        directory = _download(str(path_or_name))
    hf = _read_hf_config(directory, 'backpack-gpt2')
    model = BackpackLM(_hf_model_config(hf, dropout))
    model.load_state_dict(_convert_hf_state_dict(_read_weights(directory), model), strict=True)
    return model


HF_MODEL_TYPES = {'backpack-gpt2': 'backpack', 'gpt2': 'transformer'}  # config.json's model_type -> ours


def from_export(directory, model_args=None):
    """(our model_type, model on the CPU in train mode) of a Hugging Face directory in one of export_hf.py's
    layouts (config.json + model.safetensors or pytorch_model.bin): model_type backpack-gpt2 gives a BackpackLM,
    gpt2 (a stock GPT2LMHeadModel) a StandardTransformerLM.

    model_args, the ModelConfig fields of the model that was exported (export_hf.py records them in
    release.json), rebuild that very model: with bias=False the zero biases the export had to add are checked
    zero and dropped, so the weights, and every number computed from them, are the trained model's bit for bit.
    Their shapes must be those of config.json. Without model_args the config comes from config.json, with
    biases (as from_pretrained_backpack)."""
    directory = Path(directory)
    hf = _read_hf_config(directory)
    model_type = HF_MODEL_TYPES[hf['model_type']]
    derived = _hf_model_config(hf)
    config = derived if model_args is None else ModelConfig(**model_args)
    shape = ['block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd', 'scale_attn_by_inverse_layer_idx'] + \
        (['n_senses', 'sense_intermediate_scale'] if model_type == 'backpack' else [])
    differ = [f"{k} {getattr(config, k)} (config.json: {getattr(derived, k)})" for k in shape
              if getattr(config, k) != getattr(derived, k)]
    if differ:
        raise ValueError(f"{directory}: the recorded model_args do not describe config.json's model: {', '.join(differ)}")
    model = (BackpackLM if model_type == 'backpack' else StandardTransformerLM)(config)
    model.load_state_dict(_convert_hf_state_dict(_read_weights(directory), model), strict=True)
    return model_type, model


def _read_hf_config(directory, model_type=None):
    """config.json of a Hugging Face directory, checked to be a layout this file reads (model_type, when given,
    the one expected) with GPT-2's activation, LayerNorm epsilon and MLP width."""
    path = Path(directory) / 'config.json'
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a Hugging Face "
                                f"{model_type or 'backpack-gpt2 or GPT-2'} directory")
    hf = json.loads(path.read_text())
    hf.setdefault('model_type', model_type or 'backpack-gpt2')
    if hf['model_type'] not in ((model_type,) if model_type else HF_MODEL_TYPES):
        raise ValueError(f"{path}: model_type {hf['model_type']!r}, expected "
                         f"{model_type or ' or '.join(HF_MODEL_TYPES)}")
    if hf.get('activation_function', 'gelu_new') != 'gelu_new' or hf.get('layer_norm_epsilon', 1e-5) != 1e-5 \
            or hf.get('n_inner') not in (None, 4 * hf.get('n_embd', 768)):
        raise ValueError(f"{path}: only gelu_new, layer_norm_epsilon 1e-5 and n_inner 4*n_embd are supported")
    if hf['model_type'] == 'gpt2' and not (hf.get('tie_word_embeddings', True) and hf.get('scale_attn_weights', True)
                                           and not hf.get('reorder_and_upcast_attn', False)):
        raise ValueError(f"{path}: only a GPT-2 with tied embeddings, scaled attention weights and no "
                         f"reorder_and_upcast_attn is our Transformer")
    return hf


def _hf_model_config(hf, dropout=None):
    """The ModelConfig of a config.json (the defaults are backpack-gpt2's), with biases as GPT-2 has them."""
    return ModelConfig(
        block_size=hf.get('n_positions', 512), vocab_size=hf.get('vocab_size', 50264),
        n_layer=hf.get('n_layer', 12), n_head=hf.get('n_head', 12), n_embd=hf.get('n_embd', 768),
        n_senses=hf.get('num_senses', 16), sense_intermediate_scale=hf.get('sense_intermediate_scale', 4),
        scale_attn_by_inverse_layer_idx=hf.get('scale_attn_by_inverse_layer_idx', hf['model_type'] != 'gpt2'),
        bias=True, dropout=hf.get('resid_pdrop', 0.1) if dropout is None else dropout)


HUB_ID = re.compile(r'[\w][\w.-]*(/[\w][\w.-]*)?')  # 'name' or 'namespace/name', as the hub allows


def _download(name):
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, allow_patterns=['config.json', '*.safetensors', 'pytorch_model.bin']))
    except Exception as e:
        raise FileNotFoundError(
            f"cannot get '{name}' from the Hugging Face hub ({type(e).__name__}), and there is no local directory "
            f"of that name; offline, pass a local directory with its config.json and model.safetensors or "
            f"pytorch_model.bin instead") from None


def _read_weights(directory):
    if (directory / 'model.safetensors').exists():
        from safetensors.torch import load_file
        return load_file(directory / 'model.safetensors')
    if (directory / 'pytorch_model.bin').exists():
        return torch.load(directory / 'pytorch_model.bin', map_location='cpu', weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


# per layout: HF key prefix -> ours, and the HF keys that are tied copies of one of our tensors
HF_LAYOUTS = {
    'backpack-gpt2': ([('backpack.gpt2_model.', 'transformer.'), ('backpack.sense_network.', 'sense_network.'),
                       ('backpack.sense_weight_net.c_attn.', 'sense_weight_net.')],
                      {'lm_head.weight': 'transformer.wte.weight',
                       'backpack.word_embeddings.weight': 'transformer.wte.weight',
                       'backpack.position_embeddings.weight': 'transformer.wpe.weight'}),
    'gpt2': ([('transformer.', 'transformer.')], {'lm_head.weight': 'transformer.wte.weight'}),
}


def _convert_hf_state_dict(sd, model):
    """HF key -> our key, in backpack-gpt2's layout for a Backpack and GPT2LMHeadModel's for the Transformer;
    GPT-2 Conv1D weights are stored (in, out) and are transposed, the weight head (an nn.Linear) is not. Tied
    copies (lm_head, the word/position embedding aliases) must equal the tensor they alias. A bias our model
    lacks (bias=False) must be zero, as export_hf.py writes it, and is dropped: a non-zero one means other
    weights than the model's. Every other key is used, the attention mask buffers excepted."""
    renames, aliases = HF_LAYOUTS['backpack-gpt2' if is_backpack(model) else 'gpt2']
    ours_keys = set(model.state_dict())
    out, tied, unknown = {}, [], []
    for key, tensor in sd.items():
        if key.endswith(('.attn.bias', '.attn.masked_bias')):
            continue
        if key in aliases:
            tied.append((key, tensor))
            continue
        ours = next((new + key[len(old):] for old, new in renames if key.startswith(old)), None)
        if ours is not None and ours not in ours_keys and ours.endswith('.bias') and not model.config.bias:
            if tensor.any():
                raise ValueError(f"{key} is not zero, and the model it is loaded into has no biases (bias=False): "
                                 f"these are not the weights of that model")
            continue
        if ours is None:
            unknown.append(key)
            continue
        conv1d = ours.endswith('.weight') and ('.attn.c_' in ours or 'mlp.c_' in ours)
        out[ours] = tensor.t() if conv1d else tensor
    expected = ours_keys - {'lm_head.weight'}
    missing = sorted(expected - set(out))
    unknown += sorted(set(out) - expected)
    if unknown or missing:
        raise ValueError(f"the checkpoint does not match {type(model).__name__}: unexpected keys {unknown[:5]}, "
                         f"missing keys {missing[:5]}")
    for key, tensor in tied:
        if not torch.equal(tensor, out[aliases[key]]):
            raise ValueError(f"the checkpoint's {key}, a tied copy of {aliases[key]}, differs from it")
    out['lm_head.weight'] = out['transformer.wte.weight']
    return out
