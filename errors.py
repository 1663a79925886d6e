"""
How a mistake the user can fix reaches them: one line on stderr, a non-zero exit status, no traceback,
and nothing half-written left behind.

Library code raises UserError (or a subclass) with a message that says what is wrong and what to do;
each script's entry point runs its main() through `run_main`, the one place that turns such an error
into that line. Anything else is a bug and keeps its traceback.

    if __name__ == '__main__':
        run_main(main)
"""
import sys


class UserError(Exception):
    """A problem with the user's input (a missing or corrupt file, a bad option, an absent device)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user must provide (or create first) is not there. Also a
    FileNotFoundError, so that `except FileNotFoundError` in callers' snippets keeps working."""


def run_main(main, *args, **kwargs):
    """Call main(); a UserError becomes `error: <message>` on stderr and exit status 1."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
