"""
A Backpack language model (Hewitt et al., ACL 2023) for transformers' AutoModelForCausalLM, in the parameter
layout of stanfordnlp/backpack-gpt2 (its checkpoints load as they are) and the math of the training
repository's model.py (its tests check the two equal). export_hf.py copies this file and
configuration_backpack.py beside the weights; they import only torch and transformers (4.x with a Cache
API, and 5.x).

Each token x has k = num_senses sense vectors C(x)_1..C(x)_k, a function of x alone (the sense network);
a GPT-2 transformer reads the sequence, and a linear head on its output ln_f(h) gives per sense l a query
and a key, whose causal softmax is the non-negative weight alpha_lij (the "contextualization"); the output
is the mixture, read by the tied embedding E:
    o_i = sum_l sum_{j<=i} alpha_lij C(x_j)_l,        logits_i = E o_i        (no LayerNorm on o, no 1/k)

Beyond the official modeling code: attention_mask (left padding: positions count real tokens only, padded
keys are masked, in the transformer and in alpha), a KV cache (the transformer's keys and values, and the
weight head's keys and the senses of the tokens seen so far, in a DynamicCache as one extra layer) and so
generate() and pipeline('text-generation'), labels (the mean next-token cross-entropy), inputs_embeds,
output_hidden_states, output_attentions, and output_senses=True: the senses C(x_j) (B, T, k, d) of the new
positions and alpha (B, k, T, past + T) as `senses` and `contextualization`. sense_vectors(ids) and
sense_logits(ids) give a word's senses and the logits each pushes up (Hewitt et al., sec. 5).
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.pytorch_utils import Conv1D

from .configuration_backpack import BackpackGPT2Config

try:  # transformers 5: these skip the weights from_pretrained has loaded
    from transformers import initialization as init
except ImportError:  # transformers 4: initialisation runs before the weights are loaded
    from torch.nn import init

# transformers 5 names the cache `cache` (in forward and in the outputs), transformers 4 `past_key_values`
CACHE = 'cache' if 'cache' in CausalLMOutputWithPast.__dataclass_fields__ else 'past_key_values'


@dataclass
class BackpackModelOutput(BaseModelOutputWithPast):
    """last_hidden_state is o (B, T, d), what the LM head reads; senses (B, T, k, d) the C(x_j) of the new
    positions; contextualization alpha (B, k, T, past + T). Both with output_senses=True."""
    senses: Optional[torch.FloatTensor] = None
    contextualization: Optional[torch.FloatTensor] = None


@dataclass
class BackpackCausalLMOutput(CausalLMOutputWithPast):
    """CausalLMOutputWithPast with the senses and alpha of BackpackModelOutput (output_senses=True)."""
    senses: Optional[torch.FloatTensor] = None
    contextualization: Optional[torch.FloatTensor] = None


def _activation(name):
    # GPT-2's gelu_new is GELU's tanh approximation: torch's own, as the training code computes it
    return (lambda x: F.gelu(x, approximate='tanh')) if name in ('gelu_new', 'gelu_pytorch_tanh') else ACT2FN[name]


# ----------------------------------------------------------------------------------------------------
# the contextual network: GPT-2 (pre-LN, learned positions), parameters named as GPT2Model's

class BackpackGPT2Attention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        d, self.n_head, self.layer_idx = config.n_embd, config.n_head, layer_idx
        self.c_attn = Conv1D(3 * d, d)
        self.c_proj = Conv1D(d, d)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.scale = (d // self.n_head) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:  # backpack-gpt2: also 1/(layer_idx+1)
            self.scale /= layer_idx + 1

    def forward(self, x, mask, cache=None, output_attentions=False):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        weights = None
        if output_attentions:
            weights = torch.softmax((q @ k.transpose(-1, -2) * self.scale).masked_fill(~mask, float('-inf')), dim=-1)
            y = self.attn_dropout(weights) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                               dropout_p=self.attn_dropout.p if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C))), weights


class BackpackMLP(nn.Module):
    """c_fc -> activation -> c_proj -> dropout (GPT-2's MLP, and the sense network's two)."""

    def __init__(self, n_in, n_hidden, n_out, config):
        super().__init__()
        self.c_fc = Conv1D(n_hidden, n_in)
        self.c_proj = Conv1D(n_out, n_hidden)
        self.act = _activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class BackpackGPT2Block(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        d = config.n_embd
        self.ln_1 = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.attn = BackpackGPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.mlp = BackpackMLP(d, config.n_inner or 4 * d, d, config)

    def forward(self, x, mask, cache=None, output_attentions=False):
        a, weights = self.attn(self.ln_1(x), mask, cache, output_attentions)
        x = x + a
        return x + self.mlp(self.ln_2(x)), weights


class BackpackGPT2Transformer(nn.Module):
    """GPT2Model's computation and parameter names (wte, wpe, h.*, ln_f): returns ln_f(h) (B, T, d)."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([BackpackGPT2Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, inputs_embeds, position_ids, mask, cache=None, output_hidden_states=False,
                output_attentions=False):
        x = self.drop(inputs_embeds + self.wpe(position_ids))
        hidden, attentions = (), ()
        for block in self.h:
            hidden += (x,)
            x, weights = block(x, mask, cache, output_attentions)
            attentions += (weights,)
        x = self.ln_f(x)
        return x, (hidden + (x,) if output_hidden_states else None), (attentions if output_attentions else None)


# ----------------------------------------------------------------------------------------------------
# the sense network C(x) and the weight head (alpha)

class BackpackNoMixBlock(nn.Module):
    """A transformer block without attention, per token: LN(r1 + MLP(LN(r1))), r1 = h0 + r0."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = BackpackMLP(config.n_embd, 4 * config.n_embd, config.n_embd, config)
        self.resid_dropout1 = nn.Dropout(config.resid_pdrop)
        self.resid_dropout2 = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, residual):
        residual = self.resid_dropout1(hidden_states) + residual
        residual = self.resid_dropout2(self.mlp(self.ln_1(residual))) + residual
        return self.ln_2(residual)


class BackpackSenseNetwork(nn.Module):
    """C(x) = FinalMLP(NoMixBlock(LN(e), e)), e = E x: (..., d) -> (..., k, d), of the token alone; output
    column l*d + c of final_mlp is sense l, dimension c."""

    def __init__(self, config):
        super().__init__()
        self.num_senses, self.n_embd = config.num_senses, config.n_embd
        self.dropout = nn.Dropout(config.embd_pdrop)
        self.block = BackpackNoMixBlock(config)
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.final_mlp = BackpackMLP(config.n_embd, config.sense_intermediate_scale * config.n_embd,
                                     config.num_senses * config.n_embd, config)

    def forward(self, input_embeds):
        residual = self.dropout(input_embeds)
        senses = self.final_mlp(self.block(self.ln(residual), residual))
        return senses.view(*input_embeds.shape[:-1], self.num_senses, self.n_embd)


class BackpackWeightNetwork(nn.Module):
    """(q_li, key_li) = W ln_f(h_i) + b, split into k heads of d/k: q (already scaled by 1/sqrt(d/k)), key,
    each (B, k, T, d/k)."""

    def __init__(self, num_senses, embed_dim):
        super().__init__()
        self.num_senses, self.n_embd = num_senses, embed_dim
        self.c_attn = nn.Linear(embed_dim, 2 * embed_dim)

    def forward(self, encoded):
        B, T, d = encoded.shape
        k = self.num_senses
        q, key = self.c_attn(encoded).view(B, T, 2, k, d // k).permute(2, 0, 3, 1, 4).unbind(0)
        return q * (k / d) ** 0.5, key


# ----------------------------------------------------------------------------------------------------
# the models

class BackpackGPT2PreTrainedModel(PreTrainedModel):
    config_class = BackpackGPT2Config
    base_model_prefix = 'backpack'
    supports_gradient_checkpointing = False
    _no_split_modules = ['BackpackGPT2Block', 'BackpackNoMixBlock']
    _supports_cache_class = True
    # in backpack-gpt2's checkpoints: GPT-2's attention-mask buffers, and other names of the GPT-2 embeddings
    _keys_to_ignore_on_load_unexpected = [r'\.attn\.bias$', r'\.attn\.masked_bias$', r'word_embeddings\.weight$',
                                          r'position_embeddings\.weight$']

    def _init_weights(self, module):
        """GPT-2's: N(0, initializer_range) weights, zero biases, unit LayerNorm gains."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, 'bias', None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class BackpackGPT2Model(BackpackGPT2PreTrainedModel):
    """o (B, T, d) as last_hidden_state: the Backpack without its LM head."""

    def __init__(self, config):
        super().__init__(config)
        if config.n_embd % config.num_senses:
            raise ValueError(f"n_embd {config.n_embd} must split into num_senses {config.num_senses} query/key heads")
        self.gpt2_model = BackpackGPT2Transformer(config)
        self.sense_network = BackpackSenseNetwork(config)
        self.sense_weight_net = BackpackWeightNetwork(config.num_senses, config.n_embd)
        self.post_init()

    def get_input_embeddings(self):
        return self.gpt2_model.wte

    def set_input_embeddings(self, value):
        self.gpt2_model.wte = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, output_senses=None,
                return_dict=None, past_key_values=None, **kwargs):
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.gpt2_model.wte(input_ids)
        B, T = inputs_embeds.shape[:2]
        output_attentions = output_attentions if output_attentions is not None else getattr(config, 'output_attentions', False)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            getattr(config, 'output_hidden_states', False)
        return_dict = return_dict if return_dict is not None else getattr(config, 'return_dict', True)
        use_cache = use_cache if use_cache is not None else getattr(config, 'use_cache', True)

        cache = cache if cache is not None else past_key_values
        if isinstance(cache, (tuple, list)):  # transformers 4's legacy tuples
            cache = DynamicCache.from_legacy_cache(cache)
        if cache is None and use_cache:
            cache = DynamicCache()
        if cache is not None:
            if not isinstance(cache, DynamicCache):
                raise NotImplementedError(f"a Backpack caches in a DynamicCache, not a {type(cache).__name__}")
            # layers 0..n_layer-1: GPT-2's keys and values; layer n_layer: the weight head's keys and the senses
            if getattr(cache, 'layer_class_to_replicate', None) is None:
                while len(cache.layers) <= config.n_layer:
                    cache.layers.append(DynamicLayer())
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        if S > config.n_positions:
            raise ValueError(f"{S} positions exceed the model's n_positions {config.n_positions} (learned positions)")

        # positions count the real tokens (left padding); a query sees the real keys up to itself, and itself
        # (so that a padding query has one key and no NaN)
        device = inputs_embeds.device
        if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape[1] != S):
            raise ValueError(f"attention_mask must be (batch, past + new tokens = {S}) of 1 (token) and 0 "
                             f"(padding), not {tuple(attention_mask.shape)}")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, S, device=device)[None].expand(B, T)
        query = torch.arange(past, S, device=device)[:, None]
        keys = torch.arange(S, device=device)[None]
        mask = (keys <= query)[None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, :].bool()
        mask = (mask | (keys == query))[:, None]  # (B or 1, 1, T, S)

        senses = self.sense_network(inputs_embeds)  # C(x_j): (B, T, k, d)
        h, hidden_states, attentions = self.gpt2_model(inputs_embeds, position_ids, mask, cache,
                                                       output_hidden_states, output_attentions)
        q, key = self.sense_weight_net(h)  # (B, k, T, d/k)
        C = senses.transpose(1, 2)  # (B, k, T, d)
        if cache is not None:
            key, C = cache.update(key, C, config.n_layer)
        alpha = torch.softmax((q @ key.transpose(-1, -2)).masked_fill(~mask, float('-inf')), dim=-1)  # (B, k, T, S)
        o = (alpha @ C).sum(1)  # o_i = sum_l sum_j alpha_lij C(x_j)_l
        if output_hidden_states:
            hidden_states = hidden_states + (o,)  # GPT-2's (embeddings, blocks, ln_f(h)), then o
        out = BackpackModelOutput(last_hidden_state=o, hidden_states=hidden_states, attentions=attentions,
                                  senses=senses if output_senses else None,
                                  contextualization=alpha if output_senses else None,
                                  **{CACHE: cache if use_cache else None})
        return out if return_dict else out.to_tuple()


class BackpackGPT2LMHeadModel(BackpackGPT2PreTrainedModel, GenerationMixin):
    """logits_i = E o_i over all vocab_size rows of E (tied to the token embedding)."""
    _tied_weights_keys = {'lm_head.weight': 'backpack.gpt2_model.wte.weight'}

    def __init__(self, config):
        super().__init__(config)
        self.backpack = BackpackGPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backpack.gpt2_model.wte

    def set_input_embeddings(self, value):
        self.backpack.gpt2_model.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, output_senses=None,
                return_dict=None, past_key_values=None, logits_to_keep=0, **kwargs):
        """labels (B, T): the loss is the mean cross-entropy of logits_i against labels_{i+1} over the labels
        not -100 (divided by num_items_in_batch instead, when the Trainer passes it)."""
        return_dict = return_dict if return_dict is not None else getattr(self.config, 'return_dict', True)
        out = self.backpack(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            output_senses=output_senses, return_dict=True)
        o = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(o[:, keep])
        loss = None
        if labels is not None:
            targets = labels[:, 1:].to(logits.device).reshape(-1)
            loss = F.cross_entropy(logits[:, :-1].float().reshape(targets.numel(), -1), targets, ignore_index=-100,
                                   reduction='sum')
            count = kwargs.get('num_items_in_batch')
            loss = loss / (count if count is not None else (targets != -100).sum().clamp(min=1))
        result = BackpackCausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions, senses=out.senses,
                                        contextualization=out.contextualization, **{CACHE: getattr(out, CACHE)})
        return result if return_dict else result.to_tuple()

    # --- the senses of words (no context needed)

    @torch.no_grad()
    def sense_vectors(self, token_ids):
        """C(x) (n, k, d) of token ids (a list or a 1-D tensor)."""
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.lm_head.weight.device).reshape(-1)
        return self.backpack.sense_network(self.backpack.gpt2_model.wte(ids))

    @torch.no_grad()
    def sense_logits(self, token_ids):
        """E C(x)_l (n, k, vocab_size): the logits each sense of each token pushes up (rows past the
        tokenizer's ids, if any, are padding)."""
        return self.lm_head(self.sense_vectors(token_ids))
