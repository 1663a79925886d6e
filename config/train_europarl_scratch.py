# Backpack LM trained from scratch on Europarl fr-en (the seed's table): 6 layers, 6 heads, d=384,
# k=16 senses, block 512, batch 32, lr 3e-4, 50k iterations. One GPU; several with torchrun.
# Data: python data/europarl/prepare.py --language_pair en-fr --out_dir data/europarl ...
# Note: each evaluation runs eval_iters batches on 4 splits (train, val, val_en, val_fr).
model_type = 'backpack'
data_dir = 'europarl'
out_dir = 'out/backpack_full'

block_size = 512
n_layer = 6
n_head = 6
n_embd = 384
n_senses = 16
dropout = 0.1
bias = False

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 3e-4
max_iters = 50000
lr_decay_iters = 50000
warmup_iters = 2000
min_lr = 3e-5
weight_decay = 1e-1
beta2 = 0.95

eval_interval = 500
eval_iters = 200
log_interval = 50
