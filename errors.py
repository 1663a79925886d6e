"""
How a mistake the user can fix reaches them: one line on stderr, a non-zero exit status, no traceback,
and nothing half-written left behind.

Library code raises UserError (or a subclass) with a message that says what is wrong and what to do;
each script's entry point runs its main() through `run_main`, the one place that turns such an error
into that line. Anything else is a bug and keeps its traceback.

    if __name__ == '__main__':
        run_main(main)
"""
import math
import os
import re
import sys


class UserError(Exception):
    """A problem with the user's input (a missing or corrupt file, a bad option, an absent device)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user must provide (or create first) is not there. Also a
    FileNotFoundError, so that `except FileNotFoundError` in callers' snippets keeps working."""


def run_main(main, *args, **kwargs):
    """Call main(); a UserError becomes `error: <message>` on stderr and exit status 1. Under torchrun
    every process meets the same error: only rank 0 says it."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        if os.environ.get('RANK', '0') == '0':
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


class DataError(UserError, ValueError):
    """A user-supplied data or results file is malformed. Also a ValueError, so that callers'
    `except ValueError` (and the readers' documented contract) keeps working."""


class OutOfSpaceError(UserError, OSError):
    """The disk (or quota) filled up while a file was written; the file it was to replace is left whole.
    Also an OSError, as the failure it stands for."""


_RULE = re.compile(r'(>=|>) (\S+)|([\[(])(\S+), (\S+)([\])])')


def check_range(option, value, rule, none=False):
    """Raise UserError unless the number `value` of --option is finite and within `rule`: '>= 1', '> 0',
    '[0, 1)' (the brackets of interval notation). none=True lets None through (a setting that can be
    off). The one line says the value given and the range expected."""
    if value is None and none:
        return
    match = _RULE.fullmatch(rule)
    if match is None:
        raise ValueError(f"bad rule {rule!r}")
    op, low, open_low, low2, high, close = match.groups()
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if number and op:
        number = value > float(low) if op == '>' else value >= float(low)
    elif number:
        low, high = float(low2), float(high)
        number = (value > low if open_low == '(' else value >= low) and (value < high if close == ')' else value <= high)
    if not number:
        what = 'an integer' if isinstance(value, int) and not isinstance(value, bool) else 'a number'
        expected = 'a positive integer' if rule == '>= 1' and what == 'an integer' else \
            f"{what} {rule}" if op else f"{what} in {rule}"
        raise UserError(f"--{option} {value!r}: expected {expected}" + (" or None" if none else ''))


def check_ranges(values, rules):
    """check_range on each {option: rule} of `rules`, the values from the dict `values` (e.g. globals())."""
    for option, rule in rules.items():
        check_range(option, values[option], rule)


def warn(message):
    """A one-line warning on stderr: something was done that the user may not expect (a prompt
    cropped to the context, a repeated greedy sample); the run goes on."""
    print(f"warning: {message}", file=sys.stderr)


DEVICE_HELP = "use auto, cpu, cuda, cuda:N or mps"


def resolve_device(name):
    """Check a --device value before any work: 'cpu', 'cuda', 'cuda:N' or 'mps', available in this
    torch build, or 'auto' (cuda, else mps, else cpu). Returns the device name to use; anything else
    is a UserError saying what to use."""
    import torch  # here, so that importing errors stays free of torch
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else ('mps' if torch.backends.mps.is_available() else 'cpu')
    kind, _, index = str(name).partition(':')
    if kind not in ('cpu', 'cuda', 'mps') or (index and not (kind == 'cuda' and index.isdigit())):
        raise UserError(f"unknown --device {name!r}: {DEVICE_HELP}")
    if kind == 'cuda':
        if not torch.cuda.is_available():
            build = 'a CPU-only torch build' if torch.version.cuda is None else 'no visible CUDA device'
            raise UserError(f"--device {name} but this machine has {build} (torch {torch.__version__}): "
                            "use --device cpu, or install a CUDA build of torch")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {name} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    if kind == 'mps' and not torch.backends.mps.is_available():
        raise UserError("--device mps but MPS is not available on this machine: use --device cpu")
    return name
