# Finetune the pretrained English Backpack (stanfordnlp/backpack-gpt2: 12 layers, d=768, k=16,
# GPT-2 vocabulary) on Europarl fr-en. Needs data prepared with its tokenizer:
#   python data/europarl/prepare.py --language_pair en-fr --tokenizer gpt2 --out_dir data/europarl_gpt2
# and the weights: the hub name below when online, else --pretrained_path /path/to/local/backpack-gpt2
# (config.json + model.safetensors or pytorch_model.bin).
model_type = 'backpack'
init_from = 'backpack-small'
pretrained_path = 'stanfordnlp/backpack-gpt2'
data_dir = 'europarl_gpt2'
out_dir = 'out/backpack_finetune'

block_size = 512          # the pretrained model's context
dropout = 0.1

batch_size = 8
gradient_accumulation_steps = 4   # 32 sequences per iteration, as in the scratch run
learning_rate = 6e-5              # ~5x lower than from scratch: keep the pretrained senses
min_lr = 6e-6
max_iters = 20000
lr_decay_iters = 20000
warmup_iters = 500
weight_decay = 1e-1
beta2 = 0.95

eval_interval = 500
eval_iters = 100
log_interval = 50
