"""The data of the europarl_test_en / europarl_test_fr lm-evaluation-harness tasks: the held-out test sentences
of an out_dir (test.en / test.fr, one sentence a line, as train.py copies them from its data dir), found from any
working directory.

lm_eval calls the task's custom_dataset as custom_dataset(**metadata), where metadata merges the task's own
(version), --model_args (pretrained, prefix_token_id, ...) and --metadata (out_dir=DIR: relative to the working
directory, or absolute). A mistake is one line on stderr and exit status 1, as this repository's scripts fail
(errors.py): lm_eval's CLI has no handler that would turn an exception into one line, so it is a SystemExit.

When `pretrained` is one of our exports (export_hf.py writes the out_dir's meta.json beside the weights),
prefix_token_id must be the id of the sentence's language tag: lm_eval scores log p(sentence tokens | prefix),
and without it the prefix is the tokenizer's BOS (our EOS), a context no training document starts with."""
import json
from pathlib import Path

import datasets


def test_en(**metadata):
    return load('en', metadata)


def test_fr(**metadata):
    return load('fr', metadata)


def fail(message):
    raise SystemExit(f"error: {message}")


def load(lang, metadata):
    """{'test': Dataset of {'text': line}} for every line of out_dir/test.{lang} (UTF-8, split on "\\n")."""
    task, name = f'europarl_test_{lang}', f'test.{lang}'
    out_dir = metadata.get('out_dir')
    if not out_dir:
        fail(f"{task} needs the out_dir whose {name} it scores: add --metadata out_dir=DIR (a training out_dir or "
             f"prepared data dir, relative to the working directory or absolute)")
    path = Path(out_dir).expanduser().resolve() / name
    if not path.is_file():
        fail(f"{task}: {path} not found (--metadata out_dir={out_dir}): give a training out_dir or a prepared data "
             f"dir, which hold {name}")
    check_prefix(task, lang, metadata)
    lines = path.read_text(encoding='utf-8').split('\n')
    if lines[-1] == '':
        lines.pop()
    if not lines:
        fail(f"{task}: {path} is empty")
    return {'test': datasets.Dataset.from_dict({'text': lines})}


def check_prefix(task, lang, metadata):
    """prefix_token_id must be meta.json's special_ids[lang] of an export of ours; other models are not checked."""
    pretrained = metadata.get('pretrained')
    meta = Path(pretrained).expanduser() / 'meta.json' if isinstance(pretrained, str) else None
    if meta is None or not meta.is_file():
        return
    tag = json.loads(meta.read_text(encoding='utf-8'))['special_ids'][lang]
    given = metadata.get('prefix_token_id')
    if given is None:
        fail(f"{task}: add prefix_token_id={tag} to --model_args (the <{lang}> tag of {pretrained}/meta.json), so "
             f"that each sentence is conditioned on its tag as in training")
    if int(given) != tag:
        fail(f"{task}: prefix_token_id={given} is not the <{lang}> tag of {pretrained} (meta.json: {tag}): pass "
             f"prefix_token_id={tag}")
