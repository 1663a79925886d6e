"""
The report of the interventions' results: the section of evaluation_report.md (report_lines) and the lines
verify_evaluation.py prints beside the model-vs-baseline gaps (intervention_lines).
"""


def report_lines(section):
    """Markdown lines of the interventions section of evaluation_report.md."""
    lines = ['## Sense interventions', '']
    if 'gender' in section:
        g = section['gender']
        lines += ['### Gender bias ratio (1 = unbiased), test professions', '',
                  '| language | method | choice (on train) | before | after | cost |', '|---|---|---|---:|---:|---|']
        for lang, e in g['languages'].items():
            for method, m in e['methods'].items():
                choice = f"sense {m['sense']} × {m['scale']}" if method == 'senses' else f"keep {m['keep']}"
                lines.append(f"| {lang.upper()} | {method} | {choice} | {e['before']['test']:.3f} | {m['after']:.3f} | "
                             f"{_cost(m['cost'])} |")
        t = g['transfer_en_to_fr']
        for method, m in t['methods'].items():
            lines.append(f"| EN→FR transfer | {method} | learned on EN | {t['before']:.3f} | {m['after']:.3f} | "
                         f"{_cost(m['cost'])} |")
        lines.append('')
    if 'topic' in section:
        t = section['topic']
        lines += ['### Topic control (share of generations with a counted topic word / perplexity under the unedited '
                  'model)', '', "Each topic's words are cut in two: every method steers with one half, and only the "
                  'other half is counted, for every method and the unedited model.', '']
        for lang, e in t['languages'].items():
            head = ' | '.join(f'strength {b}' for b in t['strengths'])
            lines += [f"{lang.upper()} prompts, {e['max_new_tokens']} new tokens; unedited perplexity "
                      f"{e['unedited']['ppl']:.1f}", '', f'| method | topic | unedited | {head} |',
                      '|---|---|---:|' + '---:|' * len(t['strengths'])]
            for method, by_topic in e['methods'].items():
                for topic, curve in by_topic.items():
                    cells = ' | '.join(f"{p['share']:.2f} / {p['ppl']:.0f}" for p in curve)
                    lines.append(f"| {method} | {topic} | {e['unedited']['topics'][topic]['share']:.2f} | {cells} |")
            lines += [''] + [f"- {topic}: steered with *{' '.join(w['steering_words']) or '(no single-token word)'}*; "
                             f"counted *{' '.join(w['counted_half'])}*" for topic, w in e['words'].items()] + ['']
    if 'false_friends' in section:
        f = section['false_friends']
        lines += ['### False friends vs cognates (one-sided permutation tests, cognates > false friends)', '']
        if 'skipped' in f:
            lines += [f"skipped: {f['skipped']}", '']
        else:
            lines += [f"p: raw; p Holm: Holm-adjusted over the {len(f['holm_family'])} tests of the table (family-wise "
                      "error rate)", '', '| pairs | measure | cognates | false friends | p | p Holm |',
                      '|---|---|---:|---:|---:|---:|']
            for subset, tests in f['tests'].items():
                if 'skipped' in tests:
                    lines.append(f"| {subset} | skipped: {tests['skipped']} | | | | |")
                    continue
                lines += [f"| {subset} | {name} | {r['cognates_mean']:.3f} (n={r['n_cognates']}) | "
                          f"{r['false_friends_mean']:.3f} (n={r['n_false_friends']}) | {r['p_value']:.4f} | "
                          f"{r['p_holm']:.4f} |" for name, r in tests.items()]
            lines += ['', f"controlled: both words seen ≥ {f['min_count']} times in training and no BPE piece in "
                          f"common; median training counts {f['median_train_count']}", '']
            for p in [p for p in f['per_pair'] if p['group'] == 'false_friends' and 'divergent' in p][:8]:
                d = p['divergent'][0]
                lines.append(f"- {p['en']} / {p['fr']}: sense {d['sense']} (cos {d['cosine']:.2f}) predicts "
                             f"*{', '.join(d['en_top'])}* vs *{', '.join(d['fr_top'])}*")
            lines.append('')
    return lines


def _cost(c):
    """A table cell: an edit's val cost (cost.val_cost), or that the val split never holds its words."""
    if not c['documents_scored']:
        return 'no val occurrence'
    return (f"Δbits/byte {c['bpb_after'] - c['bpb_before']:+.4f} on the {c['documents_scored']} val documents with "
            f"an occurrence ({c['edited_positions']} edited tokens); val file {c['delta_bpb_val']:+.5f}")


def intervention_lines(section):
    """One line per intervention result, next to its baseline (printed; not part of the banner's gaps)."""
    lines = []
    for lang, e in section.get('gender', {}).get('languages', {}).items():
        after = ', '.join(f"{m} {r['after']:.3f}" for m, r in e['methods'].items())
        lines.append(f"gender bias ratio {lang.upper()} (test professions): {e['before']['test']:.3f} before; after {after}")
    if 'gender' in section:
        t = section['gender']['transfer_en_to_fr']
        lines.append(f"gender bias ratio EN->FR transfer: {t['before']:.3f} before; after "
                     + ', '.join(f"{m} {r['after']:.3f}" for m, r in t['methods'].items()))
    for lang, e in section.get('topic', {}).get('languages', {}).items():
        for method, by_topic in e['methods'].items():
            top = {topic: curve[-1] for topic, curve in by_topic.items()}
            lines.append(f"topic {lang.upper()} {method}, strongest setting: " + '; '.join(
                f"{topic} share {p['share']:.2f} (unedited {e['unedited']['topics'][topic]['share']:.2f}), ppl {p['ppl']:.1f}"
                for topic, p in top.items()) + f" (unedited ppl {e['unedited']['ppl']:.1f})")
    for subset, tests in section.get('false_friends', {}).get('tests', {}).items():
        if 'skipped' not in tests:
            lines.append(f"false friends vs cognates ({subset}): " + '; '.join(
                f"{name} {r['false_friends_mean']:.3f} vs {r['cognates_mean']:.3f}, p {r['p_value']:.3g} "
                f"(Holm {r['p_holm']:.3g})" for name, r in tests.items()))
    return lines
