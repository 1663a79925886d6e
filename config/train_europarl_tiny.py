# CPU smoke run in minutes on the bundled sample (data/europarl_sample, made by
#   python data/europarl/prepare.py --source sample --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_sample).
# Same structure as train_europarl_scratch, tiny sizes. Pass --model_type transformer for the twin.
model_type = 'backpack'
data_dir = 'europarl_sample'
out_dir = 'out/tiny_backpack'
device = 'cpu'
dtype = 'float32'

block_size = 128
n_layer = 2
n_head = 2
n_embd = 128
n_senses = 16
dropout = 0.0
bias = False

batch_size = 16
gradient_accumulation_steps = 1
learning_rate = 2e-3
max_iters = 600
lr_decay_iters = 600
warmup_iters = 50
min_lr = 2e-4
weight_decay = 1e-1
beta2 = 0.99

eval_interval = 100
eval_iters = 10
log_interval = 20
