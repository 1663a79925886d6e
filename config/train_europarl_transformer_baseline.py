# The Transformer twin of train_europarl_scratch: the same contextual network, data, optimiser and
# schedule; only the output differs (ln_f + tied LM head instead of the Backpack's sense mixture).
# n_senses is kept for config compatibility and is unused by the Transformer.
exec(open(__file__.replace('train_europarl_transformer_baseline.py', 'train_europarl_scratch.py')).read())
model_type = 'transformer'
out_dir = 'out/transformer_full'
