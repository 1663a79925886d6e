"""
BackpackGPT2Config: the configuration of a Backpack language model (Hewitt et al., ACL 2023) with the field
names of stanfordnlp/backpack-gpt2's config.json (GPT-2's, plus num_senses and sense_intermediate_scale,
model_type "backpack-gpt2"), so that the official checkpoint and this repository's exports share one
config. export_hf.py copies this file beside the weights; it imports only transformers.
"""
from transformers import PretrainedConfig


class BackpackGPT2Config(PretrainedConfig):
    """GPT-2's contextual network (n_layer, n_head, n_embd, n_positions, ...) and the Backpack's sense network:
    num_senses vectors of width n_embd per token, from a final MLP of width sense_intermediate_scale * n_embd.
    The defaults are backpack-gpt2's (its 50,264-row embedding, 512 positions, 1/(layer+1) attention scaling)."""
    model_type = 'backpack-gpt2'
    keys_to_ignore_at_inference = ['past_key_values', 'cache']
    attribute_map = {'hidden_size': 'n_embd', 'max_position_embeddings': 'n_positions',
                     'num_attention_heads': 'n_head', 'num_hidden_layers': 'n_layer'}

    def __init__(self, vocab_size=50264, n_positions=512, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 num_senses=16, sense_intermediate_scale=4, activation_function='gelu_new', resid_pdrop=0.1,
                 embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5, initializer_range=0.02,
                 scale_attn_weights=True, scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=False,
                 use_cache=True, bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True, **kwargs):
        self.vocab_size, self.n_positions, self.n_embd = vocab_size, n_positions, n_embd
        self.n_layer, self.n_head, self.n_inner = n_layer, n_head, n_inner
        self.num_senses, self.sense_intermediate_scale = num_senses, sense_intermediate_scale
        self.activation_function, self.layer_norm_epsilon = activation_function, layer_norm_epsilon
        self.resid_pdrop, self.embd_pdrop, self.attn_pdrop = resid_pdrop, embd_pdrop, attn_pdrop
        self.initializer_range, self.scale_attn_weights = initializer_range, scale_attn_weights
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.reorder_and_upcast_attn = reorder_and_upcast_attn  # accepted; attention runs in the input's dtype
        self.use_cache = use_cache
        # passed on: transformers 4 sets these in PretrainedConfig.__init__, transformers 5 keeps them as given
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
