"""
Command-line configuration for train.py, nanoGPT style but checked.

train.py defines its settings as plain globals with defaults, then calls
    configure(globals(), sys.argv[1:])
which applies, in this order:
  1. every `--config NAME` (-> config/NAME.py) or `--config path/to/file.py`, exec'd in a scratch
     namespace whose keys are then checked like command-line keys;
  2. every `--key value`, `--key=value` or bare boolean `--flag`, in the order given.
Config files come first whatever their position on the line, so that
`python train.py --model_type backpack --config train_europarl_scratch` keeps model_type=backpack
even if the config file names another.

Values are parsed as Python literals when possible (3e-4, 512, True, 'x'), else kept as strings,
and must match the type of the default (an int is accepted where a float is expected). An unknown
key or a wrong type is one line on stderr naming the valid keys, and exit status 2.
"""
import ast
import os
import sys

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config')


class ConfigError(Exception):
    pass


FLAG = object()  # a bare `--flag` with no value: only valid for boolean keys


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as `--device cuda`


def _coerce(key, value, default):
    """Return `value` converted to the type of `default`, or raise ConfigError."""
    if value is FLAG:
        if isinstance(default, bool):
            return True
        raise ConfigError(f"--{key} needs a value (default {default!r})")
    if isinstance(default, bool):  # before int: bool is a subclass of int
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false'):
            return value.lower() == 'true'
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return str(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise ConfigError(f"--{key}: expected {type(default).__name__}, got {value!r}")


def _config_path(name):
    path = name if (name.endswith('.py') or os.sep in name) else os.path.join(CONFIG_DIR, name + '.py')
    if not os.path.isfile(path):
        known = sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith('.py')) if os.path.isdir(CONFIG_DIR) else []
        raise ConfigError(f"--config {name}: no such config file ({path}); known configs: {', '.join(known)}")
    return path


def split_args(argv):
    """Split argv into (config file paths, [(key, raw string or FLAG)]), keeping the order given."""
    configs, pairs = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith('--') or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}: use --key value, --key=value or --flag")
        key, eq, raw = arg[2:].partition('=')
        if not eq:
            # `--key value` unless the next token is another option: then a bare boolean flag.
            if i + 1 < len(argv) and not argv[i + 1].startswith('--'):
                raw, i = argv[i + 1], i + 1
            else:
                raw = FLAG
        if key == 'config':
            if raw is FLAG:
                raise ConfigError("--config needs a name (config/NAME.py) or a path")
            configs.append(_config_path(raw))
        else:
            pairs.append((key, raw))
        i += 1
    return configs, pairs


def configure(cfg, argv, describe=None):
    """Apply config files and overrides from `argv` onto the dict `cfg` (train.py's globals).

    Only keys already in `cfg` (not UPPER_CASE) whose default is a bool/int/float/str/list/tuple may be set. Returns the
    list of keys that were set. Exits with status 2 and one line on stderr on any error.
    """
    settable = {k for k, v in cfg.items()  # UPPER_CASE names are the script's constants, not settings
                if not k.startswith('_') and not k.isupper() and isinstance(v, (bool, int, float, str, list, tuple))}
    if argv in (['--help'], ['-h']):
        print(describe(sorted(settable)) if describe else ' '.join(sorted(settable)))
        sys.exit(0)
    try:
        configs, pairs = split_args(argv)
        updates = []
        for path in configs:
            scope = {'__file__': path}  # a config may exec another one next to it
            exec(open(path).read(), scope)
            updates += [(k, v) for k, v in scope.items() if not k.startswith('_') and k != '__builtins__'
                        and not callable(v) and not isinstance(v, type(sys))]
        updates += [(k, v if v is FLAG else _parse_value(v)) for k, v in pairs]
        changed = []
        for key, value in updates:
            if key not in settable:
                raise ConfigError(f"unknown key --{key}")
            cfg[key] = _coerce(key, value, cfg[key])
            changed.append(key)
        return changed
    except ConfigError as e:
        print(f"error: {e}. Valid keys: {', '.join(sorted(settable))}", file=sys.stderr)
        sys.exit(2)
