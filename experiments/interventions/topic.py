"""
2. topic. Generation from Europarl-like prompts (data/interventions/topic_prompts.tsv) steered towards
   a topic (data/interventions/topics.tsv). Up-weighting the senses of the topic words at every
   position: adding v_l to sense l of every position adds exactly sum_l v_l to every o_i (alpha sums
   to 1 over the prefix), so it is a fixed vector added to what the LM head reads. senses (Backpack):
   v = the mean over the topic's single-token words of sum_l C(w)_l (the word's whole backpack);
   embedding (both models; the twin's baseline): v = the mean of their embeddings E(w). Adding v to
   what the LM head reads adds the logits E v; v is scaled so that they have a standard deviation of
   `strength` nats over the vocabulary (logit_unit), the same unit for both methods and both models.
   A word's vector is taken out of context, so the steering words must be single tokens: the others are
   dropped from the steering vector and listed.
   Steered words are not counted words: the embedding baseline adds the logits E E(w), which raise
   exactly the words w it steers with, so counting them would favour it. Each topic's list (per
   language) is cut in two by split_topic_words, deterministically from the list's order: families of
   words sharing their first STEM_PREFIX letters (farm, farmer, farmers ...), each kept whole, go to the
   half with fewer words so far. Every method steers with the steer half only ('steer_half'; its
   single-token words, 'steering_words', make the vector) and the generations of every method and of the
   unedited model are counted with the counted half only ('counted_half'); both are in the results.
   Metrics: share of generations with a counted word, counted-word frequency (counted words / words),
   and the cost, the perplexity of the generated tokens under the unedited model. Every generated text is
   stored ('generations'), so that shares and frequencies can be recomputed. Sampling (KV-cached,
   model.step, the logits plus the fixed steering logits): top_k, temperature, a seeded generator per
   prompt, every setting and the unedited model in one batch.
"""
import re
from pathlib import Path

import numpy as np
import torch

from errors import UserError, warn
from experiments import metrics
from experiments.interventions.words import DATA_DIR, LANGUAGES, read_tsv
from generation import KVCache
from model import is_backpack

FILES = ('topics.tsv', 'topic_prompts.tsv')  # what it reads from the data dir
STRENGTHS = (1.0, 2.0, 4.0, 8.0)  # standard deviation (nats) of the logits the steering adds
STEM_PREFIX = 4  # topic words sharing their first 4 letters are one family (split_topic_words)


@torch.no_grad()
def topic_experiment(model, tok, device, data_dir=DATA_DIR, strengths=STRENGTHS, samples=4, max_new_tokens=32,
                     seed=0, top_k=50, temperature=1.0):
    """Per language, the unedited model's generations and each method's at each strength for each topic, with
    their counted-word share and frequency and their perplexity under the unedited model (module docstring)."""
    topics, prompts = load_topic_data(data_dir)
    methods = ('senses', 'embedding') if is_backpack(model) else ('embedding',)
    stop_ids = [tok.eos_id, tok.lang_id('en'), tok.lang_id('fr')]
    E = model.input_embeddings()
    result = {'metric': "each topic's words cut in two (split_topic_words: families of words sharing their first "
                        f"{STEM_PREFIX} letters, whole, to the smaller half): every method steers with the steer half "
                        "only, and only the counted half is counted, for every method and the unedited model alike; "
                        "share of generations with a counted word; counted words / words; cost: perplexity of the "
                        "generated tokens under the unedited model",
              'methods': list(methods), 'strengths': list(strengths), 'samples_per_prompt': samples, 'seed': seed,
              'top_k': top_k, 'temperature': temperature, 'stem_prefix': STEM_PREFIX, 'languages': {}}
    for lang in LANGUAGES:
        prompt_ids = [[tok.lang_id(lang)] + tok.encode(p) for p in prompts[lang]]
        n_new = min(max_new_tokens, model.config.block_size - max(map(len, prompt_ids)))
        if n_new < 1:
            raise UserError(f"the {lang} topic prompts do not fit the model's context ({model.config.block_size} tokens)")
        if n_new < max_new_tokens:
            warn(f"topic control: {n_new} new tokens instead of {max_new_tokens}, so that prompt and generation "
                 f"fit the context ({model.config.block_size} tokens)")
        configs, steer, word_info = [('unedited', None, 0.0)], {}, {}
        for topic, by_lang in topics.items():
            steer_half, counted_half = split_topic_words(by_lang[lang])
            vectors, kept, dropped = topic_vectors(model, tok, steer_half)
            word_info[topic] = {'words': by_lang[lang], 'steer_half': steer_half, 'counted_half': counted_half,
                                'steering_words': kept, 'dropped_from_steering': dropped}
            for method in methods:
                if method in vectors:
                    steer[method, topic] = vectors[method]
                    configs += [(method, topic, float(b)) for b in strengths]
        bias = torch.stack([torch.zeros(E.size(0), device=E.device) if m == 'unedited'
                            else b * logit_unit(E @ steer[m, t]) for m, t, b in configs])
        texts, nll, count = [[] for _ in configs], np.zeros(len(configs)), np.zeros(len(configs))
        owner = np.repeat(np.arange(len(configs)), samples)
        for p, ids in enumerate(prompt_ids):
            generator = torch.Generator(device=device).manual_seed(seed + p)
            idx = torch.tensor([ids], device=device).repeat(len(owner), 1)
            out = sample_with_bias(model, idx, bias.repeat_interleave(samples, 0), n_new, generator, top_k,
                                   temperature, stop_ids)
            row_nll, row_count = generated_nll(model, out, len(ids), stop_ids)
            np.add.at(nll, owner, row_nll)
            np.add.at(count, owner, row_count)
            for row, c in enumerate(owner):
                gen = out[row, len(ids):].tolist()
                gen = gen[:next((i for i, t in enumerate(gen) if t in stop_ids), len(gen))]
                texts[c].append(tok.decode(gen))
        counted = {t: word_info[t]['counted_half'] for t in topics}
        entry = {'max_new_tokens': n_new, 'prompts': prompts[lang], 'words': word_info, 'unedited': {}, 'methods': {}}
        entry['unedited'] = {'ppl': metrics.ppl(nll[0], count[0]), 'generations': texts[0],
                             'topics': {t: topic_stats(texts[0], counted[t]) for t in topics}}
        for c, (method, topic, b) in enumerate(configs[1:], 1):
            entry['methods'].setdefault(method, {}).setdefault(topic, []).append(
                {'strength': b, **topic_stats(texts[c], counted[topic]), 'ppl': metrics.ppl(nll[c], count[c]),
                 'generations': texts[c]})
        result['languages'][lang] = entry
    return result


def load_topic_data(data_dir):
    """({topic: {lang: [words]}}, {lang: [prompts]}); split_topic_words cuts each list in two."""
    topics = {}
    for r in read_tsv(Path(data_dir) / 'topics.tsv', ('topic', 'lang', 'words')):
        topics.setdefault(r['topic'], {})[r['lang']] = r['words'].split()
    prompts = {lang: [] for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'topic_prompts.tsv', ('lang', 'prompt')):
        prompts[r['lang']].append(r['prompt'])
    return topics, prompts


def split_topic_words(words, prefix=STEM_PREFIX):
    """(steer, counted): a topic's word list cut in two halves, so that the words a method steers with are
    never the words counted in its generations. Words are grouped into families, a crude stem: two words
    are of one family when they share their first `prefix` letters, or the shorter one (under `prefix`
    letters) begins the other (farm, farmer, farmers, farming, farms; sea, seas), and joined transitively.
    The families, in the order of their first word in the list, go one by one to the half with fewer words
    so far (ties: steer). Deterministic (the list's order only), the halves disjoint, each family whole in
    one half, their sizes within the largest family's of each other."""
    words = list(dict.fromkeys(w.lower() for w in words))

    def related(a, b):
        short, long_ = sorted((a, b), key=len)
        return a[:prefix] == b[:prefix] if len(short) >= prefix else long_.startswith(short)
    family = list(range(len(words)))  # union-find over the related pairs

    def root(i):
        while family[i] != i:
            i = family[i]
        return i
    for i in range(len(words)):
        for j in range(i):
            if related(words[i], words[j]):
                family[max(root(i), root(j))] = min(root(i), root(j))
    groups = {}
    for i, w in enumerate(words):
        groups.setdefault(root(i), []).append(w)
    steer, counted = [], []
    for members in groups.values():  # in the order of each family's first word
        (steer if len(steer) <= len(counted) else counted).extend(members)
    return steer, counted


@torch.no_grad()
def topic_vectors(model, tok, words):
    """({'senses': v, 'embedding': v} unit steering vectors, kept single-token words, dropped words with
    the reason). A Backpack's 'senses' vector is the mean of sum_l C(w)_l."""
    kept, dropped = {}, {}
    for w in words:
        ids = tok.encode_word(w)
        if len(ids) != 1:
            dropped[w] = f'{len(ids)} tokens'
        elif tok.token_lang_counts[ids[0]].sum() == 0:
            dropped[w] = 'token never seen in training'
        else:
            kept[w] = ids[0]
    if not kept:
        return {}, [], dropped
    ids = torch.tensor(list(kept.values()), device=model.lm_head.weight.device)
    vectors = {'embedding': model.input_embeddings()[ids].mean(0)}
    if is_backpack(model):
        vectors['senses'] = model.sense_vectors(ids).sum(1).mean(0)
    return {m: v / v.norm() for m, v in vectors.items()}, list(kept), dropped


def logit_unit(bias):
    """The logit change of a steering vector scaled to standard deviation 1 nat over the vocabulary:
    strength b then adds logits with standard deviation b, whatever the model or the vector."""
    return bias / bias.std()


@torch.no_grad()
def sample_with_bias(model, idx, bias, max_new_tokens, generator, top_k, temperature, stop_ids):
    """idx (B, P) + max_new_tokens sampled tokens, each step's logits (KV-cached, model.step) plus the
    row's bias (B, n_tokens); a row that produced a stop id repeats it from then on."""
    cache = KVCache(model.config.block_size)
    stop = torch.as_tensor(stop_ids, device=idx.device)
    stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    logits = model.step(idx, cache)
    for t in range(max_new_tokens):
        logits = logits.add_(bias)  # in place: (B, V) with V up to 50k, at every step
        if temperature != 1:
            logits = logits.div_(temperature)
        if top_k:  # sample among the top_k only (the same distribution as masking the rest, and faster)
            logits, candidates = torch.topk(logits, min(top_k, logits.size(-1)))
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator)
        if top_k:
            nxt = candidates.gather(1, nxt)
        nxt = torch.where(stopped[:, None], idx[:, -1:], nxt)
        idx = torch.cat((idx, nxt), dim=1)
        stopped |= torch.isin(nxt[:, 0], stop)
        if stopped.all() or t == max_new_tokens - 1:
            break
        logits = model.step(nxt, cache)
    return idx


@torch.no_grad()
def generated_nll(model, seqs, prompt_len, stop_ids, chunk=4):
    """Per row of seqs (B, L): (sum of -ln p of the generated tokens up to and including the first stop
    id, their number), under the model as it is (unedited)."""
    nll, counts = [], []
    for rows in seqs.split(chunk):
        gen = rows[:, prompt_len:]
        is_stop = torch.isin(gen, torch.as_tensor(stop_ids, device=gen.device))
        before_stop = (is_stop.cumsum(1) - is_stop.long()) == 0  # up to and including the first stop
        targets = torch.full_like(rows[:, 1:], -1)
        targets[:, prompt_len - 1:] = torch.where(before_stop, gen, -1)
        b, i = (targets >= 0).nonzero(as_tuple=True)
        logits = (model._final_hidden(rows[:, :-1])[b, i] @ model.lm_head.weight.T).float()
        logp = torch.log_softmax(logits, -1).gather(1, targets[b, i][:, None])[:, 0]
        nll.append(torch.zeros(len(rows), device=rows.device).index_add_(0, b, -logp))
        counts.append((targets >= 0).sum(1))
    return torch.cat(nll).double().cpu().numpy(), torch.cat(counts).cpu().numpy()


def topic_stats(texts, words):
    """share: fraction of texts with at least one of `words` (lower-case); frequency: those words over
    all words of the texts (words = \\w+ runs, lower-cased; 0 when there are none)."""
    words = {w.lower() for w in words}
    tokens = [re.findall(r'\w+', t.lower()) for t in texts]
    hits = [sum(w in words for w in ts) for ts in tokens]
    n_words = sum(len(ts) for ts in tokens)
    return {'share': float(np.mean([h > 0 for h in hits])) if texts else 0.0,
            'frequency': sum(hits) / n_words if n_words else 0.0, 'n_generations': len(texts), 'n_words': n_words}


def check(c, t, model):
    """topic_experiment's result `t` on verify_evaluation's Checks `c`, for the model results['model']
    describes. Recomputed: each topic's halves, split_topic_words of its list; every share, frequency and word
    count, topic_stats of the stored generations with the counted half; one result per strength. Sanity:
    shares and frequencies in [0, 1], perplexities >= 1."""
    expected = ('senses', 'embedding') if model['model_type'] == 'backpack' else ('embedding',)
    for lang in LANGUAGES:
        e = t['languages'].get(lang)
        if not c.check(e is not None, f'interventions.topic: no {lang} results'):
            continue
        c.in_range(e['unedited']['ppl'], 1, float('inf'), f'interventions.topic.{lang}.unedited.ppl')
        c.check(set(e['unedited']['topics']) == set(e['words']),
                f"interventions.topic.{lang}.unedited.topics: {sorted(e['unedited']['topics'])}, words of "
                f"{sorted(e['words'])}")
        points = [(f'{lang}.unedited.{topic}', s, e['unedited']['generations'], e['words'][topic]['counted_half'])
                  for topic, s in e['unedited']['topics'].items() if topic in e['words']]
        for topic, info in e['words'].items():
            where = f'interventions.topic.{lang}.words.{topic}'
            steer, counted, steering = info['steer_half'], info['counted_half'], info['steering_words']
            c.check(bool(steer and counted) and not set(steer) & set(counted),
                    f'{where}: steer_half {steer} and counted_half {counted} must be non-empty and disjoint')
            c.check([steer, counted] == list(split_topic_words(info['words'], t['stem_prefix'])),
                    f'{where}: steer_half / counted_half are not split_topic_words of its words')
            c.check(not set(steering) & set(counted),
                    f'{where}.steering_words: counted words {sorted(set(steering) & set(counted))} steer')
            c.check(sorted([*steering, *info['dropped_from_steering']]) == sorted(steer),
                    f'{where}.steering_words: {steering} and the dropped {sorted(info["dropped_from_steering"])} '
                    f'are not the steer_half {steer}')
            for method in expected:
                curve = e['methods'].get(method, {}).get(topic)
                if info['steering_words']:
                    c.check(curve is not None and [p['strength'] for p in curve] == t['strengths'],
                            f'interventions.topic.{lang}.{method}.{topic}: not one result per strength')
                for p in curve or []:
                    points.append((f"{lang}.{method}.{topic}.{p['strength']}", p, p['generations'], counted))
                    c.in_range(p['ppl'], 1, float('inf'), f"interventions.topic.{lang}.{method}.{topic}.ppl")
        n_generations = len(e['prompts']) * t['samples_per_prompt']
        for where, p, texts, counted in points:
            for key in ('share', 'frequency'):
                c.in_range(p[key], 0, 1, f'interventions.topic.{where}.{key}')
            c.check(len(texts) == p['n_generations'] == n_generations,
                    f"interventions.topic.{where}.generations: {len(texts)} stored, n_generations "
                    f"{p['n_generations']}, {len(e['prompts'])} prompts x {t['samples_per_prompt']} samples")
            again = topic_stats(texts, counted)  # from the stored texts and the counted half
            for key in ('share', 'frequency', 'n_words'):
                c.same(p[key], again[key], f'interventions.topic.{where}.{key}')
