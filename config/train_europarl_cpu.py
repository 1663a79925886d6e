# The CPU reference recipe: the best per-language val bits/byte per CPU-minute on 2 cores, chosen by the recorded
# sweep in results/cpu_reference/sweep/sweep.md (5-minute runs, each with its schedule fitted to the budget:
#   python experiments/cpu_sweep.py --data bpe8k=data/europarl_bpe8k bpe16k=data/europarl_bpe16k --minutes 5).
# Data: all 500k Europarl pairs, a bilingual byte-level BPE of 8,000 tokens:
#   python data/europarl/prepare.py --language_pair en-fr --source local --src_dir ../shared/data/europarl_v7_fr_en \
#       --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_bpe8k
# experiments/cpu_reference.py trains the Backpack, its Transformer twin (--model_type transformer) and the wide
# Transformer with it for --max_minutes 45, setting max_iters = lr_decay_iters to what fits in the budget on the
# machine at hand (a speed probe), so the learning rate has decayed when the time is up.
model_type = 'backpack'
data_dir = 'europarl_bpe8k'
out_dir = 'out/cpu_reference/backpack'
device = 'cpu'
dtype = 'float32'   # what the committed reference runs used. Measured later: bfloat16 is 1.3x faster on this
                    # Backpack, and with compile = True ends a 5-minute run 0.06 bits/byte lower
                    # (results/cpu_reference/speed, sweep/runtime): the next reference run should take both

block_size = 128
n_layer = 2
n_head = 2
n_embd = 128
n_senses = 16
dropout = 0.0       # under one epoch of 75M tokens: nothing to regularise
bias = False

batch_size = 16
gradient_accumulation_steps = 1
learning_rate = 2e-3
max_iters = 5000     # experiments/cpu_reference.py replaces both with the iterations that fit the budget
lr_decay_iters = 5000
warmup_iters = 100
min_lr = 2e-4
weight_decay = 1e-1
beta2 = 0.99
max_minutes = 45.0

eval_interval = 1000
eval_iters = 20
log_interval = 10
