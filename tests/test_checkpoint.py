"""checkpoint.py: durable atomic writes (mode, fsync, SIGKILL at any moment), loading errors, old checkpoints."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch

import checkpoint
from conftest import REPO
from errors import MissingFileError, UserError
from model import BackpackLM, ModelConfig

TINY_ARGS = dict(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16, n_senses=4, dropout=0.0)


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        checkpoint.save_checkpoint({'x': torch.zeros(3)}, tmp_path / 'ckpt.pt')
        checkpoint.save_json({'a': 1}, tmp_path / 'log.json')
    finally:
        os.umask(old)
    for name in ('ckpt.pt', 'log.json'):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    assert json.loads((tmp_path / 'log.json').read_text()) == {'a': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt', 'log.json']  # no temp file left


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append('fsync dir' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'fsync file')
        real_fsync(fd)

    def replace(src, dst):
        events.append('replace')
        real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    checkpoint.save_checkpoint({'x': torch.zeros(3)}, tmp_path / 'ckpt.pt')
    assert events == ['fsync file', 'replace', 'fsync dir']


# Forks a saver 20 times, each resuming the count where the last checkpoint stopped, and SIGKILLs it at a
# random moment; after each kill ckpt.pt must load with weights_only=True and be one whole save.
SIGKILL_SCRIPT = r'''
import json, os, random, signal, sys, time
import torch
torch.set_num_threads(1)  # forked children then never enter an OpenMP region
sys.path.insert(0, sys.argv[1])
import checkpoint
from model import BackpackLM, ModelConfig
out = sys.argv[2]
path = os.path.join(out, 'ckpt.pt')
model = BackpackLM(ModelConfig(block_size=16, vocab_size=2048, n_layer=1, n_head=2, n_embd=64, n_senses=4))
optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
optimizer.step()
scaler = torch.amp.GradScaler('cpu', enabled=False)
expected_keys = set(checkpoint.resume_checkpoint(model, optimizer, scaler, [], iter_num=0, best_val_loss=0.0,
                    evaluated_at=0, training_log={}, config={}, model_type='backpack', model_args={}, meta={}))
random.seed(int(sys.argv[3]))
results, last = [], 0
for trial in range(20):
    pid = os.fork()
    if pid == 0:  # the saver: a resume checkpoint per iteration, every weight equal to the iteration
        i = last
        while True:
            i += 1
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(i)
            ckpt = checkpoint.resume_checkpoint(
                model, optimizer, scaler, checkpoint.gather_rng_states({'n': i}, 1), iter_num=i, best_val_loss=0.0,
                evaluated_at=i, training_log={'train_loss': [0.5] * i}, config={'i': i}, model_type='backpack',
                model_args=json.loads(json.dumps(model.config.__dict__)), meta={'vocab_size': 2048})
            checkpoint.save_checkpoint(ckpt, path)
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        time.sleep(0.001)
    time.sleep(random.uniform(0.0, 0.15))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    temps = [n for n in os.listdir(out) if n.endswith('.tmp')]
    ckpt = torch.load(path, weights_only=True)
    i = ckpt['iter_num']
    whole = (set(ckpt) == expected_keys and ckpt['evaluated_at'] == i and ckpt['config'] == {'i': i}
             and len(ckpt['training_log']['train_loss']) == i and ckpt['rng'][0]['sampler'] == {'n': i}
             and all(bool((t == i).all()) for t in ckpt['model'].values()))
    restored = checkpoint.model_from_checkpoint(ckpt)  # strict load of every weight
    optimizer.load_state_dict(ckpt['optimizer'])
    results.append({'iter': i, 'whole': whole, 'killed_mid_save': bool(temps)})
    for n in temps:
        os.remove(os.path.join(out, n))
    last = i
print(json.dumps(results))
'''


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, '-c', SIGKILL_SCRIPT, str(REPO), str(tmp_path), '7'], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(trials) == 20 and all(t['whole'] for t in trials), trials
    iters = [t['iter'] for t in trials]
    assert iters == sorted(iters) and iters[-1] >= 20  # each saver went on from the last whole save
    assert sum(t['killed_mid_save'] for t in trials) >= 5, trials  # the kills did land inside saves


def test_a_truncated_or_missing_checkpoint_is_one_named_error(tmp_path):
    model = BackpackLM(ModelConfig(**TINY_ARGS))
    ckpt = checkpoint.best_checkpoint(model, iter_num=1, val_loss=1.0, config={}, model_type='backpack',
                                      model_args=TINY_ARGS, meta={'vocab_size': 64})
    checkpoint.save_checkpoint(ckpt, tmp_path / 'best.pt')
    data = (tmp_path / 'best.pt').read_bytes()
    (tmp_path / 'best.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match='best.pt is truncated or corrupt') as error:
        checkpoint.load_model(tmp_path)
    assert '\n' not in str(error.value)
    for garbage in (b'not a checkpoint', b'hello world' * 10):  # the second one made torch.load raise KeyError
        (tmp_path / 'best.pt').write_bytes(garbage)
        with pytest.raises(UserError, match='best.pt is truncated or corrupt'):
            checkpoint.load_model(tmp_path)
    with pytest.raises(MissingFileError, match='no checkpoint in'):
        checkpoint.load_model(tmp_path / 'nowhere')


@pytest.mark.parametrize('data_vocab, expected', [(60, 60), (64, 0)])
def test_checkpoints_without_tokenizer_vocab_size_get_it_from_their_meta(data_vocab, expected):
    model = BackpackLM(ModelConfig(**TINY_ARGS))
    ckpt = checkpoint.best_checkpoint(model, iter_num=1, val_loss=1.0, config={}, model_type='backpack',
                                      model_args=dict(TINY_ARGS), meta={'vocab_size': data_vocab})
    assert 'tokenizer_vocab_size' not in ckpt['model_args']  # as written before the field existed
    assert checkpoint.model_from_checkpoint(ckpt).config.tokenizer_vocab_size == expected


class FakeCuda:
    """torch.cuda's RNG functions for `count` devices, one RNG state (a byte tensor) per device, on a CPU
    machine: setting a device that is not there fails as on a real host."""

    def __init__(self, count, current=0):
        self.count, self.current = count, current
        self.states = [torch.full((8,), 10 * i, dtype=torch.uint8) for i in range(count)]

    def index(self, device='cuda'):
        device = torch.device(device) if not isinstance(device, int) else torch.device('cuda', device)
        index = self.current if device.index is None else device.index
        if index >= self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        return index

    def get_rng_state(self, device='cuda'):
        return self.states[self.index(device)].clone()

    def set_rng_state(self, state, device='cuda'):
        self.states[self.index(device)] = state.clone()

    def install(self, monkeypatch):
        for name in ('get_rng_state', 'set_rng_state'):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, 'get_rng_state_all', lambda: [self.get_rng_state(i) for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, 'set_rng_state_all',
                            lambda states: [self.set_rng_state(s, i) for i, s in enumerate(states)])
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: self.count)
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: self.current)
        return self


def test_a_resume_keeps_only_the_current_gpus_rng_state_and_restores_on_fewer_gpus(tmp_path, monkeypatch):
    saver = FakeCuda(2, current=1).install(monkeypatch)  # the rank on the second of 2 GPUs
    checkpoint.save_checkpoint({'rng': checkpoint.rng_state()}, tmp_path / 'ckpt.pt')
    state = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['rng']
    assert torch.equal(state['cuda'], saver.states[1])  # that GPU's state alone
    resumer = FakeCuda(1).install(monkeypatch)  # resumed on a host with one GPU
    checkpoint.set_rng_state(state)
    assert torch.equal(resumer.states[0], saver.states[1])
    # a checkpoint written before holds every visible GPU's states: the current device's entry is restored
    old = dict(state, cuda=[torch.full((8,), 7, dtype=torch.uint8), torch.full((8,), 9, dtype=torch.uint8)])
    checkpoint.set_rng_state(old)
    assert torch.equal(resumer.states[0], old['cuda'][0])
    second = FakeCuda(2, current=1).install(monkeypatch)
    checkpoint.set_rng_state(old)
    assert torch.equal(second.states[1], old['cuda'][1]) and torch.equal(second.states[0], torch.zeros(8, dtype=torch.uint8))
