"""A finetuned backpack-gpt2 can be evaluated (issue 9, item 1). Its embedding has more rows (padded, as
backpack-gpt2's 50,264) than its tokenizer has ids: the padding rows are never a top token, a nearest
token or a BLI candidate, and run_full_evaluation.py + verify_evaluation.py go through (they raised a
size mismatch between the model's rows and the tokenizer's ids)."""
import gzip
import json

import pytest
import torch

from conftest import REPO, run_prepare, run_train, write_random_backpack_gpt2
from test_evaluate import BELOW, PASSED, run

PADDING = 5  # rows past the tokenizer's ids, as backpack-gpt2 has 50,264 rows for 50,257 GPT-2 ids + 2 tags


@pytest.fixture(scope='module')
def small_gpt2_data_dir(tmp_path_factory):
    """The first 2,000 sample pairs with the GPT-2 BPE: 1,000 train, 100 valid and 100 test pairs. The
    session's gpt2_data_dir has 1,000 + 1,000 held-out pairs, whose perplexity over 50k rows alone takes
    minutes on 2 cores."""
    root = tmp_path_factory.mktemp('small_gpt2')
    (root / 'src').mkdir()
    for lang in ('en', 'fr'):
        with gzip.open(REPO / 'data' / 'europarl' / 'sample' / f'train.{lang}.gz', 'rt', encoding='utf-8') as f:
            lines = [next(f) for _ in range(2000)]
        (root / 'src' / f'train.{lang}').write_text(''.join(lines), encoding='utf-8')
    result = run_prepare('--source', 'local', '--src_dir', root / 'src', '--tokenizer', 'gpt2', '--max_pairs', 1000,
                         '--heldout_pairs', 100, '--out_dir', root / 'data')
    assert result.returncode == 0, result.stderr
    return root / 'data'


@pytest.fixture(scope='module')
def finetuned(small_gpt2_data_dir, tmp_path_factory):
    """out_dir of a random backpack-gpt2 (tokenizer ids + PADDING rows) finetuned 2 iterations, then evaluated."""
    gpt2_data_dir = small_gpt2_data_dir
    n_ids = json.loads((gpt2_data_dir / 'meta.json').read_text())['vocab_size']
    root = tmp_path_factory.mktemp('finetune_eval')
    write_random_backpack_gpt2(root / 'backpack-gpt2', vocab_size=n_ids + PADDING, n_positions=64, n_layer=1,
                               n_head=2, n_embd=16, num_senses=4, sense_intermediate_scale=2)
    out = root / 'finetune'
    run_train('--config', 'train_europarl_finetune', '--init_from', 'backpack-small', '--device', 'cpu',
              '--data_dir', gpt2_data_dir, '--out_dir', out, '--pretrained_path', root / 'backpack-gpt2',
              '--block_size', 32, '--batch_size', 4, '--gradient_accumulation_steps', 1, '--max_iters', 2,
              '--eval_interval', 2, '--eval_iters', 1, '--log_interval', 1, '--dtype', 'float32')
    result = run('run_full_evaluation.py', '--out_dir', out, '--translation_samples', 4, '--sentence_pairs', 20)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, n_ids


def test_run_full_evaluation_and_verify_on_a_finetuned_backpack_gpt2(finetuned):
    out, n_ids = finetuned
    assert torch.load(out / 'best.pt', weights_only=True)['model']['transformer.wte.weight'].shape[0] == n_ids + PADDING
    result = run('verify_evaluation.py', '--out_dir', out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSED in result.stdout or BELOW.search(result.stdout), result.stdout  # every sanity check passed
    results = json.loads((out / 'evaluation_results.json').read_text())
    shown = [t['id'] for entry in results['senses']['probe_words']['words'].values()
             for sense in entry.get('senses', []) for key in ('top', 'bottom', 'nearest') for t in sense[key]]
    assert shown and max(shown) < n_ids  # no padding row among the listed tokens
    assert results['senses']['probe_words']['max_entropy'] == pytest.approx(torch.log(torch.tensor(n_ids)).item())
    for r in results['bli'].values():
        assert r['n_candidates'] > 0


def test_sense_analysis_never_lists_a_padding_row(finetuned):
    """Padding rows made the most attractive tokens: without the fix they would top every sense."""
    from evaluate import analyze_sense_vectors, load_model, load_tokenizer
    out, n_ids = finetuned
    model, _ = load_model(out, 'cpu')
    with torch.no_grad():
        model.transformer.wte.weight[n_ids:] = 100.0  # padding rows with huge logits and cosines
    r = analyze_sense_vectors(model, load_tokenizer(out), ['the', 'parliament'], 'cpu', top_k=5, verbose=False,
                              filter_tokens=False, labels=['x'] * model.config.n_senses)
    ids = [t['id'] for entry in r['words'].values() for s in entry['senses'] for key in ('top', 'nearest')
           for t in s[key]]
    assert ids and max(ids) < n_ids
