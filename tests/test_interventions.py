"""experiments/interventions/: the exactness of sense edits on constructed models (the log-linear
prediction, an absent word, untouched weights), the metrics against hand-computed values, the word
lists, and the command line on the tiny models with verify_evaluation.py's checks of its results."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from experiments import interventions as iv
from model import BackpackLM, ModelConfig, StandardTransformerLM
from tokenizer import load_tokenizer

TINY = dict(block_size=24, vocab_size=97, n_layer=2, n_head=2, n_embd=32, n_senses=4, dropout=0.0)
W = 7  # the edited word's token id


def constructed(cls=BackpackLM, seed=0):
    torch.manual_seed(seed)
    return cls(ModelConfig(**TINY)).eval()


def tokens_with_word(seed=1):
    """(3, 20) ids with W at a few positions of each row, and nowhere else."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(10, 97, (3, 20), generator=g)
    idx[0, [2, 9]] = W
    idx[1, [0, 15]] = W
    idx[2, 19] = W
    return idx


@torch.no_grad()
@pytest.mark.parametrize('sense, scale', [(1, 0.0), (3, 0.5), (0, 3.0)])
def test_scaling_a_sense_moves_the_logits_by_exactly_the_predicted_amount(sense, scale):
    """(s - 1) * sum_j alpha_lij [x_j = w] * E C(w)_l, at every position, to fp32 tolerance."""
    model = constructed()
    idx = tokens_with_word()
    mask = idx == W
    base = iv.edited_logits(model, idx, mask, None)
    edited = iv.edited_logits(model, idx, mask, iv.SenseScale({sense: scale}))
    alpha = model.contextualization(idx)[:, sense]                              # (B, T, T)
    EC = model.lm_head.weight @ model.sense_vectors(torch.tensor([W]))[0, sense]  # (V,)
    predicted = (scale - 1) * (alpha * mask[:, None, :]).sum(-1)[..., None] * EC
    assert predicted.abs().max() > 1e-3  # the edit does something measurable
    torch.testing.assert_close(edited - base, predicted, atol=1e-5, rtol=0)
    # before the word's first occurrence nothing moves (row 2: the word is last)
    assert torch.equal(edited[2, :19], base[2, :19])


@torch.no_grad()
def test_absent_word_changes_nothing_and_no_edit_touches_the_weights():
    for cls in (BackpackLM, StandardTransformerLM):
        model = constructed(cls)
        weights = copy.deepcopy(model.state_dict())
        idx = tokens_with_word()
        absent = idx == 5  # token 5 never occurs
        base = iv.edited_logits(model, idx, absent, None)
        edits = [iv.Projection(torch.randn(32), 0.0)]
        if cls is BackpackLM:
            edits.append(iv.SenseScale({l: 0.0 for l in range(4)}))  # every sense of the word zeroed
        for edit in edits:
            assert torch.equal(iv.edited_logits(model, idx, absent, edit), base), (cls.__name__, edit)
            present = iv.edited_logits(model, idx, idx == W, edit)
            assert not torch.allclose(present, base)
            assert torch.equal(present[2, :19], base[2, :19])  # causal: only from the word on
        assert not model.transformer.wte._forward_hooks  # the projection's hook is gone
        after = model.state_dict()
        assert all(torch.equal(weights[k], after[k]) for k in weights)


@torch.no_grad()
def test_topic_senses_added_at_every_position_are_a_fixed_logit_bias():
    """Why topic control samples with a bias: v_l added to sense l of every position adds E sum_l v_l."""
    model = constructed()
    idx = tokens_with_word()
    v = torch.randn(4, 32)
    S = iv.position_senses(model, idx)
    logits, _ = model(idx, return_logits=True, senses=S + v)
    base, _ = model(idx, return_logits=True, senses=S)
    torch.testing.assert_close(logits, base + model.lm_head.weight @ v.sum(0), atol=1e-5, rtol=0)


@torch.no_grad()
def test_the_sense_grid_equals_the_hook():
    """The train grid (from alpha and C, one pass) gives the log-probabilities the edited model gives."""
    model = constructed()
    idx = tokens_with_word(2)
    seqs = [row[:n].tolist() for row, n in zip(idx, (20, 14, 17))]
    masks = [[t == W for t in s] for s in seqs]
    starts = [18, 12, 16]
    scales = (0.0, 0.5, 1.0)
    rows = iv.scored_rows(seqs, masks, starts)
    grid = iv.sense_scale_grid(model, rows, 3, scales, 'cpu', batch_size=2)
    for l in range(4):
        for g, s in enumerate(scales):
            direct = iv.continuation_logprobs(model, rows, 3, iv.SenseScale({l: s}), 'cpu')
            np.testing.assert_allclose(grid[l, g], direct, rtol=1e-5, atol=1e-5)
    assert np.ptp(grid[:, 0] - grid[:, -1]) > 1e-4  # zeroing a sense changes something


@torch.no_grad()
def test_gender_items_share_the_prompt_row_and_score_what_two_rows_score(sample_data_dir):
    tok = load_tokenizer(sample_data_dir)
    torch.manual_seed(0)
    model = BackpackLM(ModelConfig(**dict(TINY, vocab_size=tok.vocab_size, block_size=32))).eval()
    templates = [('L\'{profession} a dit qu\'{pronoun}', 'il', 'elle'), ('The {profession} said that {pronoun}', 'he', 'she')]
    words = ['architecte', 'speech therapist']
    items = iv.GenderItems(tok, 'fr', words, templates)
    assert len(items.rows) < 2 * items.n  # single-token pronouns: one row per (profession, template)
    # reference: each whole sentence scored on its own row; the prompt's terms cancel in the ratio
    seqs, masks = [], []
    for which in (1, 2):
        for w in words:
            for t in templates:
                ids, mask = iv.encode_marked(tok, 'fr', t[0].format(profession=w, pronoun=t[which]), iv.word_pattern([w]))
                seqs.append(ids), masks.append(mask)
    edit = iv.SenseScale({1: 0.0})
    shared = iv.continuation_logprobs(model, items.rows, 2 * items.n, edit, 'cpu')
    whole = iv.continuation_logprobs(model, iv.scored_rows(seqs, masks, [1] * 8), 8, edit, 'cpu')
    np.testing.assert_allclose(shared[:4] - shared[4:], whole[:4] - whole[4:], rtol=1e-5, atol=1e-4)
    assert np.all(shared > whole)  # the continuation alone is more likely than the whole sentence


def test_metrics_by_hand():
    # profession 1: P(m) = mean(.2, .4) = .3, P(f) = .1 -> 3; profession 2: .1 vs .2 -> 2
    ratio, per = iv.bias_ratio(np.log([[0.2, 0.4], [0.1, 0.1]]), np.log([[0.1, 0.1], [0.3, 0.1]]))
    np.testing.assert_allclose(per, [3.0, 2.0])
    assert ratio == pytest.approx(2.5)
    stats = iv.topic_stats(["The farmers' milk", 'nothing here', ''], ['farmers', 'Milk'])
    assert stats == {'share': pytest.approx(1 / 3), 'frequency': pytest.approx(2 / 5), 'n_generations': 3, 'n_words': 5}
    # exact test: 1 of the C(6, 3) = 20 splits is as extreme as the observed one
    test = iv.permutation_greater([3, 4, 5], [0, 1, 2])
    assert test['p_value'] == pytest.approx(1 / 20) and test['difference'] == 3
    assert iv.permutation_greater([0, 1, 2], [3, 4, 5])['p_value'] == pytest.approx(1.0)


def test_holm_by_hand():
    """adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)), p sorted ascending, back in the input order."""
    # sorted: .005 x 4 = .02, .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> max(.06, .04) = .06
    np.testing.assert_allclose(iv.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    # capped at 1, and the running maximum carries the cap to the larger p
    np.testing.assert_allclose(iv.holm([0.6, 0.7, 0.01]), [1.0, 1.0, 0.03], rtol=1e-12)
    np.testing.assert_allclose(iv.holm([0.5, 0.3]), [0.6, 0.6], rtol=1e-12)  # .3 x 2 = .6; max(.6, .5 x 1)
    np.testing.assert_allclose(iv.holm([0.02, 0.02]), [0.04, 0.04], rtol=1e-12)  # ties
    assert iv.holm([0.3]) == [0.3] and iv.holm([]) == []


def test_topic_words_split_in_two_halves_by_family():
    # families: farm farmers farming (first 4 letters), fish, sea seas ('sea' begins 'seas'), cod, air; each to
    # the smaller half: farm* -> steer (3-0), fish -> counted (3-1), sea* -> counted (3-3), cod -> steer, air
    steer, counted = iv.split_topic_words(['farm', 'fish', 'farmers', 'sea', 'Seas', 'cod', 'farming', 'air'])
    assert steer == ['farm', 'farmers', 'farming', 'cod'] and counted == ['fish', 'sea', 'seas', 'air']
    # joined transitively: 'ab' begins both 'abcd' and 'abce', which share only 3 letters
    assert iv.split_topic_words(['abcd', 'x', 'abce', 'ab']) == (['abcd', 'abce', 'ab'], ['x'])
    topics, _ = iv.load_topic_data(iv.DATA_DIR)
    for topic, by_lang in topics.items():
        for lang, words in by_lang.items():
            steer, counted = iv.split_topic_words(words)
            assert sorted(steer + counted) == sorted(words) and len(set(words)) == len(words), (topic, lang)
            assert min(len(steer), len(counted)) >= 12 and abs(len(steer) - len(counted)) <= 2, (topic, lang)
            assert not {w[:iv.STEM_PREFIX] for w in steer} & {w[:iv.STEM_PREFIX] for w in counted}, (topic, lang)


def test_intervention_lines_print_false_friends_first_as_the_label_says():
    import verify_evaluation
    tests = {'sense_cosine': {'cognates_mean': 0.9, 'false_friends_mean': 0.1, 'p_value': 0.01, 'p_holm': 0.04}}
    line, = verify_evaluation.intervention_lines({'false_friends': {'tests': {'all': tests}}})
    assert line.startswith('false friends vs cognates (all): sense_cosine 0.100 vs 0.900, p 0.01 (Holm 0.04)'), line


def test_word_tokens_found_by_offsets(sample_data_dir):
    tok = load_tokenizer(sample_data_dir)
    pattern = iv.word_pattern(['architecte', 'speech therapist', 'nurse'])
    for text, lang, word in [("L'architecte a dit qu'il", 'fr', 'architecte'),
                             ('The speech  therapist said that he', 'en', 'speech  therapist'),
                             ('The Nurse said that nurses', 'en', 'Nurse')]:
        ids, mask = iv.encode_marked(tok, lang, text, pattern)
        assert ids[0] == tok.lang_id(lang) and not mask[0]
        assert tok.decode([i for i, m in zip(ids, mask) if m]).strip() == word  # 'nurses' is another word


def test_word_lists():
    templates, words = iv.load_gender_data(iv.DATA_DIR)
    for lang in ('en', 'fr'):
        assert len(templates[lang]) >= 8 and min(len(words[lang][s]) for s in ('train', 'test')) >= 15
        assert not set(words[lang]['train']) & set(words[lang]['test'])
    # French: after the elided article, so that nothing marks the profession's gender
    assert all(t.startswith("L'{profession} ") for t, _, _ in templates['fr'])
    assert all(w[0] in 'aeéèêiîouh' for s in ('train', 'test') for w in words['fr'][s])
    pairs = iv.load_pairs(iv.DATA_DIR)
    groups = {g: {(en, fr) for en, fr, gg in pairs if gg == g} for g in ('false_friends', 'cognates')}
    assert min(map(len, groups.values())) >= 40 and not groups['false_friends'] & groups['cognates']
    assert all(en != fr for en, fr, _ in pairs)
    topics, prompts = iv.load_topic_data(iv.DATA_DIR)
    assert {'agriculture', 'fisheries', 'environment', 'budget'} <= set(topics)
    assert all(set(t) == {'en', 'fr'} for t in topics.values()) and all(len(prompts[l]) >= 3 for l in ('en', 'fr'))
    assert all(len(words) >= 24 and all(w == w.lower() for w in words) for t in topics.values() for words in t.values())
    readme = (iv.DATA_DIR / 'README.md').read_text(encoding='utf-8')
    assert all(f.name in readme for f in iv.DATA_DIR.glob('*.tsv'))


def run(*command):
    """python COMMAND in the repository: a script (or -m and a module) and its arguments."""
    return subprocess.run([sys.executable, *map(str, command)], cwd=REPO, capture_output=True, text=True, timeout=600)


SMALL = ['--samples', 1, '--max_new_tokens', 6, '--strengths', 1, 8, '--cost_documents', 20]


def test_cli_on_the_tiny_backpack_and_verify(tiny_backpack_dir, tmp_path):
    out = tmp_path / 'interventions.json'
    result = run('-m', 'experiments.interventions', '--out_dir', tiny_backpack_dir, '--output', out, *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '## Sense interventions' in result.stdout
    r = json.loads(out.read_text())
    section = r['interventions']
    assert r['settings']['interventions'] == ['gender', 'topic', 'false_friends']
    g = section['gender']
    for lang in ('en', 'fr'):
        e = g['languages'][lang]
        assert set(e['methods']) == {'senses', 'projection'} and e['before']['test'] >= 1
        m = e['methods']['senses']
        assert 0 <= m['sense'] < 4 and m['scale'] in iv.SCALES and m['after'] >= 1
        assert len(m['train_ratio']) == 4 and min(map(min, m['train_ratio'])) == pytest.approx(m['train_after'], rel=1e-4)
        assert len(e['per_profession']['test']) == e['n_test']
    assert set(g['transfer_en_to_fr']['methods']) == {'senses', 'projection'}
    t = section['topic']['languages']['en']
    curves = t['methods']['senses']
    assert curves and all([p['strength'] for p in c] == [1.0, 8.0] for c in curves.values())
    # steered with one half, counted with the other, for every method and the unedited model
    for topic, words in t['words'].items():
        assert (words['steer_half'], words['counted_half']) == iv.split_topic_words(words['words'])
        assert set(words['steering_words']) <= set(words['steer_half'])
        assert t['unedited']['topics'][topic] == iv.topic_stats(t['unedited']['generations'], words['counted_half'])
        for method in ('senses', 'embedding'):
            for p in t['methods'][method].get(topic, []):
                again = iv.topic_stats(p['generations'], words['counted_half'])
                assert len(p['generations']) == 5 and (p['share'], p['frequency']) == (again['share'], again['frequency'])
    f = section['false_friends']
    assert set(f['tests']['all']) == {'embedding_cosine', 'shared_senses', 'sense_cosine', 'topk_shared'}
    family = [(s, n) for s in ('all', 'controlled') if 'skipped' not in f['tests'][s] for n in f['tests'][s]]
    assert f['holm_family'] == [f'{s}.{n}' for s, n in family] and len(family) in (4, 8)
    assert [f['tests'][s][n]['p_holm'] for s, n in family] == iv.holm([f['tests'][s][n]['p_value'] for s, n in family])
    assert 0 <= f['tests']['all']['sense_cosine']['p_value'] <= f['tests']['all']['sense_cosine']['p_holm'] <= 1
    # no absolute path: the run by its name, the inputs relative to the repository
    assert r['model']['out_dir'] == 'tiny_backpack' and section['settings']['data_dir'] == 'data/interventions'
    assert str(tiny_backpack_dir) not in out.read_text() and str(REPO) not in out.read_text()
    assert sorted(r['inputs']) == sorted(section['settings']['files']) and 'data/interventions/topics.tsv' in r['inputs']
    ok = run('verify_evaluation.py', '--out_dir', tiny_backpack_dir, '--interventions_file', out)
    assert ok.returncode == 0 and 'gender bias ratio EN' in ok.stdout, ok.stdout + ok.stderr

    # verify catches numbers out of range, a missing language and an edit that is not the train optimum
    bad = copy.deepcopy(r)
    bad['interventions']['gender']['languages']['en']['methods']['senses']['after'] = 0.5
    del bad['interventions']['topic']['languages']['fr']
    grid = bad['interventions']['gender']['languages']['fr']['methods']['projection']['train_ratio']
    grid[iv.SCALES.index(bad['interventions']['gender']['languages']['fr']['methods']['projection']['keep'])] += 1
    bad['interventions']['false_friends']['tests']['all']['embedding_cosine']['p_value'] = 1.5
    (tmp_path / 'bad.json').write_text(json.dumps(bad))
    import verify_evaluation
    c, _, _ = verify_evaluation.verify_interventions_file(str(tmp_path / 'bad.json'), str(tiny_backpack_dir))
    failures = '\n'.join(c.failures)
    for message in ('interventions.gender.en.senses.after = 0.5', 'interventions.topic: no fr results',
                    'interventions.gender.fr.projection: the chosen edit is not the best',
                    'interventions.false_friends.all.embedding_cosine.p_value = 1.5',
                    'interventions.false_friends.all.embedding_cosine.p_value (from per_pair)'):
        assert message in failures, failures

    # each recomputation catches a number that its stored outputs do not give, naming the field
    def corrupted(change):
        bad = copy.deepcopy(r)
        change(bad['interventions'])
        (tmp_path / 'bad.json').write_text(json.dumps(bad))
        c, _, _ = verify_evaluation.verify_interventions_file(str(tmp_path / 'bad.json'), str(tiny_backpack_dir))
        return '\n'.join(c.failures)

    topic = next(iter(curves))
    words, all_tests = t['words'][topic], f['tests']['all']
    lang, method = next((lang, method) for lang, e in g['languages'].items() for method, m in e['methods'].items()
                        if m['cost']['documents_scored'])  # an edit with val documents scored

    def bump(obj, key, by):
        obj[key] += by

    cases = [
        (lambda s: bump(s['false_friends']['tests']['all']['sense_cosine'], 'p_holm', 1e-3),
         'interventions.false_friends.all.sense_cosine.p_holm (Holm over the'),
        (lambda s: s['false_friends']['tests']['all']['topk_shared'].update(p_holm=all_tests['topk_shared']['p_value'] / 2),
         'interventions.false_friends.all.topk_shared.p_holm = '),
        (lambda s: bump(s['false_friends']['tests']['all']['sense_cosine'], 'false_friends_mean', 0.01),
         'interventions.false_friends.all.sense_cosine.false_friends_mean (from per_pair)'),
        (lambda s: bump(s['false_friends']['per_pair'][0], 'shared_senses', 1),
         'interventions.false_friends.per_pair[0] (' + f['per_pair'][0]['en']),
        (lambda s: s['false_friends'].update(holm_family=s['false_friends']['holm_family'][:1]),
         'interventions.false_friends.holm_family = '),
        (lambda s: s['topic']['languages']['en']['words'][topic]['steering_words'].append(words['counted_half'][0]),
         f'interventions.topic.en.words.{topic}.steering_words: counted words'),
        (lambda s: s['topic']['languages']['en']['words'][topic]['steer_half'].append(words['counted_half'][0]),
         f'interventions.topic.en.words.{topic}: steer_half'),
        (lambda s: bump(s['topic']['languages']['en']['unedited']['topics'][topic], 'share', 0.05),
         f'interventions.topic.en.unedited.{topic}.share: recorded'),
        (lambda s: s['topic']['languages']['en']['methods']['senses'][topic][0]['generations'].__setitem__(
            0, ' '.join(words['counted_half'])), f'interventions.topic.en.senses.{topic}.1.0.frequency: recorded'),
        (lambda s: s['topic']['languages']['en']['methods']['embedding'][topic][1]['generations'].pop(),
         f'interventions.topic.en.embedding.{topic}.8.0.generations: 4 stored'),
        (lambda s: bump(s['gender']['languages']['en']['before'], 'test', 0.01),
         'interventions.gender.en.before.test: recorded'),
        (lambda s: bump(s['gender']['languages']['fr']['methods']['projection'], 'after', 0.01),
         'interventions.gender.fr.projection.after: recorded'),
        (lambda s: bump(s['gender']['languages'][lang]['methods'][method]['cost'], 'nll_after', 0.01),
         f'interventions.gender.{lang}.{method}.cost.bpb_after: recorded')]
    for change, message in cases:
        failures = corrupted(change)
        assert message in failures, (message, failures)


def test_cli_on_the_transformer_twin_runs_the_baselines(tiny_transformer_dir, tmp_path, capsys):
    out = tmp_path / 'twin.json'
    iv.main(['--out_dir', str(tiny_transformer_dir), '--output', str(out), *map(str, SMALL)])
    section = json.loads(out.read_text())['interventions']
    assert set(section['gender']['languages']['fr']['methods']) == {'projection'}
    assert section['topic']['methods'] == ['embedding'] and set(section['topic']['languages']['en']['methods']) == {'embedding'}
    assert set(section['false_friends']['tests']['all']) == {'embedding_cosine'}
    import verify_evaluation
    c, lines, _ = verify_evaluation.verify_interventions_file(str(out), str(tiny_transformer_dir))
    assert not c.failures and c.passed > 50 and any('projection' in line for line in lines)


def test_missing_word_list_is_one_line(tiny_transformer_dir, tmp_path, capsys):
    from errors import run_main
    with pytest.raises(SystemExit) as exit_:
        run_main(iv.main, ['--out_dir', str(tiny_transformer_dir), '--experiment', 'gender', '--data_dir', str(tmp_path),
                           '--output', str(tmp_path / 'x.json')])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and err.count('\n') == 0
    assert err.startswith('error: ') and 'gender_templates.tsv not found' in err
    assert not (tmp_path / 'x.json').exists()
