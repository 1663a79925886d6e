"""sample.py: one-line errors for what a user can get wrong (issue 14, item 3) and one-line warnings
where it does something the user may not expect (item 4): a prompt longer than the context is
cropped; --greedy is deterministic, so it prints one sample instead of num_samples identical ones."""
import shutil

import pytest
import torch

import sample
from errors import run_main
from test_entry_points import NO_CUDA, listing, one_line_error


@pytest.fixture(scope='module')
def dirs(tiny_backpack_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp('sample')
    corrupt, empty = root / 'corrupt', root / 'empty'
    shutil.copytree(tiny_backpack_dir, corrupt)
    (corrupt / 'best.pt').write_bytes(b'not a checkpoint' * 64)
    empty.mkdir()
    return {'good': tiny_backpack_dir, 'corrupt': corrupt, 'empty': empty, 'root': root}


@pytest.mark.parametrize('which, args, message', [
    pytest.param('good', ['--device', 'cuda'], 'CPU-only torch', marks=NO_CUDA, id='cuda-on-cpu-torch'),
    pytest.param('good', ['--device', 'gpu'], "unknown --device 'gpu'", id='gpu'),
    pytest.param('empty', [], 'no checkpoint in', id='missing-checkpoint'),
    pytest.param('corrupt', [], 'best.pt is truncated or corrupt', id='corrupt-checkpoint'),
    pytest.param('good', ['--start', 'FILE:missing.txt'], "--start FILE:missing.txt: no file 'missing.txt'",
                 id='start-file-missing'),
    pytest.param('good', ['--start', '   '], '--start is empty', id='empty-start'),
])
def test_sample_py_one_line_errors(dirs, capsys, which, args, message):
    line = one_line_error(capsys, sample.main, ['--out_dir', dirs[which], *args], [dirs[which]])
    assert message in line


def samples(out):
    """The generated texts of sample.py's stdout."""
    return [s.split('\n', 1)[1].rstrip('\n') for s in out.split('--- sample ')[1:]]


def test_greedy_prints_one_sample_and_says_why(dirs, capsys):
    sample.main(['--out_dir', str(dirs['good']), '--start', '<en> The Parliament <fr>', '--greedy',
                 '--num_samples', '3', '--max_new_tokens', '6'])
    captured = capsys.readouterr()
    assert len(samples(captured.out)) == 1  # not three identical ones
    assert captured.err == 'warning: --greedy decoding is deterministic: printing 1 sample, not 3 identical ones\n'
    sample.main(['--out_dir', str(dirs['good']), '--start', '<en> The Parliament <fr>', '--num_samples', '2',
                 '--max_new_tokens', '6'])
    captured = capsys.readouterr()
    assert len(samples(captured.out)) == 2 and captured.err == ''  # sampling: as many as asked, no warning


def test_prompt_longer_than_the_context_is_cropped_with_a_warning(dirs, capsys, tmp_path):
    block_size = torch.load(dirs['good'] / 'best.pt', weights_only=True)['model_args']['block_size']
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('<en> ' + ' '.join(['the Parliament'] * block_size) + ' <fr>', encoding='utf-8')
    before = listing(dirs['good'])
    run_main(sample.main, ['--out_dir', str(dirs['good']), '--start', f'FILE:{prompt}', '--greedy',
                           '--num_samples', '1', '--max_new_tokens', '4'])
    captured = capsys.readouterr()
    warning = captured.err.strip()
    assert warning.startswith('warning: the prompt has ') and '\n' not in warning, captured.err
    assert f"more than the model's context of {block_size}: only its last {block_size} tokens are used" in warning
    assert len(samples(captured.out)) == 1 and listing(dirs['good']) == before
