"""tools/bench.py runs every part end to end (at a tiny size) and reports each measured variant
as it goes."""
import subprocess
import sys

from conftest import REPO


def test_bench_quick_runs_every_part_and_prints_each_variant():
    args = ['--quick', '--device', 'cpu', '--vocab_size', '512', '--tokens', '64', '--seq_lens', '16', '--iters', '1',
            '--gen_prompt', '4', '--gen_tokens', '4', '--gen_batches', '1', '2']
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'bench.py'), *args], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    progress = result.stderr.splitlines()
    for variant in ('transformer', 'backpack', 'backpack explicit-alpha', 'backpack shared-dropout', 'backpack plain'):
        assert any(line.startswith(f'T=16 {variant}: ') and 's/step' in line for line in progress), variant
    for model in ('BackpackLM', 'StandardTransformerLM'):
        for batch in (1, 2):
            assert any(line.startswith(f'generation {model} batch {batch}: cached') for line in progress)
    table = result.stdout
    assert '| tokenizer | vocab |' in table and '| 16 | 4 |' in table  # T 16, B = 64 // 16
    assert '4-token prompt + 4 greedy tokens' in table and table.count('| BackpackLM |') == 2
