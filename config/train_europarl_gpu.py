# The GPU reference recipe (tools/gpu_reference.py): the seed's shape (config/train_europarl_scratch.py:
# d 384, 6 layers, 6 heads, k 16 senses, block 512, batch 32) trained for minutes on one H100/H200-class GPU,
# not for the seed's 50k iterations, so that three models, their evaluation and comparison fit in 9 minutes.
# Data: all 500k Europarl pairs, the CPU reference's bilingual byte-level BPE of 8,000 tokens:
#   python data/europarl/prepare.py --language_pair en-fr --source local --src_dir ../shared/data/europarl_v7_fr_en \
#       --tokenizer bpe --vocab_size 8000 --out_dir data/europarl_bpe8k
# tools/gpu_reference.py trains the Backpack, its Transformer twin (--model_type transformer) and the wide
# Transformer with it, setting max_iters = lr_decay_iters (and eval_interval) to what fits in a budget of
# probe-minutes at the speed one probe per model shape measured on the GPU at hand.
model_type = 'backpack'
data_dir = 'europarl_bpe8k'
out_dir = 'out/gpu_reference/backpack'
device = 'cuda'
# bfloat16 autocast: the tensor cores' dense rate (the MFU's denominator in train.py is the bf16 peak) with
# float32's exponent range, so no loss scaling (float16 would need the GradScaler).
dtype = 'bfloat16'
# torch.compile fuses the LayerNorms, GELUs and the sense network's elementwise work into few kernels: at d 384
# the matmuls are small, and launches and memory traffic, not FLOPs, set the step time without it. Its cost
# (tens of seconds per shape, cold) is paid in each shape's speed probe; the run after it reuses inductor's
# on-disk cache, and ms/iter is measured after the first log interval, so neither counts in the schedule.
compile = True

block_size = 512
n_layer = 6
n_head = 6
n_embd = 384
n_senses = 16
dropout = 0.0       # the seed's 0.1 regularises 50k iterations; a run of minutes sees well under one epoch
bias = False

batch_size = 32      # the seed's 32 x 512 = 16,384 tokens per iteration: enough rows to keep the GPU's matmuls busy
gradient_accumulation_steps = 1
# a schedule of one or two thousand iterations, not 50k: the seed's 3e-4 with 2,000 warm-up iterations would
# end before warming up. 1e-3 decaying to 1e-4 and beta2 0.99 are nanoGPT's for a d 384 x 6-layer model on a
# short run (its shakespeare_char config); 100 warm-up iterations are under a tenth of the shortest schedule.
learning_rate = 1e-3
max_iters = 2000     # tools/gpu_reference.py replaces both with the iterations that fit the budget
lr_decay_iters = 2000
warmup_iters = 100
min_lr = 1e-4
weight_decay = 1e-1
beta2 = 0.99
max_minutes = 0.0    # no wall-clock stop: the reference runs go by iterations (the driver refuses a config
                     # that sets one)

eval_interval = 400  # the driver sets it to max_iters // 5
eval_iters = 20      # 4 splits x 20 batches x 16,384 tokens: about a second per evaluation on the GPU
log_interval = 25    # each log syncs the host with the GPU; every 25 iterations keeps that out of ms/iter
