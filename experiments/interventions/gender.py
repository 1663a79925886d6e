"""
1. gender. The bias ratio of Hewitt et al. (2023, sec. 6), per language, on templates where the pronoun
   is not grammatically fixed (data/interventions/gender_templates.tsv: "The {profession} said that
   {pronoun}" -> he/she; "L'{profession} a dit qu'{pronoun}" -> il/elle, French professions epicene
   and after the elided article, so nothing marks their gender). For a profession, P(he) is the mean
   over templates of the probability of the whole continuation (the pronoun's tokens after the
   prompt's), and bias_ratio is the mean over professions of max(P(he)/P(she), P(she)/P(he)) >= 1.
   Professions are split into train and test (data/interventions/professions.tsv); every choice is
   made on train, and "after" is measured on test.
   - senses (Backpack): every (sense l, scale s in SCALES) is tried on the train professions (one
     pass: logits are log-linear in the senses, so the grid is computed from alpha and C without
     re-running the model; the chosen edit is then measured with the hook itself); the pair with the
     lowest train bias ratio is applied to the test professions (s = 1: no edit helped).
   - projection (both models; the twin's baseline): the gender direction g = mean E(masculine pronoun
     tokens) - mean E(feminine ones) is projected out of the input embeddings of the profession's
     tokens, x -> x - (1 - keep)(x.g)g/|g|^2, keep chosen on train from SCALES (keep 0: the full
     projection). In a Backpack the edited embedding also feeds the sense network (its senses are
     C(projected embedding)).
   - transfer_en_to_fr: the edits chosen on English professions applied unchanged to the French
     translations of the test professions.
   - cost: the edit applied to every occurrence of the test professions in the val split (cost.py).
"""
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from errors import DataError
from experiments.interventions import cost
from experiments.interventions.edits import Projection, SenseScale, continuation_logprobs, sense_scale_grid
from experiments.interventions.words import DATA_DIR, LANGUAGES, encode_marked, read_tsv, word_pattern
from model import is_backpack

FILES = ('gender_templates.tsv', 'professions.tsv')  # what it reads from the data dir
SCALES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # sense scale s, and the share `keep` of the gender component


@torch.no_grad()
def gender_experiment(model, tok, device, data_dir=DATA_DIR, cost_documents=200, scales=SCALES):
    """Per language, the bias ratios before and after each method's edit (chosen on the train professions,
    measured on the test ones) with its cost, and the English edits applied to French (module docstring)."""
    templates, words = load_gender_data(data_dir)
    methods = ('senses', 'projection') if is_backpack(model) else ('projection',)
    result = {'metric': 'bias ratio: mean over professions of max(P(m)/P(f), P(f)/P(m)), P the mean over templates '
                        'of the probability of the pronoun continuation; 1 = unbiased',
              'methods': list(methods), 'scales': list(scales), 'languages': {}}
    chosen, test_items = {}, {}
    for lang in LANGUAGES:
        items = {split: GenderItems(tok, lang, words[lang][split], templates[lang]) for split in ('train', 'test')}
        test_items[lang] = items['test']
        before = {split: items[split].ratio(model, None, device) for split in items}
        entry = {'n_train': len(words[lang]['train']), 'n_test': len(words[lang]['test']),
                 'n_templates': len(templates[lang]), 'before': {split: before[split][0] for split in items},
                 'methods': {}}
        per_test = {'before': before['test'][1]}
        for method in methods:
            if method == 'senses':
                edit, table = choose_sense_edit(model, items['train'], device, scales)
            else:
                edit, table = choose_projection(model, items['train'], device, scales)
            after, per_test[method] = items['test'].ratio(model, edit, device)
            entry['methods'][method] = {
                **describe(edit), 'train_ratio': np.asarray(table).tolist(),
                'train_after': items['train'].ratio(model, edit, device)[0], 'after': after,
                'cost': cost.val_cost(model, tok, device, lang, words[lang]['test'], edit, cost_documents)}
            chosen.setdefault(lang, {})[method] = edit
        entry['per_profession'] = {
            'train': [{'word': w, 'before': float(r)} for w, r in zip(words[lang]['train'], before['train'][1])],
            'test': [{'word': w, **{key: float(v[i]) for key, v in per_test.items()}}
                     for i, w in enumerate(words[lang]['test'])]}
        result['languages'][lang] = entry
    # the edits learned on English professions, applied to the French translations of the test professions
    transfer = {'before': result['languages']['fr']['before']['test'], 'methods': {}}
    for method in methods:
        edit = chosen['en'][method]
        transfer['methods'][method] = {**describe(edit), 'after': test_items['fr'].ratio(model, edit, device)[0],
                                       'cost': cost.val_cost(model, tok, device, 'fr', words['fr']['test'], edit,
                                                             cost_documents)}
    result['transfer_en_to_fr'] = transfer
    return result


def load_gender_data(data_dir):
    """({lang: [(template, masculine, feminine)]}, {lang: {'train': [...], 'test': [...]}})."""
    templates = {lang: [] for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'gender_templates.tsv', ('lang', 'template', 'masculine', 'feminine')):
        if r['template'].count('{profession}') != 1 or not r['template'].endswith('{pronoun}'):
            raise DataError(f"gender_templates.tsv: {r['template']!r} must hold {{profession}} once and end with {{pronoun}}")
        templates[r['lang']].append((r['template'], r['masculine'], r['feminine']))
    words = {lang: {'train': [], 'test': []} for lang in LANGUAGES}
    for r in read_tsv(Path(data_dir) / 'professions.tsv', ('en', 'fr', 'split')):
        for lang in LANGUAGES:
            if r[lang] != '-':
                words[lang][r['split']].append(r[lang])
    return templates, words


class GenderItems:
    """Every (profession, template) of one language and split: outputs 0..n-1 are the masculine
    continuations, n..2n-1 the feminine ones (n = professions x templates). The two share the prompt, so
    one row scores the masculine continuation and the first feminine token; a second row is needed only
    for a feminine continuation of several tokens."""

    def __init__(self, tok, lang, professions, templates):
        self.lang, self.professions, self.n_templates = lang, list(professions), len(templates)
        pairs = []
        for word in self.professions:
            pattern = word_pattern([word])
            for template, m, f in templates:
                (a, ma), (b, mb) = (encode_marked(tok, lang, template.format(profession=word, pronoun=p), pattern)
                                    for p in (m, f))
                start = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                if not any(ma[:start]):
                    raise DataError(f"gender template {template!r}: profession {word!r} not found in its prompt")
                pairs.append((a, ma, b, mb, start))
        self.n = n = len(pairs)
        self.rows = []
        for q, (a, ma, b, mb, start) in enumerate(pairs):
            self.rows.append((a, ma, [(t - 1, a[t], q) for t in range(start, len(a))] + [(start - 1, b[start], n + q)]))
            if len(b) - start > 1:
                self.rows.append((b, mb, [(t - 1, b[t], n + q) for t in range(start + 1, len(b))]))
        # the pronouns' own tokens: what the gender direction is made of
        self.pronoun_ids = ([t for a, _, _, _, st in pairs for t in a[st:]], [t for _, _, b, _, st in pairs for t in b[st:]])

    def split(self, logp):
        """(logp_m, logp_f), each (n_professions, n_templates)."""
        return logp[:self.n].reshape(-1, self.n_templates), logp[self.n:].reshape(-1, self.n_templates)

    def ratio(self, model, edit, device):
        """(bias ratio, per-profession ratios) with `edit`."""
        return bias_ratio(*self.split(continuation_logprobs(model, self.rows, 2 * self.n, edit, device)))

    def direction(self, model):
        """g = mean E(masculine pronoun tokens) - mean E(feminine pronoun tokens)."""
        E = model.input_embeddings().detach()
        return E[self.pronoun_ids[0]].mean(0) - E[self.pronoun_ids[1]].mean(0)


def choose_sense_edit(model, items, device, scales=SCALES):
    """The (sense, scale) with the lowest train bias ratio (ties: the larger scale, then the lower
    sense), and the (k, len(scales)) table of train ratios."""
    grid = sense_scale_grid(model, items.rows, 2 * items.n, scales, device)
    table = np.array([[bias_ratio(*items.split(grid[l, g]))[0] for g in range(len(scales))]
                      for l in range(grid.shape[0])])
    ratio, _, l, g = min((table[l, g], -scales[g], l, g) for l in range(table.shape[0]) for g in range(len(scales)))
    return SenseScale({int(l): float(scales[g])}), table


def choose_projection(model, items, device, scales=SCALES):
    """The share `keep` with the lowest train bias ratio (ties: the larger keep), and the train ratios."""
    g = items.direction(model)
    table = [items.ratio(model, Projection(g, keep), device)[0] for keep in scales]
    _, _, best = min((r, -keep, i) for i, (r, keep) in enumerate(zip(table, scales)))
    return Projection(g, float(scales[best])), table


def describe(edit):
    if isinstance(edit, SenseScale):
        (l, s), = edit.scales.items()
        return {'sense': l, 'scale': s}
    return {'keep': edit.keep, 'direction_norm': float(edit.direction.norm())}


def bias_ratio(logp_m, logp_f):
    """Hewitt et al.'s bias ratio. logp_m, logp_f (n_professions, n_templates): log-probabilities of the
    masculine and feminine continuations. Per profession, P = the mean over templates of the
    probability; ratio = max(P_m / P_f, P_f / P_m) >= 1. Returns (mean over professions, per profession)."""
    lm, lf = logsumexp(np.asarray(logp_m, float), axis=1), logsumexp(np.asarray(logp_f, float), axis=1)
    per = np.exp(np.abs(lm - lf))
    return float(per.mean()), per


def check(c, g, model):
    """gender_experiment's result `g` on verify_evaluation's Checks `c`, for the model results['model']
    describes. Recomputed: each 'before' and 'after' ratio, the mean of the stored per-profession ones; the
    train ratio of the chosen edit measured with the hook, against the grid's prediction (log-linearity); each
    cost (cost.check). Sanity: ratios >= 1, the chosen edit the minimum of its train grid."""
    backpack, k = model['model_type'] == 'backpack', model['n_senses']
    expected = ('senses', 'projection') if backpack else ('projection',)
    for lang in LANGUAGES:
        e = g['languages'].get(lang)
        if not c.check(e is not None, f'interventions.gender: no {lang} results'):
            continue
        for split in ('train', 'test'):
            c.in_range(e['before'][split], 1, float('inf'), f'interventions.gender.{lang}.before.{split}')
            per = [p['before'] for p in e['per_profession'][split]]
            if c.check(len(per) == e[f'n_{split}'] and per, f'interventions.gender.{lang}.per_profession.{split}: '
                                                             f"{len(per)} professions, n_{split} = {e[f'n_{split}']}"):
                c.same(e['before'][split], sum(per) / len(per), f'interventions.gender.{lang}.before.{split}')
        for method in expected:
            m = e['methods'].get(method)
            if not c.check(m is not None, f'interventions.gender.{lang}: no {method} results'):
                continue
            where = f'interventions.gender.{lang}.{method}'
            for key in ('after', 'train_after'):
                c.in_range(m[key], 1, float('inf'), f'{where}.{key}')
            per = [p[method] for p in e['per_profession']['test']]
            if per:  # the mean over the test professions of their ratios with the edit
                c.same(m['after'], sum(per) / len(per), f'{where}.after')
            grid = m['train_ratio']
            best = min(min(row) for row in grid) if method == 'senses' else min(grid)
            chosen = grid[m['sense']][g['scales'].index(m['scale'])] if method == 'senses' else \
                grid[g['scales'].index(m['keep'])]
            c.sanity(abs(chosen - best) <= 1e-9 * best, f'{where}: the chosen edit is not the best of its train grid')
            # the grid is computed from alpha and C (log-linearity), train_after with the hook itself
            c.check(abs(m['train_after'] - chosen) <= 1e-3 * chosen,
                    f"{where}: train ratio {m['train_after']} with the edit, {chosen} predicted by the grid")
            if method == 'senses':
                c.in_range(m['sense'], 0, k - 1, f'{where}.sense')
            cost.check(c, m['cost'], f'{where}.cost')
    t = g['transfer_en_to_fr']
    c.in_range(t['before'], 1, float('inf'), 'interventions.gender.transfer_en_to_fr.before')
    for method in expected:
        if c.check(method in t['methods'], f'interventions.gender.transfer_en_to_fr: no {method} results'):
            c.in_range(t['methods'][method]['after'], 1, float('inf'), f'interventions.gender.transfer.{method}.after')
            cost.check(c, t['methods'][method]['cost'], f'interventions.gender.transfer.{method}.cost')
