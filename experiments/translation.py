"""
Translation with a prompted language model, and its evaluation on aligned test files.

The models are trained on documents `<src> SOURCE <tgt> TARGET EOS`, so a translation is the
continuation of the prompt `<src> SOURCE <tgt>` up to (not including) the first EOS or language tag.

Lengths. Everything stays inside the model's context of block_size tokens (learned absolute positions):
  - the source text keeps at most block_size // 2 - 2 tokens (its first ones), so the prompt takes at
    most half of the context; longer sources are truncated and counted;
  - max_new_tokens (including the stop token) defaults to 2 * source_tokens + 10 and is always capped
    at block_size - prompt_tokens.
Decoding.
  - greedy (default): argmax at every step; model.generate with its KV cache, in batches of prompts of
    equal token length (no padding, so every row is computed exactly as it would be alone);
  - greedy=False: sampling from softmax(logits / temperature) restricted to the top_k (torch's RNG);
  - beam_size > 1: beam search over sum of token log-probs. A hypothesis ends when it produces EOS or
    a tag (that token's log-prob included) or reaches max_new_tokens; finished hypotheses are ranked by
    sum_logprob / n_tokens ** length_penalty (n_tokens generated, the stop token included;
    length_penalty 1.0 = mean log-prob per token, 0.0 = plain sum). As in Hugging Face's beam search,
    each step expands every live beam and keeps the 2 * beam_size best continuations: those ending with
    a stop token are finished (only when among the best beam_size), the best beam_size others live on;
    a sentence is done once it has beam_size finished hypotheses and no live beam scores higher than
    the worst of them at its current length (exact for length_penalty 0, a heuristic otherwise). With the
    KV cache: each step feeds the last token of every live beam, the cache rows following their beams.
Only token ids are candidates (model.step and the logits' first model.n_tokens columns), never the
padding rows of an embedding larger than the tokenizer (backpack-gpt2's).
The output is the decoded text of the generated tokens before the stop token, stripped of surrounding
whitespace.

    generate_translation(model, tok, "Good morning.", 'cpu')                      # -> str
    generate_translation(model, tok, ["Yes.", "No."], 'cpu', src='en', tgt='fr', beam_size=4)   # -> list
    evaluate_translation_accuracy(model, tok, 'cpu', max_samples=100)
"""
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from errors import warn
from experiments.eval_data import read_parallel
from experiments.metrics import translation_intervals, translation_scores
from experiments.sentence import require_eval
from generation import KVCache


def evaluate_translation_accuracy(model, tokenizer, device, src_path=None, tgt_path=None, max_samples=None,
                                  directions=('en-fr', 'fr-en'), beam_size=1, batch_size=32, n_examples=5):
    """Translate an aligned English/French file pair in each direction and score it against the other side.

    src_path is the English file and tgt_path the French one (line i translates line i); default the
    held-out test.en / test.fr of tokenizer.data_dir. The first max_samples pairs (None = all).
    Decoding is greedy (beam_size 1) or beam search, so the result is deterministic.
    Returns {direction: {metrics.translation_scores(hyps, refs) (corpus 'bleu' and 'chrf' with their
    sacreBLEU signatures, 'sentence_bleu' mean/median/min/max, 'exact_match', 'word_f1',
    'char_accuracy', 'n'), 'bleu_ci', 'chrf_ci' (metrics.bootstrap_ci over the test sentences: 1,000
    resamples, seed 0, 95 %), 'hypotheses' (every output), 'sources' and 'references' (the texts translated
    and scored against, so that verify_evaluation.py recomputes every score from the results), 'copy_baseline' (corpus BLEU and chrF of copying the source unchanged: what
    shared names, numbers and cognates earn without translating), 'n_empty' (empty translations),
    'src_file', 'ref_file', 'truncated' (sources cut to fit the context),
    'decoding', 'examples' (the first n_examples as {'src', 'ref', 'hyp'})}}."""
    pairs = [parse_direction(direction) for direction in directions]
    if (src_path is None) != (tgt_path is None):
        raise ValueError("give both src_path (the English file) and tgt_path (the French file), or neither")
    if src_path is None:
        if tokenizer.data_dir is None:
            raise ValueError("the tokenizer has no data_dir: pass src_path (English) and tgt_path (French)")
        src_path, tgt_path = Path(tokenizer.data_dir) / 'test.en', Path(tokenizer.data_dir) / 'test.fr'
    files = {'en': str(src_path), 'fr': str(tgt_path)}
    en, fr = read_parallel(files['en'], files['fr'], limit=max_samples)
    texts = {'en': en, 'fr': fr}
    results = {}
    for direction, (src, tgt) in zip(directions, pairs):
        with tqdm(total=len(en), desc=f'translate {direction}', leave=False, disable=None) as bar:  # a terminal only
            hyps, n_truncated = translate(model, tokenizer, texts[src], device, src, tgt, greedy=True,
                                          beam_size=beam_size, batch_size=batch_size, progress=bar.update)
        copy = translation_scores(texts[src], texts[tgt])  # the source itself as the "translation"
        results[direction] = {
            **translation_scores(hyps, texts[tgt]),
            **{f'{name}_ci': ci for name, ci in translation_intervals(hyps, texts[tgt]).items()},
            'copy_baseline': {'bleu': copy['bleu'], 'chrf': copy['chrf']},
            'hypotheses': hyps,  # all of them: a paired comparison of two models resamples the same sentences
            # and the texts they are scored against, so that every score is recomputed from the results alone
            'sources': texts[src], 'references': texts[tgt],
            'n_empty': sum(not h.strip() for h in hyps),
            'src_file': files[src], 'ref_file': files[tgt], 'truncated': n_truncated,
            'decoding': 'greedy' if beam_size == 1 else f'beam search, beam_size {beam_size}, length_penalty 1.0',
            'examples': [{'src': s, 'ref': r, 'hyp': h}
                         for s, r, h in zip(texts[src][:n_examples], texts[tgt][:n_examples], hyps[:n_examples])],
        }
    return results


def parse_direction(direction):
    src, sep, tgt = direction.partition('-')
    if not sep or {src, tgt} != {'en', 'fr'}:
        raise ValueError(f"translation direction must be 'en-fr' or 'fr-en', got {direction!r}")
    return src, tgt


def generate_translation(model, tokenizer, text, device, greedy=True, src='en', tgt='fr', beam_size=1,
                         max_new_tokens=None, temperature=1.0, top_k=None, batch_size=32, length_penalty=1.0):
    """The translation of `text` (a str -> a str; a list of str -> a list, same order) from `src` into
    `tgt`, decoded as described in the module docstring. An empty source text raises ValueError."""
    single = isinstance(text, str)
    hyps, _ = translate(model, tokenizer, [text] if single else list(text), device, src, tgt, greedy=greedy,
                        beam_size=beam_size, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, batch_size=batch_size, length_penalty=length_penalty)
    return hyps[0] if single else hyps


def translate(model, tokenizer, texts, device, src, tgt, greedy=True, beam_size=1, max_new_tokens=None,
              temperature=1.0, top_k=None, batch_size=32, length_penalty=1.0, progress=None):
    """(translations of texts, number of sources truncated to fit the context)."""
    require_eval(model)
    prompts, limits, n_truncated = build_prompts(tokenizer, texts, src, tgt, model.config.block_size, max_new_tokens)
    outputs = generate_ids(model, prompts, limits, tokenizer.special_ids, device, greedy=greedy,
                           beam_size=beam_size, temperature=temperature, top_k=top_k,
                           length_penalty=length_penalty, batch_size=batch_size, progress=progress)
    stops = tokenizer.special_ids
    texts = [tokenizer.decode(ids[:-1] if ids and ids[-1] in stops else ids).strip() for ids in outputs]
    return texts, n_truncated


def build_prompts(tokenizer, texts, src, tgt, block_size, max_new_tokens=None):
    """(prompts `<src> text <tgt>`, max new tokens of each, number of truncated sources): the
    length rules of the module docstring."""
    max_src = block_size // 2 - 2
    if max_src < 1:
        raise ValueError(f"block_size {block_size} leaves no room for a source text")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompts, limits, n_truncated = [], [], 0
    for i, ids in enumerate(tokenizer.encode_batch(texts)):
        if not texts[i].strip() or not ids:
            raise ValueError(f"cannot translate an empty source text (item {i}: {texts[i]!r})")
        n_truncated += len(ids) > max_src
        ids = ids[:max_src]
        prompt = [tokenizer.lang_id(src)] + ids + [tokenizer.lang_id(tgt)]
        wanted = 2 * len(ids) + 10 if max_new_tokens is None else max_new_tokens
        prompts.append(prompt)
        limits.append(min(wanted, block_size - len(prompt)))
    if n_truncated:
        warn(f"{n_truncated} of {len(texts)} {src} source(s) are longer than block_size // 2 - 2 = {max_src} tokens: "
             f"only their first {max_src} tokens are translated")
    return prompts, limits, n_truncated


def generate_ids(model, prompts, limits, stop_ids, device, greedy=True, beam_size=1, temperature=1.0,
                 top_k=None, length_penalty=1.0, batch_size=32, progress=None):
    """For each prompt (a list of ids), the generated ids: at most limits[i] of them, ending with the
    first stop id when one was produced. Prompts of equal length (and limit) are generated together,
    batch_size prompts at a time; progress(n) is called after every n prompts done."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if beam_size > 1 and not greedy:
        raise ValueError("beam search is deterministic: use greedy=True with beam_size > 1 (or beam_size=1 to sample)")
    groups = {}
    for i, (prompt, limit) in enumerate(zip(prompts, limits)):
        groups.setdefault((len(prompt), limit), []).append(i)
    outputs = [None] * len(prompts)
    for (length, limit), members in sorted(groups.items()):
        for b in range(0, len(members), batch_size):
            rows = members[b:b + batch_size]
            idx = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
            if beam_size > 1:
                generated = beam_search(model, idx, beam_size, limit, stop_ids, length_penalty)
            else:
                out = model.generate(idx, limit, temperature=temperature, top_k=top_k, greedy=greedy,
                                     stop_ids=stop_ids)
                generated = [cut_at_stop(row, stop_ids) for row in out[:, length:].tolist()]
            for i, ids in zip(rows, generated):
                outputs[i] = ids
            if progress is not None:
                progress(len(rows))
    return outputs


def cut_at_stop(ids, stop_ids):
    """ids up to and including the first stop id (all of them when there is none)."""
    for n, i in enumerate(ids):
        if i in stop_ids:
            return ids[:n + 1]
    return ids


@torch.no_grad()
def beam_search(model, prompts, beam_size, max_new_tokens, stop_ids, length_penalty=1.0, use_cache=True):
    """Beam search (module docstring) for a (N, P) batch of equal-length prompts: for each, the
    generated ids of the best finished hypothesis (ending with its stop id, if it has one).
    With the KV cache (model.step), each step feeds one token per live beam and the cache rows follow
    their beams (cache.reorder); use_cache=False feeds every beam's whole prefix (the reference)."""
    N, P = prompts.shape
    live = [[(0.0, [], n)] for n in range(N)]  # per prompt: (sum of log-probs, generated ids, row) of each live beam
    finished = [[] for _ in range(N)]          # per prompt: (normalised score, generated ids)
    done = [False] * N
    cache = KVCache(P + max_new_tokens) if use_cache else None
    logits = model.step(prompts, cache) if use_cache else None  # row n: prompt n

    def score(logp, ids):
        return logp / len(ids) ** length_penalty

    for t in range(max_new_tokens):
        beams = [(n, beam) for n in range(N) if not done[n] for beam in live[n]]
        if not beams:
            break
        if use_cache:
            if t > 0:  # the rows of the cache are last step's beams: follow the survivors, feed their token
                cache.reorder(torch.tensor([row for _, (_, _, row) in beams], device=prompts.device))
                last = torch.tensor([[ids[-1]] for _, (_, ids, _) in beams], device=prompts.device)
                logits = model.step(last, cache)
        else:
            generated = torch.tensor([ids for _, (_, ids, _) in beams], dtype=torch.long, device=prompts.device)
            logits, _ = model(torch.cat([prompts[[n for n, _ in beams]], generated], dim=1))
            logits = logits[:, -1, :model.n_tokens]  # token ids only, as model.step gives: never a padding row
        total = F.log_softmax(logits.float(), dim=-1).cpu().double()
        total += torch.tensor([logp for _, (logp, _, _) in beams], dtype=torch.float64)[:, None]
        V, r = total.size(1), 0
        for n in range(N):
            if done[n]:
                continue
            parents, r = live[n], r + len(live[n])
            first = r - len(parents)  # the row of parents[0] in total (and in the cache)
            values, flat = total[first:r].flatten().topk(min(2 * beam_size, len(parents) * V))
            live[n] = []
            for rank, (logp, f) in enumerate(zip(values.tolist(), flat.tolist())):
                ids = parents[f // V][1] + [f % V]
                if f % V in stop_ids:
                    if rank < beam_size:
                        finished[n].append((score(logp, ids), ids))
                elif len(live[n]) < beam_size:
                    live[n].append((logp, ids, first + f // V))
            finished[n] = sorted(finished[n], key=lambda h: -h[0])[:beam_size]
            best_live = max((score(logp, ids) for logp, ids, _ in live[n]), default=float('-inf'))
            done[n] = len(finished[n]) == beam_size and best_live <= finished[n][-1][0]
    for n in range(N):  # the length cap ends the beams still alive
        if not done[n]:
            finished[n] += [(score(logp, ids), ids) for logp, ids, _ in live[n]]
    return [max(finished[n], key=lambda h: h[0])[1] for n in range(N)]
