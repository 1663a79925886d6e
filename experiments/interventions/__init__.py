"""
Sense interventions, measured: what a Backpack's log-linear senses let one edit, in English and French,
each with its effect, its cost, and a baseline that the Transformer twin can do too.

    python -m experiments.interventions --out_dir out/tiny_backpack --experiment all --output interventions.json
    python -m experiments.interventions --out_dir out/tiny_transformer --experiment gender   # the twin's baseline

One module per experiment, each with the check of its results that verify_evaluation.py runs (check):
gender.py (the bias ratio), topic.py (steered generation), false_friends.py (false friends vs cognates).
They share edits.py (the edits, through the model's hooks), words.py (the word lists, and their words'
tokens in a text) and cost.py (an edit's cost on the val split); report.py writes the report, run.py runs
them (run_interventions: one JSON-serialisable dict per experiment, which run_full_evaluation.py puts under
'interventions') and is the command line.
"""
import system  # noqa: F401  (before torch: OMP_WAIT_POLICY)

from experiments.interventions.cost import val_cost  # noqa: F401
from experiments.interventions.edits import (  # noqa: F401
    Projection, SenseScale, continuation_logprobs, edited_hidden, edited_logits, edited_loss, position_senses,
    scored_rows, sense_scale_grid)
from experiments.interventions.false_friends import (  # noqa: F401
    MIN_COUNT, false_friend_experiment, holm, load_pairs, pair_tests, permutation_greater)
from experiments.interventions.gender import (  # noqa: F401
    SCALES, GenderItems, bias_ratio, gender_experiment, load_gender_data)
from experiments.interventions.report import intervention_lines, report_lines  # noqa: F401
from experiments.interventions.run import (  # noqa: F401
    DATA_FILES, EXPERIMENTS, MODULES, main, run_interventions, run_name)
from experiments.interventions.topic import (  # noqa: F401
    STEM_PREFIX, STRENGTHS, load_topic_data, split_topic_words, topic_experiment, topic_stats)
from experiments.interventions.words import DATA_DIR, LANGUAGES, encode_marked, read_tsv, word_pattern  # noqa: F401
