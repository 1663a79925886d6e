"""Edit a sense in English, measure it in French (model editing with canonical examples, Hewitt et al. 2024,
across languages). A Backpack's logits are linear in its senses with alpha fixed by the context:
    logits_i = E sum_l sum_{j<=i} alpha_lij C(x_j)_l,
so an edit C(w)_l += dC_wl of a few senses moves every logit by exactly
    dlogits_i = sum_l sum_{j<=i: x_j edited} alpha_lij E dC_{x_j,l},   |dlogits_i[v]| <= sum_l sum_j alpha_lij |E dC_{x_j,l}|[v]
and not at all in a context without an edited word. The task (data/cross_edit/): a counterfactual fact about a
person whose name is spelled alike in both languages (its BPE pieces, hence its senses, are shared):
    canonical (English, the one training example)  "Mr Barroso is a member of" -> " the Council"
    general (held out, 6 frames per language)      "I thank Mr Barroso, who spoke on behalf of" -> " the Council",
                                                   "Je remercie M. Barroso, qui a parlé au nom" -> " du Conseil"
The target institution t of a person is the one of {Commission, Council, Parliament} the unedited Backpack finds
least likely on the canonical prompt (so no edit starts out correct); lp(c) = sum log p(continuation c | prompt).
    success(item)  lp(t) > max_{c != t} lp(c)            (CounterFact's efficacy score, Meng et al. 2022)
    margin(item)   lp(t) - max_{c != t} lp(c); its change d = margin_after - margin_before
    transfer       mean d (French, general) / mean d (English, general)
Methods (each fits one person's canonical example at a time, loss = -lp(t) + KL_WEIGHT * KL(p_before || p) per token
on REG_DOCS val documents per language, Adam, STEPS steps; the learning rate chosen per method on the dev people:
the best English general success whose collateral KL stays <= KL_BUDGET nats/token):
    backpack/senses       the N_SENSES senses (w, l) of the canonical sequence's tokens ranked by
                          |grad_C(w)_l canonical loss| / |grad_C(w)_l LM loss on general text| (Hewitt et al. 2024's
                          sense selection; a sense without general-text gradient ranks first), finetuned alone
    backpack/name_senses  all k senses of the name's tokens
    backpack/full         every weight
    transformer/name_embedding  the twin's input embeddings of the name's tokens (the nearest thing it has)
    transformer/full      every weight of the twin
Collateral, per language: mean KL(p_before || p_after) per token and the change of bits/byte on the first
N_COLLATERAL val documents after the REG_DOCS (cut to the block), and the KL on the val documents that name the
person (where a sense edit acts). For sense edits the identity and the bound above are checked on every scored
position of every general item, over the whole vocabulary (max_identity_error, max_bound_excess).

    python experiments/cross_edit.py --out_dir out/backpack --twin out/transformer --output cross_edit.json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import metrics  # noqa: E402
from experiments.interventions.cost import val_documents  # noqa: E402
from experiments.interventions.edits import position_senses  # noqa: E402
from experiments.interventions.words import encode_marked, read_tsv, word_pattern  # noqa: E402
from experiments.sentence import pad  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / 'data' / 'cross_edit'
LANGS = ('en', 'fr')
METHODS = ('backpack/senses', 'backpack/name_senses', 'backpack/full', 'transformer/name_embedding',
           'transformer/full')
LR_GRID = {'backpack/senses': (0.03, 0.1, 0.3), 'backpack/name_senses': (0.01, 0.03, 0.1),
           'backpack/full': (1e-5, 3e-5, 1e-4), 'transformer/name_embedding': (0.01, 0.03, 0.1),
           'transformer/full': (1e-5, 3e-5, 1e-4)}
STEPS, KL_WEIGHT, KL_BUDGET, N_SENSES = 20, 1.0, 1e-3, 10
REG_DOCS, REG_TOKENS, N_COLLATERAL, DOC_TOKENS, NAME_DOCS = 4, 64, 50, 128, 20


# ---------------------------------------------------------------------------------------------- the task

def read_task(data_dir=DATA_DIR):
    """(people [{name, title_en, title_fr, split}], templates [{role, en, fr}], institutions [{institution, en, fr}])."""
    d = Path(data_dir)
    return (read_tsv(d / 'people.tsv', ('name', 'title_en', 'title_fr', 'split')),
            read_tsv(d / 'templates.tsv', ('role', 'en', 'fr')),
            read_tsv(d / 'institutions.tsv', ('institution', 'en', 'fr')))


def person_items(tok, person, templates, institutions):
    """The prompts of one person: [{lang, role, template, ids ([<lang>] + prompt), name_mask, continuations
    (one id list per institution, ' ' + its words)}], English then French, the canonical frame first."""
    pattern = word_pattern([person['name']])
    items = []
    for lang in LANGS:
        for t, template in enumerate(templates):
            text = template[lang].format(title=person[f'title_{lang}'], name=person['name'])
            ids, mask = encode_marked(tok, lang, text, pattern)
            items.append({'lang': lang, 'role': template['role'], 'template': t, 'ids': ids, 'name_mask': mask,
                          'continuations': [tok.encode(' ' + inst[lang]) for inst in institutions]})
    return items


def margins(lp, target):
    """lp (n, c) continuation log-probabilities -> (n,) lp[:, target] - max over the others."""
    lp = np.asarray(lp, dtype=float)
    others = np.delete(lp, target, axis=1)
    return lp[:, target] - others.max(axis=1)


# ---------------------------------------------------------------------------------------------- the edits

class SenseEdit:
    """Backpack: C(w)_l += delta_p for the chosen pairs p = (w, l); the model itself is frozen."""

    def __init__(self, model, pairs):
        self.model, self.pairs = model, [tuple(map(int, p)) for p in pairs]
        self.delta = torch.zeros(len(self.pairs), model.config.n_embd, requires_grad=True)
        self.tokens = sorted({w for w, _ in self.pairs})

    def parameters(self):
        return [self.delta]

    def senses_delta(self, idx):
        """dC at every position (B, T, k, d): delta_p where x_j = w_p, in sense l_p."""
        k, d = self.model.config.n_senses, self.model.config.n_embd
        tokens = torch.tensor(self.tokens)
        rows = torch.tensor([self.tokens.index(w) for w, _ in self.pairs])
        table = torch.zeros(len(tokens), k, d).index_put((rows, torch.tensor([l for _, l in self.pairs])), self.delta)
        where = torch.searchsorted(tokens, idx).clamp(max=len(tokens) - 1)
        hit = tokens[where] == idx
        return torch.where(hit[..., None, None], table[where], 0.0)

    def logits(self, idx):
        senses = position_senses(self.model, idx) + self.senses_delta(idx)
        return self.model(idx, return_logits=True, senses=senses)[0]


class EmbeddingEdit:
    """Transformer twin: its input embedding of the chosen tokens += delta (the tied output rows unchanged)."""

    def __init__(self, model, tokens):
        self.model, self.tokens = model, sorted(map(int, tokens))
        self.delta = torch.zeros(len(self.tokens), model.config.n_embd, requires_grad=True)

    def parameters(self):
        return [self.delta]

    def logits(self, idx):
        def hook(module, args, output):
            add = torch.zeros_like(output)
            for p, w in enumerate(self.tokens):
                add = add + (args[0] == w)[..., None] * self.delta[p]
            return output + add
        handle = self.model.transformer.wte.register_forward_hook(hook)
        try:
            return self.model(idx, return_logits=True)[0]
        finally:
            handle.remove()


class FullEdit:
    """Every weight of a copy of the model (eval mode: no dropout)."""

    def __init__(self, model):
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(True)
        self.tokens = None  # acts everywhere

    def parameters(self):
        return list(self.model.parameters())

    def logits(self, idx):
        return self.model(idx, return_logits=True)[0]


def unedited(model):
    return lambda idx: model(idx, return_logits=True)[0]


# ---------------------------------------------------------------------------------------------- scoring

def sequences(items, n_inst):
    """Every (item, continuation) as (ids, start of the continuation) rows, item-major."""
    return [(it['ids'] + it['continuations'][c], len(it['ids'])) for it in items for c in range(n_inst)]


def continuation_logprobs(logits_fn, rows):
    """(n,) sum_t log p(ids[t] | ids[:t]) over t >= start of each row (one padded batch, with grad if enabled)."""
    idx = pad([r[0] for r in rows], 0)
    logp = torch.log_softmax(logits_fn(idx).float(), dim=-1)
    b = torch.tensor([r for r, (ids, s) in enumerate(rows) for _ in range(s, len(ids))])
    t = torch.tensor([i for ids, s in rows for i in range(s, len(ids))])
    lp = logp[b, t - 1, idx[b, t]]
    return torch.zeros(len(rows), dtype=lp.dtype).index_add(0, b, lp)


def scores(logits_fn, items, n_inst):
    """(n_items, n_inst) continuation log-probabilities, no grad."""
    with torch.no_grad():
        return continuation_logprobs(logits_fn, sequences(items, n_inst)).view(len(items), n_inst).double().numpy()


def general_documents(tok, val, lang, n, skip=0, max_tokens=DOC_TOKENS):
    """[(ids, text bytes)] of val documents skip..skip+n of `lang` (val: val_documents per language), each cut to
    its first max_tokens tokens."""
    return [(doc[:max_tokens].tolist(), len(tok.decode(doc[1:max_tokens].tolist()).encode('utf-8')))
            for _, doc in val[lang][skip:skip + n]]


def name_documents(tok, val, lang, name, n=NAME_DOCS, max_tokens=DOC_TOKENS):
    """[(ids, bytes)] of up to n val documents of `lang` that name the person: [<lang>] + a window of max_tokens - 1
    tokens of the document, re-encoded, that starts up to half a window before the first mention."""
    pattern = word_pattern([name])
    out = []
    for text, _ in val[lang]:
        if pattern.search(text):
            ids, mask = encode_marked(tok, lang, text, pattern)
            start = max(1, min(mask.index(True) - max_tokens // 2, len(ids) - max_tokens + 1))
            window = [ids[0]] + ids[start:start + max_tokens - 1]
            out.append((window, len(tok.decode(window).encode('utf-8'))))
            if len(out) == n:
                break
    return out


def kl_and_nll(logits_before, logits_after, idx, lengths):
    """Per document: (sum over its predicted tokens of KL(p_before || p_after), of -log p_after, of -log p_before,
    the number of predicted tokens); padding excluded."""
    lb, la = torch.log_softmax(logits_before.float(), -1), torch.log_softmax(logits_after.float(), -1)
    kl = (lb.exp() * (lb - la)).sum(-1)[:, :-1]  # positions that predict a next token
    tgt = idx[:, 1:, None]
    nll_a, nll_b = -la[:, :-1].gather(2, tgt)[..., 0], -lb[:, :-1].gather(2, tgt)[..., 0]
    valid = torch.arange(idx.size(1) - 1)[None] < (torch.tensor(lengths)[:, None] - 1)
    return [(float(kl[r][valid[r]].sum()), float(nll_a[r][valid[r]].sum()), float(nll_b[r][valid[r]].sum()),
             int(valid[r].sum())) for r in range(len(lengths))]


def collateral(model, edit, docs, batch=25):
    """{kl (mean KL(p_before || p_after) per predicted token), delta_bpb (change of bits/byte), tokens, documents,
    changed (documents with an edited token, the only ones scored twice: the others are unchanged exactly)}."""
    tokens = sum(len(d) - 1 for d, _ in docs)
    n_bytes = sum(b for _, b in docs)
    kept = [d for d, _ in docs if touched(edit, torch.tensor([d]))[0]]
    total = np.zeros(4)
    with torch.no_grad():
        for s in range(0, len(kept), batch):
            chunk = kept[s:s + batch]
            idx = pad(chunk, 0)
            per_doc = kl_and_nll(model(idx, return_logits=True)[0], edit.logits(idx), idx, [len(d) for d in chunk])
            total += np.array(per_doc).sum(0)
    kl, nll_after, nll_before, _ = total
    return {'kl': kl / max(tokens, 1), 'delta_bpb': (nll_after - nll_before) / (n_bytes * math.log(2)) if n_bytes else 0.0,
            'tokens': int(tokens), 'documents': len(docs), 'changed': len(kept)}


# ---------------------------------------------------------------------------------------------- fitting

def touched(edit, idx):
    """(B,) whether a row can change under `edit`: it holds an edited token (every row for a full edit). A row
    without one has exactly the logits it had (same inputs, same weights), so it is skipped, not approximated."""
    if edit.tokens is None:
        return torch.ones(idx.size(0), dtype=torch.bool)
    return torch.isin(idx, torch.tensor(edit.tokens)).any(1)


def kl_term(edit, reg_idx, reg_logp0, reg_valid):
    """Mean over the valid positions of KL(p_before || p_edit) (rows that cannot change contribute 0)."""
    rows = touched(edit, reg_idx)
    if not rows.any():
        return torch.zeros(())
    lp = torch.log_softmax(edit.logits(reg_idx[rows]).float(), -1)
    kl = (reg_logp0[rows].exp() * (reg_logp0[rows] - lp)).sum(-1)
    return kl[reg_valid[rows]].sum() / reg_valid.sum()


def regulariser(model, reg_docs):
    """(idx, log p_before, valid mask) of the regularisation documents."""
    idx = pad(reg_docs, 0)
    valid = torch.arange(idx.size(1))[None] < torch.tensor([len(d) for d in reg_docs])[:, None]
    with torch.no_grad():
        return idx, torch.log_softmax(model(idx, return_logits=True)[0].float(), -1), valid


def fit(edit, canonical_row, reg, lr, steps=STEPS, kl_weight=KL_WEIGHT):
    """Adam on edit.parameters(): loss = -lp(target continuation | canonical prompt) + kl_weight * KL; returns the
    per-step losses."""
    opt = torch.optim.Adam(edit.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = -continuation_logprobs(edit.logits, [canonical_row])[0] + kl_weight * kl_term(edit, *reg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if hasattr(edit.model, 'clear_sense_table'):
            edit.model.clear_sense_table()
    return losses


def select_senses(model, canonical_row, reg_docs, n=N_SENSES):
    """The n (token, sense) pairs of the canonical sequence's tokens with the largest gradient-norm ratio
    |grad canonical loss| / |grad LM loss on reg_docs| (zero general gradient: ranked first, by canonical norm)."""
    ids = canonical_row[0][:-1]  # the last token's senses predict nothing that is scored
    k = model.config.n_senses
    pairs = [(w, l) for w in sorted(set(ids)) for l in range(k)]
    probe = SenseEdit(model, pairs)
    canonical = -continuation_logprobs(probe.logits, [canonical_row])[0]
    g_c = torch.autograd.grad(canonical, probe.delta)[0].norm(dim=1)
    idx = pad(reg_docs, 0)
    targets = pad([d[1:] + [-1] for d in reg_docs], -1)
    general = probe.model(idx, targets, senses=position_senses(model, idx) + probe.senses_delta(idx))[1]
    g_g = torch.autograd.grad(general, probe.delta)[0].norm(dim=1)
    ratio = torch.where(g_g > 0, g_c / g_g.clamp_min(1e-30), torch.full_like(g_c, math.inf))
    order = sorted(range(len(pairs)), key=lambda p: (-float(ratio[p]), -float(g_c[p])))
    return [(pairs[p], float(g_c[p]), float(g_g[p])) for p in order[:n]]


def bound_check(model, edit, items, n_inst):
    """Over every scored position of the items (target rows) and every vocabulary entry: the measured change of
    the logits against the identity sum_l sum_j alpha_lij E dC_jl and the bound sum_l sum_j alpha_lij |E dC_jl|."""
    rows = sequences(items, n_inst)
    idx = pad([r[0] for r in rows], 0)
    E = model.lm_head.weight
    with torch.no_grad():
        measured = edit.logits(idx) - model(idx, return_logits=True)[0]
        alpha = model.contextualization(idx)                                  # (B, k, T, T)
        D = edit.senses_delta(idx)                                            # (B, T, k, d)
        predicted = torch.einsum('blij,bjld->bid', alpha, D) @ E.T
        identity, excess, ratios = 0.0, -math.inf, []
        for r, (ids, start) in enumerate(rows):
            J = torch.nonzero(D[r].abs().sum((1, 2)) > 0)[:, 0]
            pos = torch.arange(start - 1, len(ids) - 1)
            if len(J):
                G = (D[r, J] @ E.T).abs()                                     # (|J|, k, V)
                bound = torch.einsum('lij,jlv->iv', alpha[r][:, pos][:, :, J], G)
            else:
                bound = torch.zeros(len(pos), E.size(0))
            m = measured[r, pos]
            identity = max(identity, float((m - predicted[r, pos]).abs().max()))
            excess = max(excess, float((m.abs() - bound).max()))
            tgt = idx[r, pos + 1]
            b_t = bound[torch.arange(len(pos)), tgt]
            ratios += (m[torch.arange(len(pos)), tgt].abs() / b_t.clamp_min(1e-12))[b_t > 0].tolist()
    return {'max_identity_error': identity, 'max_bound_excess': excess,
            'target_ratio_mean': float(np.mean(ratios)) if ratios else None, 'positions': int(sum(len(r[0]) - r[1] for r in rows))}


# ---------------------------------------------------------------------------------------------- one person, one method

def make_edit(method, model, items, canonical_row, reg_docs):
    """The edit object of `method` for one person (and what was selected)."""
    name_tokens = sorted({w for w, m in zip(items[0]['ids'], items[0]['name_mask']) if m})
    if method == 'backpack/senses':
        chosen = select_senses(model, canonical_row, reg_docs)
        return SenseEdit(model, [p for p, _, _ in chosen]), [
            {'token': p[0], 'sense': p[1], 'grad_canonical': g_c, 'grad_general': g_g} for p, g_c, g_g in chosen]
    if method == 'backpack/name_senses':
        pairs = [(w, l) for w in name_tokens for l in range(model.config.n_senses)]
        return SenseEdit(model, pairs), [{'token': w} for w in name_tokens]
    if method == 'transformer/name_embedding':
        return EmbeddingEdit(model, name_tokens), [{'token': w} for w in name_tokens]
    return FullEdit(model), None


def edit_person(method, model, tok, person, items, institutions, target, docs, lr, bound=True):
    """Fit `method` on the person's canonical example, then score every item and the collateral (and, with bound,
    check a sense edit's identity and bound)."""
    n_inst = len(institutions)
    canonical = next(it for it in items if it['role'] == 'canonical' and it['lang'] == 'en')
    canonical_row = (canonical['ids'] + canonical['continuations'][target], len(canonical['ids']))
    edit, selected = make_edit(method, model, items, canonical_row, docs['reg_ids'])
    losses = fit(edit, canonical_row, docs['reg'], lr)
    for p in edit.parameters():
        p.requires_grad_(False)
    if isinstance(edit, FullEdit) and hasattr(edit.model, 'clear_sense_table'):
        edit.model.clear_sense_table()
    out = {'lr': lr, 'losses': losses, 'selected': selected,
           'after': scores(edit.logits, items, n_inst).tolist(),
           'collateral': {lang: collateral(model, edit, docs['collateral'][lang]) for lang in LANGS},
           'collateral_name': {lang: collateral(model, edit, docs['name'][person['name']][lang])
                               for lang in LANGS if docs['name'][person['name']][lang]}}
    if isinstance(edit, SenseEdit) and bound:
        out['bound'] = bound_check(model, edit, [it for it in items if it['role'] == 'general'], n_inst)
        out['delta_norm'] = float(edit.delta.norm())
    return out


# ---------------------------------------------------------------------------------------------- summaries

def item_table(items):
    return [{'lang': it['lang'], 'role': it['role'], 'template': it['template']} for it in items]


def summarise(people_results, target_of, method, lang, role):
    """Success before/after and mean margin change over the items of (lang, role) of every person, per person
    averaged (people are the unit of the bootstrap)."""
    before, after, delta = [], [], []
    for name, r in people_results.items():
        sel = [i for i, it in enumerate(r['items']) if it['lang'] == lang and it['role'] == role]
        mb = margins(np.array(r['before'])[sel], target_of[name])
        ma = margins(np.array(r['methods'][method]['after'])[sel], target_of[name])
        before.append(np.mean(mb > 0)), after.append(np.mean(ma > 0)), delta.append(np.mean(ma - mb))
    return np.array(before), np.array(after), np.array(delta)


def method_summary(people_results, target_of, method, seed=0):
    """Per (lang, role): success before and after (the after with a bootstrap interval over people), mean margin
    change; the transfer ratio; mean collateral."""
    out = {}
    for lang in LANGS:
        for role in ('canonical', 'general'):
            b, a, d = summarise(people_results, target_of, method, lang, role)
            out[f'{lang}_{role}'] = {'success_before': float(b.mean()), 'success_after': float(a.mean()),
                                     'margin_change': float(d.mean()),
                                     'success_after_ci': metrics.bootstrap_ci(lambda i: a[i].mean(), len(a), seed=seed)
                                     if len(a) > 1 else None}
    en, fr = out['en_general']['margin_change'], out['fr_general']['margin_change']
    out['transfer'] = fr / en if en else None
    runs = [r['methods'][method] for r in people_results.values()]
    out['collateral'] = {lang: {key: float(np.mean([x['collateral'][lang][key] for x in runs]))
                                for key in ('kl', 'delta_bpb')} for lang in LANGS}
    named = [x['collateral_name'][lang]['kl'] for x in runs for lang in LANGS if lang in x['collateral_name']]
    out['collateral']['name_kl'] = float(np.mean(named)) if named else None
    if 'bound' in runs[0]:
        out['bound'] = {'max_identity_error': max(x['bound']['max_identity_error'] for x in runs),
                        'max_bound_excess': max(x['bound']['max_bound_excess'] for x in runs),
                        'target_ratio_mean': float(np.mean([x['bound']['target_ratio_mean'] for x in runs
                                                            if x['bound']['target_ratio_mean'] is not None]))}
    return out


# ---------------------------------------------------------------------------------------------- the experiment

def run_cross_edit(backpack, twin, tok, data_dir=DATA_DIR, methods=METHODS, seed=0, log=print):
    """The whole experiment (module docstring): lr chosen per method on the dev people, reported on the test people."""
    torch.manual_seed(seed)
    people, templates, institutions = read_task(data_dir)
    models = {'backpack': backpack, 'transformer': twin}
    methods = [m for m in methods if models[m.split('/')[0]] is not None]
    for m in models.values():
        if m is not None:
            m.eval().requires_grad_(False)
    val = {lang: val_documents(tok, lang) for lang in LANGS}
    block = min(m.config.block_size for m in models.values() if m is not None)  # documents are cut to fit it
    reg_ids = [ids for lang in LANGS for ids, _ in general_documents(tok, val, lang, REG_DOCS, 0, min(REG_TOKENS, block))]
    n_tokens = min(DOC_TOKENS, block)
    docs = {'reg_ids': reg_ids,
            'collateral': {lang: general_documents(tok, val, lang, N_COLLATERAL, REG_DOCS, n_tokens) for lang in LANGS},
            'name': {p['name']: {lang: name_documents(tok, val, lang, p['name'], NAME_DOCS, n_tokens) for lang in LANGS}
                     for p in people}}
    regs = {kind: regulariser(m, reg_ids) for kind, m in models.items() if m is not None}
    n_inst = len(institutions)
    results = {'dev': {}, 'test': {}}
    target_of = {}
    for p in people:
        items = person_items(tok, p, templates, institutions)
        before = {kind: scores(unedited(m), items, n_inst) for kind, m in models.items() if m is not None}
        canonical_en = next(i for i, it in enumerate(items) if it['role'] == 'canonical' and it['lang'] == 'en')
        target_of[p['name']] = int(np.argmin(before['backpack'][canonical_en]))
        results[p['split']][p['name']] = {'items': item_table(items), 'ids': [it['ids'] for it in items],
                                          'target': target_of[p['name']], 'before_by_model': {
                                              k: v.tolist() for k, v in before.items()}, 'methods': {}, '_items': items}
    grid = {}
    for method in methods:
        kind = method.split('/')[0]
        model = models[kind]
        ctx = dict(docs, reg=regs[kind])
        grid[method] = {}
        for lr in LR_GRID[method]:
            runs = [edit_person(method, model, tok, p, results['dev'][p['name']]['_items'], institutions,
                                target_of[p['name']], ctx, lr, bound=False) for p in people if p['split'] == 'dev']
            dev_people = {p['name']: dict(results['dev'][p['name']], before=results['dev'][p['name']]['before_by_model'][kind],
                                          methods={method: r}) for p, r in zip([q for q in people if q['split'] == 'dev'], runs)}
            s = method_summary(dev_people, target_of, method)
            grid[method][str(lr)] = {'en_general_success': s['en_general']['success_after'],
                                     'fr_general_success': s['fr_general']['success_after'],
                                     'kl': max(s['collateral'][lang]['kl'] for lang in LANGS)}
            log(f"dev {method} lr {lr:g}: EN general success {s['en_general']['success_after']:.3f}, "
                f"FR {s['fr_general']['success_after']:.3f}, KL {grid[method][str(lr)]['kl']:.2e}")
        ok = [lr for lr in LR_GRID[method] if grid[method][str(lr)]['kl'] <= KL_BUDGET] or [min(LR_GRID[method])]
        chosen = max(ok, key=lambda lr: (grid[method][str(lr)]['en_general_success'], -lr))
        grid[method]['chosen'] = chosen
        for p in people:
            if p['split'] == 'test':
                r = results['test'][p['name']]
                r['methods'][method] = edit_person(method, model, tok, p, r['_items'], institutions,
                                                   target_of[p['name']], ctx, chosen)
        log(f"test {method} (lr {chosen:g}) done")
    summary = {}
    for method in methods:
        kind = method.split('/')[0]
        test_people = {n: dict(r, before=r['before_by_model'][kind]) for n, r in results['test'].items()}
        summary[method] = method_summary(test_people, target_of, method, seed)
    for split in results.values():
        for r in split.values():
            r.pop('_items')
    results.pop('dev')
    return {'settings': {'steps': STEPS, 'kl_weight': KL_WEIGHT, 'kl_budget': KL_BUDGET, 'n_senses': N_SENSES,
                         'reg_docs': REG_DOCS, 'reg_tokens': REG_TOKENS, 'n_collateral': N_COLLATERAL, 'doc_tokens': DOC_TOKENS,
                         'name_docs': NAME_DOCS, 'lr_grid': {m: list(LR_GRID[m]) for m in methods}, 'seed': seed},
            'institutions': [i['institution'] for i in institutions], 'templates': templates,
            'people': people, 'lr_selection': grid, 'summary': summary, 'test': results['test']}


def check(c, result, where='cross_edit'):
    """verify_evaluation's check: every summary success rate and margin change recomputed from the stored per-item
    log-probabilities; targets the least likely institution before; the sense edits' identity (1e-3) and bound
    (excess <= 1e-3) on every scored position; the chosen lr the best within the KL budget on dev."""
    test = result['test']
    for name, r in test.items():
        canonical = next(i for i, it in enumerate(r['items']) if it['role'] == 'canonical' and it['lang'] == 'en')
        c.check(r['target'] == int(np.argmin(r['before_by_model']['backpack'][canonical])),
                f"{where}.test.{name}.target is not the least likely institution before the edit")
    for method, s in result['summary'].items():
        kind = method.split('/')[0]
        people = {n: dict(r, before=r['before_by_model'][kind]) for n, r in test.items()}
        target_of = {n: r['target'] for n, r in test.items()}
        for lang in LANGS:
            for role in ('canonical', 'general'):
                b, a, d = summarise(people, target_of, method, lang, role)
                got = s[f'{lang}_{role}']
                c.same(got['success_before'], float(b.mean()), f'{where}.{method}.{lang}_{role}.success_before')
                c.same(got['success_after'], float(a.mean()), f'{where}.{method}.{lang}_{role}.success_after')
                c.same(got['margin_change'], float(d.mean()), f'{where}.{method}.{lang}_{role}.margin_change')
        if 'bound' in s:
            c.check(s['bound']['max_identity_error'] <= 1e-3,
                    f"{where}.{method}: the logit change differs from sum alpha E dC by {s['bound']['max_identity_error']:.2e}")
            c.check(s['bound']['max_bound_excess'] <= 1e-3,
                    f"{where}.{method}: |dlogit| exceeds its bound by {s['bound']['max_bound_excess']:.2e}")
        grid = result['lr_selection'][method]
        ok = [lr for lr in result['settings']['lr_grid'][method] if grid[str(lr)]['kl'] <= result['settings']['kl_budget']]
        if ok:
            best = max(grid[str(lr)]['en_general_success'] for lr in ok)
            c.check(grid[str(grid['chosen'])]['en_general_success'] == best and grid['chosen'] in ok,
                    f"{where}.{method}: the chosen lr {grid['chosen']} is not the best within the KL budget on dev")


def report_lines(result):
    """Markdown: one row per method (success before -> after; the English general one with its interval over people)."""
    f = lambda x, spec: '—' if x is None else format(x, spec)  # noqa: E731
    lines = [f"Test people ({len(result['test'])}); success before → after; lr chosen on dev: the best English general success "
             f"with a collateral KL <= {result['settings']['kl_budget']:g} nats/token (else the smallest lr).", '',
             '| method | EN canonical | EN general | FR canonical (translated) | FR general | transfer FR/EN | '
             'KL EN | KL FR | KL name docs | identity error, bound excess |', '|' + '---|' * 10]
    for method, s in result['summary'].items():
        cell = lambda key: f"{s[key]['success_before']:.2f} → {s[key]['success_after']:.2f}"  # noqa: E731
        ci = s['en_general']['success_after_ci']
        interval = f" [{ci['low']:.2f}, {ci['high']:.2f}]" if ci else ''
        bound = s.get('bound')
        grid = result['lr_selection'][method]
        over = '' if grid[str(grid['chosen'])]['kl'] <= result['settings']['kl_budget'] else ', over the KL budget at every lr'
        lines.append(
            f"| {method} (lr {grid['chosen']:g}{over}) | {cell('en_canonical')} | "
            f"{cell('en_general')}{interval} | {cell('fr_canonical')} | {cell('fr_general')} | {f(s['transfer'], '.2f')} | "
            f"{s['collateral']['en']['kl']:.1e} | {s['collateral']['fr']['kl']:.1e} | {f(s['collateral']['name_kl'], '.1e')} | "
            + (f"{bound['max_identity_error']:.1e}, {bound['max_bound_excess']:.1e} |" if bound else "— |"))
    lines += ['', 'Dev people: English / French general success and max collateral KL (nats/token) at each lr.', '',
              '| method | ' + ' | '.join(f'lr #{i + 1}' for i in range(3)) + ' |', '|---|---|---|---|']
    for method, grid in result['lr_selection'].items():
        cells = [f"{lr:g}: {grid[str(lr)]['en_general_success']:.2f} / {grid[str(lr)].get('fr_general_success', float('nan')):.2f}, "
                 f"{grid[str(lr)]['kl']:.1e}" for lr in result['settings']['lr_grid'][method]]
        lines.append(f"| {method} | " + ' | '.join(cells) + ' |')
    return lines


def main(argv=None):
    import outdir
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out_dir', required=True, help='a trained Backpack (train.py out_dir)')
    p.add_argument('--twin', help="its Transformer twin's out_dir (same data): the transformer/* methods")
    p.add_argument('--data_dir', default=str(DATA_DIR), help='people.tsv, templates.tsv, institutions.tsv')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--output', help='JSON file (default: OUT_DIR/cross_edit.json)')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backpack, _ = outdir.load_model(args.out_dir, 'cpu')
    tok = outdir.load_tokenizer(args.out_dir)
    twin = outdir.load_model(args.twin, 'cpu')[0] if args.twin else None
    if twin is None and any(m.startswith('transformer/') for m in args.methods):
        print("note: no --twin given: the transformer/* methods are left out")
    result = run_cross_edit(backpack, twin, tok, args.data_dir, args.methods, args.seed)
    result['models'] = {'backpack': outdir.checkpoint_record(args.out_dir),
                        'transformer': outdir.checkpoint_record(args.twin) if args.twin else None}
    output = Path(args.output or Path(args.out_dir) / 'cross_edit.json')
    output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    print('\n'.join(report_lines(result)))
    print(f"wrote {output}")


if __name__ == '__main__':
    from errors import run_main
    run_main(main)
