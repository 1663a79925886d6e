"""Translation: exact decoding behaviour on a handcrafted bigram model, then generate_translation and
evaluate_translation_accuracy on the tiny trained fixture model."""
import math

import pytest
import torch
from torch.nn import functional as F

from checkpoint import load_model
from experiments.translation import (beam_search, build_prompts, evaluate_translation_accuracy, generate_ids,
                                     generate_translation)
from model import ModelConfig, StandardTransformerLM
from tokenizer import load_tokenizer

# ----------------------------------------------------------------------------------------------------
# a bigram "language model" with chosen next-token probabilities

EOS, EN, FR, A, B, C, D, X = range(8)
NAMES = {A: 'A', B: 'B', C: 'C', D: 'D', X: 'X'}
NEXT = {  # p(next | previous); the rest of each row's mass is spread over the other ids
    FR: {A: 0.6, B: 0.4 - 6e-3},
    A: {C: 0.36, D: 0.34, EOS: 0.30 - 5e-3},
    B: {EOS: 0.95},
    C: {EN: 0.9},  # a translation that ends with a language tag
    D: {EOS: 0.9},
}


class BigramLM(StandardTransformerLM):
    """logits of position i = log p(. | token i): the hidden state is the one-hot token, E holds log p."""

    def __init__(self):
        super().__init__(ModelConfig(block_size=16, vocab_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.0))
        logp = torch.empty(8, 8)
        for prev in range(8):
            row = NEXT.get(prev, {})
            rest = (1 - sum(row.values())) / (8 - len(row))
            logp[prev] = torch.tensor([math.log(row.get(v, rest)) for v in range(8)])
        with torch.no_grad():
            self.lm_head.weight.copy_(logp.t())  # logits = onehot(prev) @ W^T, W[v, prev] = log p(v | prev)
        self.eval()

    def _final_hidden(self, idx, cache=None, sense_table=True):
        return F.one_hot(idx, 8).float()


class PaddedBigramLM(BigramLM):
    """The bigram model with one more embedding row that is no token (as backpack-gpt2's padding):
    its logit, 5, beats every log-probability, so the full distribution always prefers it."""

    def __init__(self):
        super().__init__()
        logp = self.lm_head.weight.detach().t()
        self.config = ModelConfig(block_size=16, vocab_size=9, tokenizer_vocab_size=8, n_layer=1, n_head=1,
                                  n_embd=8, dropout=0.0)
        E = torch.cat([logp.t(), torch.full((1, 8), 5.0)])
        self.lm_head.weight = self.transformer.wte.weight = torch.nn.Parameter(E)


class LetterTokenizer:
    """Each word of a text is the id X; ids decode to letters."""
    special_ids, eos_id = {EOS, EN, FR}, EOS

    def lang_id(self, lang):
        return {'en': EN, 'fr': FR}[lang]

    def encode_batch(self, texts):
        return [[X] * len(t.split()) for t in texts]

    def decode(self, ids):
        return ' '.join(NAMES[i] for i in ids)


def logprob(model, prompt, generated):
    """Brute force: sum of log p(generated[t] | prompt + generated[:t]) from one full forward."""
    ids = torch.tensor([prompt + generated])
    logits, _ = model(ids, return_logits=True)
    logp = F.log_softmax(logits[0].double(), dim=-1)
    return sum(logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(generated))


PROMPT = [EN, X, FR]


def test_greedy_stops_at_a_tag_and_beam_search_finds_the_better_hypothesis():
    model = BigramLM()
    greedy = generate_ids(model, [PROMPT], [10], {EOS, EN, FR}, 'cpu')[0]
    assert greedy == [A, C, EN]  # 0.6 * 0.36 * 0.9, stopped by the <en> tag
    assert beam_search(model, torch.tensor([PROMPT]), 1, 10, {EOS, EN, FR})[0] == greedy
    for length_penalty in (0.0, 1.0):
        beam = beam_search(model, torch.tensor([PROMPT]), 3, 10, {EOS, EN, FR}, length_penalty)[0]
        assert beam == [B, EOS]  # 0.4 * 0.95 > 0.6 * 0.36 * 0.9
    assert logprob(model, PROMPT, [B, EOS]) == pytest.approx(math.log((0.4 - 6e-3) * 0.95))
    assert logprob(model, PROMPT, [B, EOS]) > logprob(model, PROMPT, greedy)


def test_padding_rows_are_never_decoded():
    """Greedy, sampling and beam search (cached and not) give what the unpadded model gives."""
    model = PaddedBigramLM()
    assert model(torch.tensor([PROMPT]))[0][0, -1].argmax() == 8  # forward keeps the padding row
    assert generate_ids(model, [PROMPT], [10], {EOS, EN, FR}, 'cpu')[0] == [A, C, EN]
    torch.manual_seed(0)
    assert all(8 not in ids for ids in generate_ids(model, [PROMPT] * 50, [10] * 50, {EOS}, 'cpu', greedy=False))
    for use_cache in (True, False):
        assert beam_search(model, torch.tensor([PROMPT]), 3, 10, {EOS, EN, FR}, use_cache=use_cache)[0] == [B, EOS]


def test_generate_translation_decodes_the_tokens_before_the_stop():
    model, tok = BigramLM(), LetterTokenizer()
    assert generate_translation(model, tok, 'x', 'cpu') == 'A C'
    assert generate_translation(model, tok, ['x', 'x y'], 'cpu', beam_size=2) == ['B', 'B']
    assert generate_translation(model, tok, ['x'], 'cpu', max_new_tokens=1) == ['A']  # no stop within the limit
    torch.manual_seed(0)
    samples = generate_translation(model, tok, ['x'] * 200, 'cpu', greedy=False)
    assert {'A C', 'B'} <= set(samples)  # sampling visits both branches
    assert generate_translation(model, tok, ['x'] * 20, 'cpu', greedy=False, top_k=1) == ['A C'] * 20
    with pytest.raises(ValueError, match='empty source'):
        generate_translation(model, tok, ['x', ''], 'cpu')
    with pytest.raises(ValueError, match='greedy=True'):
        generate_translation(model, tok, 'x', 'cpu', greedy=False, beam_size=2)


def test_prompt_lengths_fit_the_context(capsys):
    tok = LetterTokenizer()  # block_size 16: sources keep 16 // 2 - 2 = 6 tokens
    prompts, limits, n_truncated = build_prompts(tok, ['x', 'x ' * 6, 'x ' * 10], 'en', 'fr', 16)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith('warning: 1 of 3 en source(s)') and '6 tokens' in warning[0]
    assert [len(p) for p in prompts] == [3, 8, 8]
    assert prompts[2] == [EN] + [X] * 6 + [FR]
    assert limits == [min(2 * 1 + 10, 13), 8, 8]  # 2 * source + 10, capped at block_size - prompt
    assert n_truncated == 1
    assert build_prompts(tok, ['x'], 'fr', 'en', 16, max_new_tokens=50)[1] == [13]


# ----------------------------------------------------------------------------------------------------
# the tiny trained model

@pytest.fixture(scope='module')
def tiny(tiny_backpack_dir):
    model, _ = load_model(tiny_backpack_dir, 'cpu')
    tok = load_tokenizer(tiny_backpack_dir)
    english = (tok.data_dir / 'test.en').read_text(encoding='utf-8').splitlines()
    return model, tok, english


def test_batched_translation_equals_one_by_one(tiny):
    model, tok, english = tiny
    texts = english[:6] + ['Thank you.', 'Thank you.', 'Yes.', 'No.']  # several groups of equal length
    batched = generate_translation(model, tok, texts, 'cpu', batch_size=4)
    assert isinstance(batched, list) and len(batched) == len(texts)
    single = [generate_translation(model, tok, t, 'cpu') for t in texts]
    assert all(isinstance(s, str) for s in single)
    assert batched == single
    assert generate_translation(model, tok, texts, 'cpu', src='fr', tgt='en', batch_size=3) == \
        [generate_translation(model, tok, t, 'cpu', src='fr', tgt='en') for t in texts]


def test_tiny_model_outputs_stop_before_any_special_id(tiny):
    model, tok, english = tiny
    prompts, limits, _ = build_prompts(tok, english[:16], 'en', 'fr', model.config.block_size)
    for ids, limit in zip(generate_ids(model, prompts, limits, tok.special_ids, 'cpu'), limits):
        assert 1 <= len(ids) <= limit
        assert not tok.special_ids & set(ids[:-1])  # a special id can only be the (dropped) last one


def test_beam_search_on_the_tiny_model(tiny):
    """beam_size 1 is greedy decoding; beam_size 3 ranked by the plain sum of log-probs
    (length_penalty 0) returns a hypothesis at least as probable as the greedy one."""
    model, tok, english = tiny
    prompts, limits, _ = build_prompts(tok, english[:4] + ['Thank you.'], 'en', 'fr', model.config.block_size)
    greedy = generate_ids(model, prompts, limits, tok.special_ids, 'cpu')
    for prompt, limit, g in zip(prompts, limits, greedy):
        assert beam_search(model, torch.tensor([prompt]), 1, limit, tok.special_ids)[0] == g
        beam = beam_search(model, torch.tensor([prompt]), 3, limit, tok.special_ids, length_penalty=0.0)[0]
        assert logprob(model, prompt, beam) >= logprob(model, prompt, g) - 1e-5
    assert generate_translation(model, tok, english[:3], 'cpu', beam_size=1) == \
        generate_translation(model, tok, english[:3], 'cpu')


def test_cached_beam_search_equals_the_uncached_one(tiny):
    """The KV cache follows its beams: a batch of equal-length prompts (so beams are dropped, kept
    and repeated across rows, and finished prompts leave the batch) gives the same hypotheses as
    feeding every beam's whole prefix."""
    model, tok, english = tiny
    prompts, limits, _ = build_prompts(tok, english[:40], 'en', 'fr', model.config.block_size, max_new_tokens=12)
    length = max({len(p) for p in prompts}, key=[len(p) for p in prompts].count)
    batch = torch.tensor([p for p in prompts if len(p) == length][:4])
    assert len(batch) >= 2
    for beam_size, length_penalty in ((3, 1.0), (4, 0.0)):
        cached = beam_search(model, batch, beam_size, 12, tok.special_ids, length_penalty)
        assert cached == beam_search(model, batch, beam_size, 12, tok.special_ids, length_penalty, use_cache=False)
        assert len({tuple(c) for c in cached}) >= 2


def test_evaluate_translation_accuracy_on_the_test_split(tiny):
    model, tok, _ = tiny
    results = evaluate_translation_accuracy(model, tok, 'cpu', max_samples=8, n_examples=3)
    assert set(results) == {'en-fr', 'fr-en'}
    for direction, r in results.items():
        assert r['n'] == 8
        for key in ('bleu', 'chrf'):
            assert 0 <= r[key] <= 100 and r[f'{key}_signature'].startswith('nrefs:1')
        s = r['sentence_bleu']
        assert 0 <= s['min'] <= s['median'] <= s['max'] <= 100 and s['min'] <= s['mean'] <= s['max']
        for key in ('exact_match', 'word_f1', 'char_accuracy'):
            assert 0 <= r[key] <= 1
        assert 0 <= r['truncated'] <= 8 and r['decoding'] == 'greedy'
        assert r['src_file'].endswith('test.' + direction[:2]) and r['ref_file'].endswith('test.' + direction[3:])
        assert len(r['examples']) == 3 and all(set(e) == {'src', 'ref', 'hyp'} for e in r['examples'])
        assert len(r['hypotheses']) == 8 and r['hypotheses'][:3] == [e['hyp'] for e in r['examples']]
        for key in ('bleu', 'chrf'):  # 95 % bootstrap interval over the 8 sentences, around the corpus score
            ci = r[f'{key}_ci']
            assert ci['value'] == pytest.approx(r[key], abs=1e-9) and ci['low'] <= r[key] + 1e-9 <= ci['high'] + 2e-9
            assert (ci['n'], ci['n_resamples']) == (8, 1000)
    assert evaluate_translation_accuracy(model, tok, 'cpu', max_samples=8, n_examples=3) == results  # deterministic
    with pytest.raises(ValueError, match='direction'):
        evaluate_translation_accuracy(model, tok, 'cpu', max_samples=2, directions=('en-de',))
    try:
        model.train()
        with pytest.raises(ValueError, match='eval'):
            evaluate_translation_accuracy(model, tok, 'cpu', max_samples=2)
    finally:
        model.eval()


def test_evaluate_translation_accuracy_on_a_custom_file_pair(tiny, tmp_path):
    model, tok, _ = tiny
    en, fr = tmp_path / 'pair.en', tmp_path / 'pair.fr'
    en.write_text('Thank you.\nI agree.\nThe debate is closed.\n', encoding='utf-8')
    fr.write_text('Merci.\nJe suis d\'accord.\nLe débat est clos.\n', encoding='utf-8')
    results = evaluate_translation_accuracy(model, tok, 'cpu', src_path=en, tgt_path=fr, directions=('fr-en',),
                                            beam_size=2)
    assert list(results) == ['fr-en']
    r = results['fr-en']
    assert r['n'] == 3 and r['src_file'] == str(fr) and r['ref_file'] == str(en) and 'beam' in r['decoding']
    assert [e['ref'] for e in r['examples']] == ['Thank you.', 'I agree.', 'The debate is closed.']
    fr.write_text('Merci.\nJe suis d\'accord.\n', encoding='utf-8')
    with pytest.raises(ValueError, match='differ in length'):
        evaluate_translation_accuracy(model, tok, 'cpu', src_path=en, tgt_path=fr)
    with pytest.raises(FileNotFoundError, match='missing.fr'):
        evaluate_translation_accuracy(model, tok, 'cpu', src_path=en, tgt_path=tmp_path / 'missing.fr')
    with pytest.raises(ValueError, match='both'):
        evaluate_translation_accuracy(model, tok, 'cpu', src_path=en)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """On this 2-vCPU VM libgomp's spin-waiting makes the tiny models' many small ops ~20x slower with
    2 threads (also used by tests/test_sentence_perplexity.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
