"""monitoring.history: one row per monitor run in SQLite, and its plot."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from monitoring.history import HistoryRecord, append, plot, read

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIRST = HistoryRecord(
    run_at="2026-12-01T09:00:00+00:00",
    window_start="2026-11-30T09:00:00+00:00",
    window_end="2026-12-01T09:00:00+00:00",
    rows=1200,
    drifted_features=0,
    drifted_share=0.0,
    score_drift=0.02,
    passed=True,
    labelled_rows=0,
    average_precision=None,
    precision=None,
    recall=None,
    report="reports/monitoring/history/a-drift.html",
)
SECOND = replace(
    FIRST,
    run_at="2026-12-02T09:00:00+00:00",
    window_start="2026-12-01T09:00:00+00:00",
    window_end="2026-12-02T09:00:00+00:00",
    drifted_features=2,
    drifted_share=0.5,
    score_drift=0.3,
    passed=False,
    labelled_rows=400,
    average_precision=0.62,
    precision=0.7,
    recall=0.55,
    report="reports/monitoring/history/b-drift.html",
)


def test_no_history_yet_is_an_empty_table_with_the_columns(tmp_path: Path) -> None:
    frame = read(tmp_path / "history.db")
    assert frame.empty
    assert list(frame.columns) == list(asdict(FIRST))
    assert not (tmp_path / "history.db").exists()


def test_records_come_back_oldest_first(tmp_path: Path) -> None:
    database = tmp_path / "new" / "folder" / "history.db"
    append(database, SECOND)  # appended out of order: read sorts by run time
    append(database, FIRST)
    frame = read(database)
    assert list(frame.columns) == list(asdict(FIRST))
    assert frame["run_at"].tolist() == [
        pd.Timestamp(FIRST.run_at),
        pd.Timestamp(SECOND.run_at),
    ]
    assert isinstance(frame["window_end"].dtype, pd.DatetimeTZDtype)
    first, second = frame.to_dict("records")
    assert second["rows"] == 1200
    assert second["drifted_features"] == 2
    assert second["drifted_share"] == 0.5
    assert second["score_drift"] == 0.3
    assert second["passed"] == 0
    assert first["passed"] == 1
    assert second["labelled_rows"] == 400
    assert (second["average_precision"], second["precision"], second["recall"]) == (0.62, 0.7, 0.55)
    assert math.isnan(first["average_precision"])
    assert second["report"] == SECOND.report


@pytest.mark.parametrize("with_labels", [False, True], ids=["no-labels", "with-ap"])
def test_the_plot_is_a_png(tmp_path: Path, with_labels: bool) -> None:
    database = tmp_path / "history.db"
    append(database, FIRST)
    append(database, SECOND if with_labels else replace(SECOND, average_precision=None))
    target = tmp_path / "plots" / "history.png"
    plot(read(database), target, max_share=0.5, max_score_drift=0.1)
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    assert [path.name for path in target.parent.iterdir()] == ["history.png"]  # no temp file
