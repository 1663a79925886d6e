"""configurator.py: the seed's command lines, types, config files and errors."""
import pytest

import train
from configurator import configure

# train.py's own defaults, as its main() hands them to configure()
DEFAULTS = {k: v for k, v in vars(train).items()
            if not k.startswith('_') and k.islower() and isinstance(v, (bool, int, float, str, list))}


def run(argv):
    cfg = dict(DEFAULTS)
    configure(cfg, argv)
    return cfg


def test_seed_command_line_verbatim():
    cfg = run('--model_type backpack --config train_europarl_scratch --out_dir out/backpack_full '
              '--data_dir europarl --init_from scratch --device cuda --dtype float16 --compile'.split())
    assert cfg['compile'] is True and cfg['dtype'] == 'float16' and cfg['device'] == 'cuda'
    assert cfg['out_dir'] == 'out/backpack_full' and cfg['n_senses'] == 16 and cfg['block_size'] == 512


def test_config_file_then_overrides_whatever_the_order():
    # the baseline config sets model_type='transformer'; an explicit flag wins even when given first
    cfg = run('--model_type backpack --config train_europarl_transformer_baseline'.split())
    assert cfg['model_type'] == 'backpack'
    cfg = run('--config train_europarl_transformer_baseline'.split())
    assert cfg['model_type'] == 'transformer' and cfg['n_embd'] == 384  # inherited from the scratch table


def test_equals_form_types_and_bool_values():
    cfg = run(['--learning_rate=1e-3', '--max_iters', '7', '--batch_size=4', '--compile', 'False',
               '--bias=True', '--learning_rate', '2'])
    assert cfg['learning_rate'] == 2.0 and isinstance(cfg['learning_rate'], float)
    assert cfg['max_iters'] == 7 and cfg['batch_size'] == 4 and cfg['compile'] is False and cfg['bias'] is True


def test_config_by_path(tmp_path):
    path = tmp_path / 'mine.py'
    path.write_text("batch_size = 3\nmax_iters = 2 * 5\n")
    assert run(['--config', str(path)])['max_iters'] == 10


@pytest.mark.parametrize('argv, message', [
    (['--no_such_key', '1'], 'unknown key --no_such_key'),
    (['--max_iters', '1.5'], '--max_iters: expected int'),
    (['--batch_size', 'many'], '--batch_size: expected int'),
    (['--compile', 'maybe'], '--compile: expected bool'),
    (['--out_dir'], '--out_dir needs a value'),
    (['--config', 'does_not_exist'], 'no such config file'),
    (['positional'], 'unexpected argument'),
])
def test_errors_are_one_line_with_the_valid_keys(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and 'Valid keys:' in err and 'learning_rate' in err and '\n' not in err


def test_upper_case_constants_are_not_settings(capsys):
    cfg = dict(DEFAULTS, REPO='/repo', EVAL_FILES=('meta.json',))  # train.py's module constants
    with pytest.raises(SystemExit):
        configure(cfg, ['--REPO', 'elsewhere'])
    assert 'unknown key --REPO' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        configure(cfg, ['--help'])
    out = capsys.readouterr().out
    assert 'EVAL_FILES' not in out and 'learning_rate' in out
