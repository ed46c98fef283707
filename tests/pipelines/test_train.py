"""The train stage's own reading of its input for the Dask engine (pipelines/train.py):
the labels alone, in the file's order, which must be time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.errors import DataValidationError, MissingInputError, SchemaMismatchError
from fraud_detection.io.files import write_parquet
from fraud_detection.workspace import TRAIN_SET
from pipelines.train import load_labels
from tests.model_helpers import MIXED_SCHEMA

SCHEMA = MIXED_SCHEMA.model_copy(update={"time_column": "when"})


def _write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame) -> None:
    monkeypatch.chdir(tmp_path)
    write_parquet(frame, TRAIN_SET)


def _frame(labels: list[int], hours: list[int]) -> pd.DataFrame:
    when = pd.Timestamp("2018-07-25") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame({"amount": 1.0, "score": 0.0, "channel": "web", "label": labels}).assign(
        when=when
    )


def test_the_labels_come_in_the_file_s_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, monkeypatch, _frame([0, 1, 0, 0, 1], [0, 1, 1, 2, 5]))
    labels = load_labels(SCHEMA)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 0, 0, 1]


def test_a_training_set_out_of_time_order_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dask engine's row numbers are the file's order: folds over rows out of time
    order would train on the future."""
    _write(tmp_path, monkeypatch, _frame([0, 1, 0], [0, 5, 2]))
    with pytest.raises(DataValidationError, match=r"not in time order \(when\).*dvc repro split"):
        load_labels(SCHEMA)


def test_without_a_time_column_any_order_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, monkeypatch, _frame([1, 0, 0], [9, 0, 4]))
    assert load_labels(MIXED_SCHEMA).tolist() == [1, 0, 0]


def test_a_target_that_is_not_zero_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, monkeypatch, _frame([0, 2, 1], [0, 1, 2]))
    with pytest.raises(SchemaMismatchError, match=r"target 'label' must be 0/1.*'2'"):
        load_labels(SCHEMA)


def test_a_missing_training_set_names_the_stage_that_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match=r"split"):
        load_labels(SCHEMA)
