"""monitoring.labels: the "labels arrive later" file the monitor joins on request id."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from monitoring.labels import LABEL_COLUMNS, join_labels, read_labels
from monitoring.prediction_log import MonitorInputError

ARRIVES = datetime(2026, 12, 7, 12, tzinfo=UTC)


def labels(**changes: list[object]) -> pd.DataFrame:
    columns: dict[str, list[object]] = {
        "request_id": ["a", "a", "b"],
        "row_index": [0, 1, 0],
        "label": [0, 1, 1],
        "available_at": [ARRIVES, ARRIVES, ARRIVES],
    }
    return pd.DataFrame(columns | changes)


def written(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_parquet(path, index=False)
    return path


def test_no_file_yet_means_no_labels(tmp_path: Path) -> None:
    frame = read_labels(tmp_path / "absent.parquet")
    assert frame.empty
    assert list(frame.columns) == LABEL_COLUMNS
    assert isinstance(frame["available_at"].dtype, pd.DatetimeTZDtype)


def test_labels_come_back_typed_with_extra_columns_dropped(tmp_path: Path) -> None:
    path = written(tmp_path / "labels.parquet", labels(fraud_scenario=[0, 1, 2]))
    frame = read_labels(path)
    assert list(frame.columns) == LABEL_COLUMNS
    assert frame["request_id"].tolist() == ["a", "a", "b"]
    assert frame["row_index"].tolist() == [0, 1, 0]
    assert frame["label"].tolist() == [0, 1, 1]
    assert frame["label"].dtype == "int64"
    assert frame["available_at"].tolist() == [pd.Timestamp(ARRIVES)] * 3


def test_times_without_a_zone_are_taken_as_utc(tmp_path: Path) -> None:
    naive = ARRIVES.replace(tzinfo=None)
    frame = read_labels(written(tmp_path / "labels.parquet", labels(available_at=[naive] * 3)))
    assert frame["available_at"].tolist() == [pd.Timestamp(ARRIVES)] * 3


def test_a_row_labelled_twice_keeps_the_last_label(tmp_path: Path) -> None:
    later = labels(
        request_id=["a", "b", "a"],
        row_index=[0, 0, 0],
        label=[0, 1, 1],
        available_at=[ARRIVES] * 3,
    )
    frame = read_labels(written(tmp_path / "labels.parquet", later))
    assert len(frame) == 2
    by_row = frame.set_index(["request_id", "row_index"])["label"].to_dict()
    assert by_row == {("a", 0): 1, ("b", 0): 1}


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = written(tmp_path / "labels.parquet", labels().drop(columns="row_index"))
    with pytest.raises(MonitorInputError, match=r"lacks column\(s\) \['row_index'\]"):
        read_labels(path)


@pytest.mark.parametrize("bad", [2, -1], ids=["two", "minus-one"])
def test_a_label_other_than_0_or_1_is_refused(tmp_path: Path, bad: int) -> None:
    path = written(tmp_path / "labels.parquet", labels(label=[0, bad, 1]))
    with pytest.raises(MonitorInputError, match="every label must be 0 or 1"):
        read_labels(path)


def test_a_missing_label_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path / "labels.parquet", labels(label=[0.0, None, 1.0]))
    with pytest.raises(MonitorInputError, match=r"\[.label.\] have empty values"):
        read_labels(path)


def test_a_damaged_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(MonitorInputError, match=r"not a readable labels file .*make replay"):
        read_labels(path)


def test_join_keeps_labelled_rows_only_under_the_target_name() -> None:
    logged = pd.DataFrame(
        {"request_id": ["a", "a", "b", "c"], "row_index": [0, 1, 0, 0], "amount": [1, 2, 3, 4]}
    )
    joined = join_labels(logged, labels(), "fraud")
    assert joined[["request_id", "row_index", "amount", "fraud"]].values.tolist() == [
        ["a", 0, 1, 0],
        ["a", 1, 2, 1],
        ["b", 0, 3, 1],
    ]
    assert "available_at" in joined.columns
    assert "label" not in joined.columns


def test_a_missing_row_index_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path / "labels.parquet", labels(row_index=[0, None, 0]))
    with pytest.raises(MonitorInputError, match="row_index"):
        read_labels(path)


def test_an_available_at_that_is_not_a_time_is_refused(tmp_path: Path) -> None:
    path = written(
        tmp_path / "labels.parquet",
        labels(available_at=["soon", ARRIVES.isoformat(), ARRIVES.isoformat()]),
    )
    with pytest.raises(MonitorInputError, match="available_at"):
        read_labels(path)
