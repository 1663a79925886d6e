# The CPU reference recipe: the best per-language val bits/byte per CPU-minute on 2 cores, chosen by the recorded
# sweep in results/cpu_reference/sweep/sweep.md (5-minute runs, each with its schedule fitted to the budget:
#   python tools/cpu_sweep.py --data bpe8k=data/europarl_bpe8k bpe16k=data/europarl_bpe16k --minutes 5).
# Data: all 500k Europarl pairs, a bilingual byte-level BPE of 8,000 tokens:
#   python data/europarl/prepare.py --language_pair en-fr --source local --src_dir ../shared/data/europarl_v7_fr_en \
#       --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_bpe8k
# tools/cpu_reference.py trains the Backpack, its Transformer twin (--model_type transformer) and the wide
# Transformer with it, setting max_iters = lr_decay_iters to what fits in a budget of probe-minutes on the machine
# at hand (one speed probe per model shape, before any training), so the learning rate has decayed at the end;
# the runs then go by iterations only, whatever the host's load.
model_type = 'backpack'
data_dir = 'europarl_bpe8k'
out_dir = 'out/cpu_reference/backpack'
device = 'cpu'
# Both measured against float32 eager on this recipe's Backpack (2 cores): results/cpu_reference/speed/speed.md,
# bfloat16 247.2 vs 326.2 ms/iter (1.32x) and compile 298.8 ms/iter (1.09x); results/cpu_reference/sweep/runtime/
# sweep.md, 5-minute runs fitted to the budget, mean val bits/byte (EN, FR) fp32 1.507 vs bf16 + compile 1.449
# (0.06 lower). The first committed reference runs (results/cpu_reference, 45 min) used float32 eager.
dtype = 'bfloat16'
compile = True

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
max_iters = 5000     # tools/cpu_reference.py replaces both with the iterations that fit the budget
lr_decay_iters = 5000
warmup_iters = 100
min_lr = 2e-4
weight_decay = 1e-1
beta2 = 0.99
max_minutes = 0.0    # no wall-clock stop: tools/cpu_reference.py's runs go by iterations (it refuses a
                     # config that sets one); give --max_minutes to train.py yourself for a time-boxed run

eval_interval = 1000
eval_iters = 20
log_interval = 10
