"""The README as a user meets it: its marked code blocks run as written, and its generated tables equal what
tools/readme_tables.py makes from the committed results.

A code block runs here when the line before its fence is `<!-- runs in tests/test_readme.py -->`. It runs
from a directory laid out like a user's checkout after quickstart.sh: the repository's files, `out/`
holding the tiny trained models (copies of the session fixtures), and no `../shared` beside it (a new user's
clone has none: every marked block must run on the bundled data); with `python` on PATH being this
interpreter. A bash block runs command by command (continuation lines
joined); a python block runs as one script."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

MARK = '<!-- runs in tests/test_readme.py -->'
BLOCK = re.compile(re.escape(MARK) + r'\n```(bash|python)\n(.*?)\n```', re.S)


def marked_blocks():
    return BLOCK.findall((REPO / 'README.md').read_text(encoding='utf-8'))


def bash_commands(code):
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ''
    for line in code.splitlines():
        current += line[:-1] + ' ' if line.endswith('\\') else line
        if not line.endswith('\\'):
            if current.strip() and not current.lstrip().startswith('#'):
                commands.append(current.strip())
            current = ''
    return commands


@pytest.fixture(scope='module')
def checkout(tmp_path_factory, tiny_backpack_dir, tiny_transformer_dir):
    """A user's fresh clone after the quick start: the repository's entries (symlinked) and out/ with copies of
    the tiny models; nothing beside it (no ../shared)."""
    root = tmp_path_factory.mktemp('user')
    repo = root / 'repo'
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ('out', 'results', '.git', '.venv', 'prompt.txt'):
            (repo / entry.name).symlink_to(entry)
    shutil.copytree(tiny_backpack_dir, repo / 'out' / 'tiny_backpack')
    shutil.copytree(tiny_transformer_dir, repo / 'out' / 'tiny_transformer')
    assert not (root / 'shared').exists()
    return repo


def run_as_user(args, cwd):
    env = {**os.environ, 'PATH': f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_readme_marks_the_blocks_users_run_first():
    kinds = [kind for kind, _ in marked_blocks()]
    assert kinds.count('python') >= 1 and kinds.count('bash') >= 2, kinds


@pytest.mark.parametrize('index', range(len(marked_blocks())))
def test_marked_readme_block_runs_as_written(index, checkout):
    kind, code = marked_blocks()[index]
    assert '../shared' not in code, 'a marked block must run on a clone without ../shared'
    if kind == 'python':
        result = run_as_user([sys.executable, '-c', code], checkout)
        assert result.returncode == 0, code + '\n' + result.stderr[-3000:]
        return
    for command in bash_commands(code):
        result = run_as_user(['bash', '-c', command], checkout)
        assert result.returncode == 0, command + '\n' + result.stdout[-2000:] + result.stderr[-3000:]


def test_readme_tables_equal_what_the_committed_results_give():
    result = subprocess.run([sys.executable, 'tools/readme_tables.py', '--check'], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_hand_edited_number_in_a_generated_table_is_rewritten():
    sys.path.insert(0, str(REPO / 'tools'))
    import readme_tables
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    generated = readme_tables.render(text)
    assert generated == text
    edited = re.sub(r'(\| PPL val EN / FR \| )(\d)', lambda m: m.group(1) + str((int(m.group(2)) + 1) % 10), text, 1)
    assert edited != text and readme_tables.render(edited) == text  # the number is rewritten, not kept
