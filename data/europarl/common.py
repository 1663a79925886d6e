"""What the steps of prepare.py (and segregate_languages.py) share: the repository root on sys.path,
PrepareError with its helpers for one-line messages (one_line, require_file), the argument parser that
fails in one line, and require_hub, the fast check that the Hugging Face hub can be reached."""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: errors.py and tokenizer.py live at the repo root
from errors import UserError  # noqa: E402


class PrepareError(UserError):
    """Bad input or environment: reported as one line on stderr, exit status 1, nothing written."""


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def require_file(path):
    if not path.is_file():
        raise PrepareError(f"missing file {path}")
    return path


def require_hub(what, hint):
    """Fail fast, in one line, when the hub cannot be reached: the HF clients would otherwise retry
    for half a minute and print a stack of warnings. With HF_HUB_OFFLINE=1 only the cache is used."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session
    if constants.HF_HUB_OFFLINE:
        return
    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:  # DNS, refused connection, proxy, timeout: all mean "unreachable"
        raise PrepareError(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} for {what} "
                           f"({one_line(error)}); {hint}")


def one_line(error):
    """An exception as "Type: first line of its message", for a one-line error."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
