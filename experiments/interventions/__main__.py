"""`python -m experiments.interventions ...` (or `python experiments/interventions ...`): run.py's command line."""
import sys
from pathlib import Path

if not __package__:  # run by its path: the repository on sys.path, in place of this folder
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from errors import run_main  # noqa: E402
from experiments.interventions.run import main  # noqa: E402

if __name__ == '__main__':
    run_main(main)
