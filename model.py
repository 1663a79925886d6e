"""
The Backpack language model (Hewitt et al., ACL 2023), as stanfordnlp/backpack-gpt2 computes it, and its
Transformer twin, built up as nanoGPT builds GPT-2. Each token x has k sense vectors C(x)_1..C(x)_k, a
function of x alone; a GPT-2 transformer reads the sequence and weighs, per sense l, the senses of the
prefix with a causal softmax alpha_lij; the output is that non-contextual mixture, read by the tied E:
    o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l,        logits_i = E o_i        (no LayerNorm on o, no 1/k)
StandardTransformerLM reads ln_f(h) of the same transformer with the same tied head.
    model(idx) -> (logits (B,1,V) of the last position, None); return_logits=True: all (B,T,V) logits;
    model(idx, targets) -> (None, mean NLL over the targets >= 0; -1 and -100 are ignored).
E has vocab_size rows; only the first model.n_tokens are token ids (backpack-gpt2 pads GPT-2's 50,257):
forward scores every row, as in training; what picks or lists tokens (generate, step, input_embeddings,
sense_logits) sees token rows only. kernels.py computes the mixture without holding alpha, the loss
without holding the logits, the senses once per distinct token; generation.py generates with a KV
cache; pretrained.py loads backpack-gpt2 and export_hf.py's exports.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

import generation
from generation import KVCache  # noqa: F401  (importable from here, as before)
from kernels import MIX_KERNELS, SenseLookup, causal_sense_mixing, chunked_cross_entropy


@dataclass
class ModelConfig:
    block_size: int = 512
    vocab_size: int = 50264  # rows of E: backpack-gpt2's padded GPT-2 vocabulary; train.py takes it from meta.json
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    n_senses: int = 16  # k; Backpack only, StandardTransformerLM accepts it for config parity and ignores it
    dropout: float = 0.1
    bias: bool = False  # biases in Linears and LayerNorms (GPT-2 and backpack-gpt2 have them)
    sense_intermediate_scale: int = 4  # width of the sense network's final MLP, in units of n_embd
    scale_attn_by_inverse_layer_idx: bool = False  # also divide layer l's attention scores by l+1
    tokenizer_vocab_size: int = 0  # the leading rows of E that are token ids; 0: all vocab_size rows
    dedup_senses: bool = True  # the sense network once per distinct token, where exact (kernels.SenseLookup)
    sense_dropout_shared_per_batch: bool = False  # dedup in training with dropout too (approximate)
    mix_kernel: str = 'auto'  # the mixture's kernel: 'blocks', 'sdpa' or 'auto' (kernels.py)
    mix_block: int = 64  # queries per block of the 'blocks' mixture

    def __post_init__(self):
        if not 0 <= self.tokenizer_vocab_size <= self.vocab_size:
            raise ValueError(f"tokenizer_vocab_size {self.tokenizer_vocab_size} must be in [0, vocab_size "
                             f"{self.vocab_size}] (0: every row of the embedding is a token id)")
        if self.mix_kernel not in MIX_KERNELS:
            raise ValueError(f"unknown mix_kernel {self.mix_kernel!r}; expected one of {MIX_KERNELS}")


# ----------------------------------------------------------------------------------------------------
# the contextual network: GPT-2 (pre-LN, learned positions, GELU tanh, LayerNorm eps 1e-5)

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
        q, key, value = self.c_attn(x).split(self.n_embd, dim=2)
        q, key, value = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, key, value))
        if cache is not None:  # generation: the keys and values of the prefix
            key = cache.append((self.layer_idx, 'k'), key)
            value = cache.append((self.layer_idx, 'v'), value)
        # queries as many as keys: the whole prefix, causal; a single query: the next token, sees all
        y = F.scaled_dot_product_attention(q, key, value, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=q.size(2) == key.size(2), scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_fc -> GELU(tanh) -> c_proj -> dropout, as GPT-2's MLP and backpack-gpt2's BackpackMLP."""

    def __init__(self, n_in, n_hidden, n_out, config):
        super().__init__()
        self.c_fc = nn.Linear(n_in, n_hidden, bias=config.bias)
        self.c_proj = nn.Linear(n_hidden, n_out, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate='tanh')))


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
    """h = GPT-2(x): token + learned position embeddings, pre-LN blocks; returns ln_f(h) (B, T, d)."""

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
# the Backpack's three pieces: the sense network C(x), the sense weights alpha, the mixture o

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
    """1. C(x) = FinalMLP(NoMixBlock(LN(e), e)), e = E x: (n, d) -> (n, k, d), of the token alone. Output
    column l*d + c of final_mlp is sense l, dimension c (the layout of backpack-gpt2's reshape)."""

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
    """2. (q_li, key_li) = W ln_f(h_i) + b, split into k heads of size d/k -> q, key (B, k, T, d/k), q
    already scaled by 1/sqrt(d/k). Linear(d, 2d), always with a bias as in backpack-gpt2; an nn.Linear
    itself, so that its parameters keep their checkpoint names (sense_weight_net.weight, .bias)."""

    def __init__(self, config):
        super().__init__(config.n_embd, 2 * config.n_embd, bias=True)
        self.n_senses = config.n_senses

    def forward(self, h):
        B, T, d = h.shape
        k = self.n_senses
        q, key = super().forward(h).view(B, T, 2, k, d // k).permute(2, 0, 3, 1, 4).unbind(0)
        return q * (k / d) ** 0.5, key


def sense_weights(q, key):
    """2. alpha_lij = softmax over j <= i of q_li . key_lj: alpha (B, k, T, T), materialised."""
    T = q.size(2)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax((q @ key.transpose(-1, -2)).masked_fill(future, float('-inf')), dim=-1)


def mix_senses(alpha, C):
    """3. o_i = sum_l sum_j alpha_lij C(x_j)_l: alpha (B, k, T, T), C (B, k, T, d) -> o (B, T, d). The
    explicit mixture; kernels.causal_sense_mixing(q, key, C) computes the same without holding alpha."""
    return torch.matmul(alpha, C).sum(1)


# ----------------------------------------------------------------------------------------------------
# the two language models

class _LanguageModel(nn.Module):
    """What both models share: the transformer, the tied LM head E and the loss, init, optimizer groups,
    generation. Subclasses define _final_hidden(idx, cache, sense_table) -> what E reads (B, T, d)."""

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
        """How many leading rows of E are token ids (the rest are padding)."""
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

    def forward(self, idx, targets=None, return_logits=False):
        assert idx.size(1) <= self.config.block_size, f"sequence of {idx.size(1)} > block_size {self.config.block_size}"
        return self._logits_and_loss(self._final_hidden(idx), targets, return_logits)

    def _logits_and_loss(self, x, targets, return_logits):
        """logits = E x over every row, padding included (the distribution trained), and/or the loss (by
        row chunks of E, never holding the B*T*V logits, unless they are asked for)."""
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
        counts.update({name: sum(p.numel() for p in m.parameters()) for name, m in self._own_parts().items()})
        counts['total'] = self.get_num_params(non_embedding=False)
        return counts

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # nanoGPT: matrices and embeddings decay; biases and LayerNorm gains do not
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    def step(self, idx, cache):
        """Next-token logits (B, n_tokens) after feeding idx (B, T) on top of a KVCache (generation.py)."""
        return generation.step(self, idx, cache)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, greedy=False, stop_ids=None,
                 use_cache=True):
        """idx (B, T) with max_new_tokens appended (generation.py; call model.eval() first)."""
        return generation.generate(self, idx, max_new_tokens, temperature, top_k, greedy, stop_ids, use_cache)


def _loss_targets(targets):
    """Targets with -1 (nanoGPT) and -100 (Hugging Face), the ignored ones, as -1; any other negative
    one is refused, not ignored or scored as some class. A check in Python would make the host wait
    for an accelerator at every step: there the device asserts asynchronously (at the next sync)."""
    bad = (targets < 0) & (targets != -1) & (targets != -100)
    message = "targets must be token ids >= 0, or -1 / -100 for ignored positions"
    if targets.device.type == 'cpu':
        if bad.any():
            raise ValueError(f"{message}; got {targets[bad][0].item()}")
    else:
        torch._assert_async(~bad.any(), message)
    return targets.clamp(min=-1)


class StandardTransformerLM(_LanguageModel):
    """logits_i = E ln_f(h_i): the Backpack's transformer with the tied head on its own output. The
    Backpack-only config fields (n_senses, dedup_senses, ...) are accepted and unused."""

    def __init__(self, config):
        super().__init__(config)
        self._init_weights()

    def _final_hidden(self, idx, cache=None, sense_table=True):  # sense_table: the Backpack's, unused here
        return self.transformer(idx, cache)

    def hidden_states(self, idx):
        """Per-position representations (e.g. for sentence vectors): ln_f(h) (B, T, d)."""
        return {'hidden': self.transformer(idx)}

    def _own_parts(self):
        return {}


class BackpackLM(_LanguageModel):
    """logits_i = E o_i,  o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l."""

    def __init__(self, config):
        super().__init__(config)
        assert config.n_embd % config.n_senses == 0, "n_embd must split into n_senses query/key heads"
        self.sense_network = SenseNetwork(config)
        self.sense_weight_net = SenseWeightHead(config)
        # C(x_j) of every position, computed once per distinct token where exact (kernels.py)
        self.sense_lookup = SenseLookup(self.sense_network, self.transformer.wte, config)
        self._init_weights()

    def forward(self, idx, targets=None, return_logits=False, alpha=None, senses=None):
        """Interventions: alpha (B, k, T, T) replaces the sense weights, senses (B, T, k, d) the C(x_j)."""
        assert idx.size(1) <= self.config.block_size, f"sequence of {idx.size(1)} > block_size {self.config.block_size}"
        o = self._final_hidden(idx, alpha=alpha, senses=senses)
        return self._logits_and_loss(o, targets, return_logits)  # logits_i = E o_i

    def _final_hidden(self, idx, cache=None, alpha=None, senses=None, sense_table=True):
        """o (B, T, d), what E reads (with a KVCache, generation.py: of the new positions only)."""
        C = self.sense_lookup(idx, sense_table) if senses is None else senses.transpose(1, 2)  # C(x_j)_l (B, k, T, d)
        if alpha is not None:  # an edited alpha, mixed explicitly
            return mix_senses(alpha, C)
        q, key = self.sense_weight_net(self.transformer(idx, cache))  # alpha_lij = softmax_{j<=i} q_li . key_lj
        if cache is not None:  # generation: the keys and senses of the prefix
            key, C = cache.append('sense_keys', key), cache.append('senses', C)
        # o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l, never holding alpha: = mix_senses(sense_weights(q, key), C)
        return causal_sense_mixing(q, key, C, self.config.mix_kernel, self.config.mix_block)

    def clear_sense_table(self):
        """Free the inference table of sense vectors (it refills on the next inference call)."""
        self.sense_lookup.clear()

    def train(self, mode=True):
        if mode:  # the next optimizer step makes the table stale: free its memory during training
            self.clear_sense_table()
        return super().train(mode)

    def _own_parts(self):
        return {'sense_network': self.sense_network, 'weight_head': self.sense_weight_net}

    # --- analysis

    def contextualization(self, idx):
        """alpha (B, k, T, T), materialised: alpha[b, l, i, j] = weight of sense l of token j at i."""
        return sense_weights(*self.sense_weight_net(self.transformer(idx)))

    def hidden_states(self, idx):
        """Per-position representations: the transformer's ln_f(h) and the Backpack's o."""
        h = self.transformer(idx)
        q, key = self.sense_weight_net(h)
        return {'hidden': h, 'o': causal_sense_mixing(q, key, self.sense_lookup(idx), self.config.mix_kernel,
                                                      self.config.mix_block)}

    def sense_vectors(self, token_ids, chunk=4096):
        """C(x) (n, k, d) of a 1-D tensor of ids, `chunk` at a time (the (n, 4d) intermediates of the
        whole vocabulary never exist at once)."""
        E = self.transformer.wte
        return torch.cat([self.sense_network(E(ids)) for ids in token_ids.split(chunk)])

    def sense_logits(self, token_ids):
        """E C(x)_l (n, k, n_tokens): the logits each sense pushes up (Hewitt et al., sec. 5), token rows only."""
        return self.sense_vectors(token_ids) @ self.input_embeddings().t()


def is_backpack(model):
    """Whether `model` has sense vectors: a BackpackLM (also under torch.compile, which forwards
    attributes) or a stand-in with its API. The one test for "is this a Backpack"."""
    return hasattr(model, 'sense_vectors')


def __getattr__(name):
    """The loader moved to pretrained.py (which imports this file); `from model import from_export` still works."""
    if name in ('from_pretrained_backpack', 'from_export'):
        import pretrained
        return getattr(pretrained, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
