"""Data specs PATH[@SPLIT][[FROM:TO]][:OBJECTIVE]: which pairs of which file, trained how."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbert.data.specs import parse_spec, read_spec
from sbert.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def test_rows_of_a_file_make_an_honest_dev_set():
    spec = parse_spec(f"{SICK}@TRAIN[1000:]:regression")
    assert (spec.split, spec.rows, spec.objective) == ("TRAIN", slice(1000, None), "regression")
    assert spec.name == "SICK_train_trial-TRAIN[1000:]"
    whole = read_spec(f"{SICK}@TRAIN").pairs
    rest = read_spec(spec).pairs
    assert len(whole) == 4439 and len(rest) == 3439 and rest == whole[1000:]
    assert read_spec(f"{SICK}@TRAIN[10:20]", limit=3).pairs == whole[10:13]


def test_a_regression_loss_name_is_an_objective_and_a_typo_is_named():
    assert parse_spec(f"{STS_DEV}:cosent").objective == "cosent"
    with pytest.raises(ConfigError, match="unknown objective 'regresion'"):
        parse_spec(f"{STS_DEV}:regresion")
    with pytest.raises(DataError, match="there are 495 in split TRIAL"):
        read_spec(f"{SICK}@TRIAL[0:1000]")


def test_a_range_reaching_one_past_the_end_or_holding_nothing_is_refused():
    assert len(read_spec(f"{SICK}@TRIAL[0:495]").pairs) == 495  # all of TRIAL
    with pytest.raises(DataError, match=r"up to 496; there are 495 in split TRIAL"):
        read_spec(f"{SICK}@TRIAL[0:496]")
    with pytest.raises(DataError, match=r"no pairs in SICK_train_trial-TRIAL\[5:5\]"):
        read_spec(f"{SICK}@TRIAL[5:5]")
    with pytest.raises(DataError, match=r"no pairs in SICK_train_trial-TRIAL\[495:\]"):
        read_spec(f"{SICK}@TRIAL[495:]")
