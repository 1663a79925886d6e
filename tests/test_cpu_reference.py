"""tools/cpu_reference.py (the reference experiment's one command) on a tiny config: the plan fits each
schedule to a budget in probe-minutes (and states it in train.py's FLOPs) and widens the Transformer to the
Backpack's size in each size, the runs go by iterations only, one per seed, finished runs are not retrained, an
unfinished one is resumed; and the committed results of the real run pass verify_evaluation.py --committed."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

TINY_CONFIG = """
block_size = 32
n_layer = 1
n_head = 2
n_embd = 32
n_senses = 16
dropout = 0.0
batch_size = 8
learning_rate = 1e-2
warmup_iters = 2
min_lr = 1e-3
eval_iters = 2
log_interval = 2
"""


def driver(*args):
    return subprocess.run([sys.executable, 'tools/cpu_reference.py', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def planned(tmp_path_factory, sample_data_dir):
    """Both sizes: S (the tiny config) with seeds 0 and 1, M with seed 0 only."""
    tmp = tmp_path_factory.mktemp('cpu_reference')
    config = tmp / 'tiny.py'
    config.write_text(TINY_CONFIG)
    args = ['--config', config, '--data_dir', sample_data_dir, '--sizes', 'S', 'M', '--budget', 'S=0.02', 'M=0.02',
            '--seeds', 0, 1, '--size_seeds', 'M=0', '--probe_iters', 6, '--steps', 'plan', 'train',
            '--work_dir', tmp / 'work', '--test_sets']
    result = driver(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return tmp / 'work', args, sample_data_dir


def test_plan_fits_each_schedule_and_widens_the_transformer_to_the_backpack(planned):
    work, _, _ = planned
    plan = json.loads((work / 'plan.json').read_text())
    assert list(plan['sizes']) == ['S', 'M'] and plan['seeds'] == {'S': [0, 1], 'M': [0]}
    for size, n_embd, n_head in (('S', 32, 2), ('M', 192, 3)):
        models = plan['sizes'][size]['models']
        assert list(models) == ['backpack', 'transformer', 'transformer_wide']
        wide, twin, backpack = models['transformer_wide'], models['transformer'], models['backpack']
        assert wide['settings']['n_embd'] > n_embd and wide['settings']['n_embd'] % (8 * n_head) == 0
        assert abs(wide['params'] - backpack['params']) < abs(twin['params'] - backpack['params'])
        for model, entry in models.items():
            log = json.loads((work / size / f'{model}_seed0' / 'training_log.json').read_text())
            assert log['config']['max_minutes'] == 0 and log['config']['lr_decay_iters'] == entry['max_iters']
            assert log['iter_num'] == entry['max_iters']  # by iterations, not by the clock
            assert log['model_type'] == entry['settings']['model_type']
    commands = json.loads((work / 'commands.json').read_text())
    assert [c['model'] for c in commands if c['step'] == 'train'] == [
        f'{size}/{model}_seed{seed}' for size, seeds in (('S', (0, 1)), ('M', (0,)))
        for seed in seeds for model in ('backpack', 'transformer', 'transformer_wide')]
    assert all('--max_minutes' not in c['command'] for c in commands)
    assert not (work / 'probe').exists()  # the probes' checkpoints are not kept


def test_size_m_gets_its_own_shapes(planned):
    work, _, _ = planned
    sizes = json.loads((work / 'plan.json').read_text())['sizes']
    assert sizes['S']['settings'] == {} and sizes['M']['settings']['n_embd'] == 192
    for model in ('backpack', 'transformer', 'transformer_wide'):
        s_cfg = json.loads((work / 'S' / f'{model}_seed0' / 'training_log.json').read_text())['config']
        m_cfg = json.loads((work / 'M' / f'{model}_seed0' / 'training_log.json').read_text())['config']
        assert (s_cfg['n_layer'], s_cfg['n_head']) == (1, 2) and (m_cfg['n_layer'], m_cfg['n_head']) == (3, 3)
        assert m_cfg['n_embd'] == sizes['M']['models'][model]['settings'].get('n_embd', 192)
        assert sizes['M']['models'][model]['params'] > sizes['S']['models'][model]['params']
    assert sizes['M']['models']['transformer_wide']['settings']['n_embd'] > 192
    assert not (work / 'M' / 'backpack_seed1').exists()  # --size_seeds M=0


def test_plan_states_the_budget_in_probe_minutes_and_in_train_py_flops(planned):
    from dataclasses import fields
    from model import ModelConfig
    from train import flops_per_token
    work, _, data_dir = planned
    vocab_size = json.loads((data_dir / 'meta.json').read_text())['vocab_size']
    plan = json.loads((work / 'plan.json').read_text())
    for size, sized in plan['sizes'].items():
        assert sized['probe_minutes'] == 0.02
        for model, entry in sized['models'].items():
            config = json.loads((work / size / f'{model}_seed0' / 'training_log.json').read_text())['config']
            cfg = ModelConfig(**{f.name: config[f.name] for f in fields(ModelConfig) if f.name in config},
                              vocab_size=vocab_size)
            tokens_per_iter = config['batch_size'] * config['gradient_accumulation_steps'] * config['block_size']
            per_token = flops_per_token(entry['settings']['model_type'], cfg, config['block_size'])
            assert (entry['flops_per_token'], entry['tokens_per_iter']) == (per_token, tokens_per_iter)
            assert entry['train_flops'] == per_token * tokens_per_iter * entry['max_iters']
            assert entry['probe_minutes'] == 0.02
            assert entry['planned_probe_minutes'] == round(entry['max_iters'] * entry['probe_ms_per_iter'] / 60_000, 2)
    backpack, twin = plan['sizes']['S']['models']['backpack'], plan['sizes']['S']['models']['transformer']
    assert backpack['flops_per_token'] > twin['flops_per_token']  # the sense network and the mixture


def test_two_seeds_give_two_runs_with_their_seeds(planned):
    work, _, _ = planned
    for model in ('backpack', 'transformer', 'transformer_wide'):
        logs = [json.loads((work / 'S' / f'{model}_seed{s}' / 'training_log.json').read_text()) for s in (0, 1)]
        assert [log['config']['seed'] for log in logs] == [0, 1]
        assert logs[0]['config']['max_iters'] == logs[1]['config']['max_iters']  # one plan per shape
        assert logs[0]['train_loss'] != logs[1]['train_loss']


def test_finished_runs_are_kept_and_an_unfinished_one_resumes(planned):
    work, args, _ = planned
    log_path = work / 'S' / 'transformer_seed1' / 'training_log.json'
    log = json.loads(log_path.read_text())
    log['elapsed_s'], log['iter_num'], log['evals'] = 0.0, 0, log['evals'][:1]  # as if it stopped early
    log_path.write_text(json.dumps(log))
    before = len(json.loads((work / 'commands.json').read_text()))
    result = driver(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    new = json.loads((work / 'commands.json').read_text())[before:]
    assert [(c['step'], c['model']) for c in new] == [('train', 'S/transformer_seed1')]
    assert '--init_from resume' in new[0]['command'] and '--seed 1' in new[0]['command']
    assert '[train] S/backpack_seed0: finished' in result.stdout and '[plan]' not in result.stdout  # plan kept


def test_a_changed_budget_or_an_old_plan_is_one_line(planned, tmp_path):
    work, args, _ = planned
    changed = [a if a != 'S=0.02' else 'S=0.5' for a in args]
    result = driver(*changed)
    assert result.returncode == 1 and 'planned size S for 0.02 probe-minutes, not --budget S=0.5' in result.stderr
    (tmp_path / 'w').mkdir()
    (tmp_path / 'w' / 'plan.json').write_text(json.dumps({'backpack': {'max_iters': 10}}))
    result = driver(*[a if a != work else tmp_path / 'w' for a in args])
    assert result.returncode == 1 and 'is an older plan' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_config_with_a_wall_clock_stop_is_refused(tmp_path, sample_data_dir):
    config = tmp_path / 'timed.py'
    config.write_text(TINY_CONFIG + 'max_minutes = 45.0\n')
    result = driver('--config', config, '--data_dir', sample_data_dir, '--steps', 'plan', '--work_dir', tmp_path / 'w',
                    '--test_sets')
    assert result.returncode == 1 and 'sets max_minutes = 45' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_recipe_trains_in_bfloat16_compiled_without_a_wall_clock_stop():
    from tools.cpu_reference import read_config
    config = read_config('train_europarl_cpu')
    assert (config['dtype'], config['compile'], config['max_minutes']) == ('bfloat16', True, 0.0)


def test_a_run_that_reached_max_iters_between_evaluations_is_finished(tmp_path):
    # eval_interval = max_iters // 5 need not divide max_iters: the last evaluation is then short of it
    from tools.cpu_reference import finished
    log = {'iter_num': 6992, 'elapsed_s': 2360.0, 'evals': [{'iter': 6990}]}
    (tmp_path / 'training_log.json').write_text(json.dumps(log))
    assert finished(tmp_path, 6992)
    (tmp_path / 'training_log.json').write_text(json.dumps({**log, 'iter_num': 6990, 'elapsed_s': 1e6}))
    assert not finished(tmp_path, 6992)  # however long it ran: the runs go by iterations


def test_a_missing_test_set_is_one_line_before_anything_runs(tmp_path):
    result = driver('--test_sets', 'news=nope.en,nope.fr', '--work_dir', tmp_path / 'w')
    assert result.returncode == 1 and 'test set news: nope.en not found' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / 'w').exists()


# the first reference, and seed 0 of the seeded one's size S (the released models; every collected run is verified
# by the command of the README, too slow for the suite: about 25 s each)
VERIFIED = [f'first/{m}' for m in ('backpack', 'transformer', 'transformer_wide')] + \
    [f'S/{m}_seed0' for m in ('backpack', 'transformer', 'transformer_wide')
     if (REPO / 'results' / 'cpu_reference' / 'S' / f'{m}_seed0' / 'evaluation_results.json').is_file()]


@pytest.mark.parametrize('run', VERIFIED)
def test_committed_reference_results_pass_verify(run):
    out_dir = REPO / 'results' / 'cpu_reference' / run
    result = subprocess.run([sys.executable, 'verify_evaluation.py', '--out_dir', out_dir, '--committed'], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert 'checks passed' in result.stdout and 'checked as committed results' in result.stdout


ABSOLUTE = re.compile(r'''(?:^|[\s"'=(`:,\[])(/(?:work|tmp|home|root|Users|mnt|opt|var|data|scratch)/[^\s"'`)]*)''')


def test_no_committed_result_names_an_absolute_path():
    """Committed results must mean the same on any machine: every path they name is relative to the repository
    or to the out_dir (the numbers were once only checkable on the machine that made them)."""
    found = []
    for path in sorted((REPO / 'results').rglob('*')):
        if path.suffix not in ('.json', '.md', '.log', '.txt', '.tsv', '.csv') or not path.is_file():
            continue
        text = path.read_text(encoding='utf-8')
        found += [f'{path.relative_to(REPO)}: {m.group(1)}' for m in ABSOLUTE.finditer(text)][:3]
        if path.suffix == '.json':
            import verify_evaluation
            data = json.loads(text)
            found += [f'{path.relative_to(REPO)}: {where} = {value}'
                      for where, value in verify_evaluation.absolute_paths(data) if not where.startswith('machine')][:3]
    assert not found, '\n'.join(found[:30])


def test_verify_recomputes_the_committed_reference_and_names_each_corrupted_field(tmp_path):
    """One stored hypothesis, one cosine and one hit changed in a copy of the committed Backpack results: each
    recomputed headline differs from the recorded one, and verify names each field."""
    import verify_evaluation
    out = tmp_path / 'backpack'
    shutil.copytree(REPO / 'results' / 'cpu_reference' / 'first' / 'backpack', out)
    results = json.loads((out / 'evaluation_results.json').read_text())
    results['translation']['en-fr']['hypotheses'][0] = 'Le Parlement'
    results['word_similarity']['fr']['cosines']['mean_sense'][0] = 0.99
    hits = results['bli']['fr-en']['csls']['embedding']['hits@1']
    hits[0] = 1 - hits[0]
    (out / 'evaluation_results.json').write_text(json.dumps(results))
    c, _, _ = verify_evaluation.verify(out, committed=True)
    for field in ('translation.en-fr.bleu: recorded', 'word_similarity.fr.spearman.mean_sense: recorded',
                  'bli.fr-en.csls.embedding.p@1: recorded'):
        assert any(field in failure for failure in c.failures), (field, c.failures[:10])


def test_collect_keeps_evidence_portable_and_the_shared_data_once(tmp_path):
    """collect on runs made in another checkout: their absolute paths become relative to it, the data files
    alike in every run are kept once and linked, weights are never copied, the alpha/sense figures of seed 0
    only, and a planned run not yet evaluated is listed as pending."""
    checkout = tmp_path / 'checkout'
    work = checkout / 'out' / 'ref'
    subprocess.run(['git', 'init', '-q', str(checkout)], check=True)
    (work / 'S').mkdir(parents=True)
    models = {'backpack': {'settings': {'model_type': 'backpack'}},
              'transformer': {'settings': {'model_type': 'transformer'}}}
    (work / 'plan.json').write_text(json.dumps({'note': '', 'seeds': {'S': [0, 1]},
                                                'sizes': {'S': {'probe_minutes': 1, 'settings': {}, 'models': models}}}))
    (work / 'commands.json').write_text(json.dumps([{'step': 'train', 'model': 'S/backpack_seed0', 'wall_s': 2.0,
                                                     'command': f'python train.py --out_dir {work}/S/backpack_seed0',
                                                     'git_revision': 'abc1234'}]))
    for name, evaluated, meta_source in (('backpack_seed0', True, 'shared/data/x'), ('transformer_seed0', True,
                                          'shared/data/x'), ('backpack_seed1', True, 'shared/data/y'),
                                         ('transformer_seed1', False, 'shared/data/x')):
        run = work / 'S' / name
        (run / 'tokenizer').mkdir(parents=True)
        (run / 'tokenizer' / 'tokenizer.json').write_text('{"model": "bpe"}')
        (run / 'meta.json').write_text(json.dumps({'source': f'{tmp_path}/{meta_source}'}))
        (run / 'test.en').write_text('Thank you.\n')
        (run / 'test.fr').write_text('Merci.\n')
        (run / 'best.pt').write_bytes(b'weights')
        for png in ('alpha_en.png', 'loss_curve.png'):
            (run / png).write_bytes(b'\x89PNG')
        (run / 'training_log.json').write_text(json.dumps({'config': {'out_dir': str(run)}}))
        if evaluated:
            (run / 'evaluation_results.json').write_text(json.dumps({'model': {'out_dir': f'out/ref/S/{name}'}}))
            (run / 'translation_europarl_beam4.json').write_text('{"translation": {}}')
        elif name == 'transformer_seed1':  # evaluated but for its beam-4 translation: still pending
            (run / 'evaluation_results.json').write_text(json.dumps({'model': {'out_dir': f'out/ref/S/{name}'}}))
    results = tmp_path / 'results'
    result = driver('--work_dir', work, '--results', results, '--steps', 'collect', '--test_sets')
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_json = json.loads((results / 'run.json').read_text())
    assert run_json['pending'] == ['S/transformer_seed1']
    assert run_json['collected'] == ['S/backpack_seed0', 'S/transformer_seed0', 'S/backpack_seed1']
    assert run_json['runs_made_at_revisions'] == ['abc1234']
    seed0, seed1 = results / 'S' / 'backpack_seed0', results / 'S' / 'backpack_seed1'
    for run in (seed0, results / 'S' / 'transformer_seed0', seed1):
        assert not (run / 'best.pt').exists() and (run / 'loss_curve.png').is_file()
        for item in ('test.en', 'test.fr', 'tokenizer'):
            assert (run / item).is_symlink() and (run / item).resolve() == (results / 'shared' / item).resolve()
        assert json.loads((run / 'training_log.json').read_text())['config']['out_dir'] == \
            f"out/ref/S/{run.name}"
    assert (seed0 / 'alpha_en.png').is_file() and not (seed1 / 'alpha_en.png').exists()
    assert (seed0 / 'meta.json').is_symlink()
    assert not (seed1 / 'meta.json').is_symlink()  # its data differ: its own copy
    assert json.loads((results / 'shared' / 'meta.json').read_text())['source'] == '../shared/data/x'
    assert json.loads((seed1 / 'meta.json').read_text())['source'] == '../shared/data/y'
    leftover = [p for p in results.rglob('*') if p.is_file() and str(tmp_path) in p.read_text(errors='replace')]
    assert not leftover
    assert (results / 'S' / 'backpack_seed0' / 'test.en').read_text() == 'Thank you.\n'
    # a collect from another machine's work dir, which has seed 1's twin only: what was collected stays collected,
    # with its command records
    shutil.rmtree(work / 'S' / 'backpack_seed0')
    shutil.rmtree(work / 'S' / 'transformer_seed0')
    shutil.rmtree(work / 'S' / 'backpack_seed1')
    (work / 'S' / 'transformer_seed1' / 'translation_europarl_beam4.json').write_text('{"translation": {}}')
    (work / 'commands.json').write_text(json.dumps([{'step': 'train', 'model': 'S/transformer_seed1', 'wall_s': 3.0,
                                                     'command': 'python train.py', 'git_revision': 'def5678'}]))
    result = driver('--work_dir', work, '--results', results, '--steps', 'collect', '--test_sets')
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_json = json.loads((results / 'run.json').read_text())
    assert run_json['pending'] == []
    assert run_json['collected'] == ['S/backpack_seed0', 'S/transformer_seed0', 'S/backpack_seed1',
                                     'S/transformer_seed1']
    assert run_json['runs_made_at_revisions'] == ['abc1234', 'def5678']
    assert run_json['train_wall_s'] == {'S/backpack_seed0': 2.0, 'S/transformer_seed1': 3.0}


def test_seed_statistics_over_seeds_pairs_by_seed_and_checks_its_files(tmp_path):
    """tools/seed_statistics.py on a reference layout made of the committed first reference (seed 0) and a
    copy of it whose one BLI hit differs (seed 1): the means are over both seeds, the paired differences pair by
    seed, and --check fails once a run changes."""
    from tools import seed_statistics
    from errors import UserError
    first = REPO / 'results' / 'cpu_reference' / 'first'
    (tmp_path / 'S').mkdir()
    for model in ('backpack', 'transformer'):
        for seed in (0, 1):
            run = tmp_path / 'S' / f'{model}_seed{seed}'
            run.mkdir()
            shutil.copy(first / model / 'evaluation_results.json', run)  # (its translation_*.json: more of the same)
    changed = tmp_path / 'S' / 'backpack_seed1' / 'evaluation_results.json'
    results = json.loads(changed.read_text())
    bli = results['bli']['en-fr']
    hits = bli['csls']['mean_sense']['hits@1']
    flip = bli['non_identical'][0]
    hits[flip] = 1 - hits[flip]
    changed.write_text(json.dumps(results))
    (tmp_path / 'plan.json').write_text(json.dumps({'seeds': {'S': [0, 1]}, 'sizes': {}}))
    args = [str(tmp_path), '--n_resamples', '100']
    seed_statistics.main(args)
    stats = json.loads((tmp_path / 'S' / 'seeds.json').read_text())
    assert stats['seeds'] == [0, 1] and set(stats['models']) == {'backpack', 'transformer'}
    rows = {(r['metric'], r['representation']): r for r in stats['models']['backpack']}
    bli_row = rows[('BLI en-fr CSLS P@1 non-identical', 'mean_sense')]
    keep = bli['non_identical']
    base = sum(hits[i] for i in keep)  # seed 1's hits (flipped); seed 0 had 1 - hits[flip] at that query
    per_seed = [(base - hits[flip] + (1 - hits[flip])) / len(keep), base / len(keep)]
    assert bli_row['per_seed'] == pytest.approx(per_seed) and bli_row['n_seeds'] == 2
    assert bli_row['low'] <= bli_row['value'] <= bli_row['high'] and bli_row['t_low'] < bli_row['t_high']
    bleu = rows[('BLEU en-fr', None)]
    assert bleu['per_seed'][0] == bleu['per_seed'][1] == pytest.approx(results['translation']['en-fr']['bleu'])
    assert bleu['t_low'] == pytest.approx(bleu['t_high'])  # equal seeds: no seed spread
    paired = {(r['metric'], r['representation']): r for r in stats['paired']['transformer']}
    row = paired[('BLI en-fr CSLS P@1 non-identical', 'mean_sense')]
    twin = json.loads((first / 'transformer' / 'evaluation_results.json').read_text())['bli']['en-fr']['csls']
    twin_p = sum(twin['embedding']['hits@1'][i] for i in keep) / len(keep)
    assert row['per_seed'] == pytest.approx([p - twin_p for p in per_seed])
    assert 'transformer_wide' not in stats['paired']  # not collected: not compared
    assert '| BLEU en-fr | backpack |' in (tmp_path / 'S' / 'seeds.md').read_text()
    assert 'S (2 seeds)' in (tmp_path / 'seeds.md').read_text()
    seed_statistics.main([*args, '--check'])
    partial = tmp_path / 'S' / 'transformer_seed1' / 'evaluation_results.json'
    partial.rename(partial.with_suffix('.later'))  # seed 1's twin not collected yet: seed 1 waits
    seed_statistics.main(args)
    stats = json.loads((tmp_path / 'S' / 'seeds.json').read_text())
    assert stats['seeds'] == [0] and stats['partial_seeds'] == {'1': ['backpack']}
    assert set(stats['models']) == {'backpack', 'transformer'} and stats['paired']['transformer']
    assert 'seed 1: backpack' in (tmp_path / 'S' / 'seeds.md').read_text()
    partial.with_suffix('.later').rename(partial)
    seed_statistics.main(args)
    results['translation']['en-fr']['hypotheses'][0] += ' x'
    changed.write_text(json.dumps(results))
    with pytest.raises(UserError, match='out of date.*seeds.json'):
        seed_statistics.main([*args, '--check'])


RELEASES = sorted((REPO / 'results' / 'cpu_reference').glob('**/hf/release.json'))


@pytest.mark.parametrize('release', [pytest.param(path, id=str(path.parents[1].relative_to(REPO / 'results')))
                                     for path in RELEASES] or [pytest.param(None, marks=pytest.mark.skip(
                                         reason='no released model is committed yet (results/cpu_reference/**/hf/'
                                                'release.json, written by export_hf.py)'))])
def test_released_models_reproduce_their_committed_val_bits_per_byte(release):
    """Each committed export (<run>/hf), loaded by evaluate.load_model as a user would, scores the check slice of
    its release.json (the first val_en/val_fr documents, their ids, text and bytes) at the bits per byte the
    committed evaluation_results.json's per-document NLLs (perplexity doc_nll) give for those documents: the
    weights in the repository are the ones evaluated, without the data or the checkpoint."""
    import math

    import numpy as np

    import evaluate
    from experiments.perplexity import document_nll
    hf = release.parent
    record = json.loads(release.read_text())
    results = json.loads((hf.parent / 'evaluation_results.json').read_text())
    model, _ = evaluate.load_model(hf)
    tok = evaluate.load_tokenizer(hf)
    assert model.info['checkpoint']['sha256'] == record['weights']['model.safetensors']
    assert record['source_checkpoint']['sha256'] == results['model']['checkpoint']['sha256']
    for lang in ('en', 'fr'):
        checks = record['check_slice'][f'val_{lang}']
        assert [tok.encode_monolingual(text, lang) for text in checks['text']] == checks['ids']
        committed = results['perplexity'][f'val_{lang}'].get('doc_nll')
        assert committed, f"{hf.parent}/evaluation_results.json has no perplexity.val_{lang}.doc_nll: re-evaluate it"
        nll = document_nll(model, [np.array(ids) for ids in checks['ids']], 'cpu', batch_size=16)
        bits = sum(checks['bytes']) * math.log(2)
        assert math.fsum(nll) / bits == pytest.approx(math.fsum(committed[:len(nll)]) / bits, rel=1e-5), lang


def test_two_drivers_keep_each_others_command_records(tmp_path):
    """A second driver (evaluating one run while the first trains the next) adds its records to the file as it
    is then, so neither driver's records overwrite the other's."""
    sys.path.insert(0, str(REPO))
    from tools.cpu_reference import Runner
    first, second = Runner(tmp_path), Runner(tmp_path)
    echo = [sys.executable, '-c', 'pass']
    first('train', 'S/backpack_seed1', echo, tmp_path / 'a.log')
    second('evaluate', 'S/backpack_seed0', echo, tmp_path / 'b.log')
    first('train', 'S/transformer_seed1', echo, tmp_path / 'a.log')
    records = json.loads((tmp_path / 'commands.json').read_text())
    assert [(r['step'], r['model']) for r in records] == [
        ('train', 'S/backpack_seed1'), ('evaluate', 'S/backpack_seed0'), ('train', 'S/transformer_seed1')]
    assert all(r['exit'] == 0 for r in records)
