"""The monitor's memory: one row per run in SQLite, and a plot of the rows over time."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    run_at TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    rows INTEGER NOT NULL,
    drifted_features INTEGER NOT NULL,
    drifted_share REAL NOT NULL,
    score_drift REAL NOT NULL,
    passed INTEGER NOT NULL,
    labelled_rows INTEGER NOT NULL,
    average_precision REAL,
    precision REAL,
    recall REAL,
    report TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class HistoryRecord:
    run_at: str
    window_start: str
    window_end: str
    rows: int
    drifted_features: int
    drifted_share: float
    score_drift: float
    passed: bool
    labelled_rows: int
    average_precision: float | None
    precision: float | None
    recall: float | None
    report: str


def append(path: Path, record: HistoryRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = asdict(record)
    names = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(_CREATE)
        connection.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", values)


def read(path: Path) -> pd.DataFrame:
    """Every run so far, oldest first (an empty table if there is no history yet)."""
    if not path.is_file():
        return pd.DataFrame(columns=list(HistoryRecord.__dataclass_fields__))
    with closing(sqlite3.connect(path)) as connection:
        connection.execute(_CREATE)
        frame = pd.read_sql_query("SELECT * FROM runs ORDER BY run_at", connection)
    for column in ("run_at", "window_start", "window_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def plot(history: pd.DataFrame, target: Path, *, max_share: float, max_score_drift: float) -> None:
    """Drifted share and score drift per run (with the gate's limits), and AP once known."""
    figure = Figure(figsize=(9, 6), layout="constrained")
    drift_axis, quality_axis = figure.subplots(2, 1, sharex=True)
    when = history["window_end"]
    drift_axis.plot(when, history["drifted_share"], marker="o", label="share of drifted features")
    drift_axis.plot(when, history["score_drift"], marker="s", label="score drift")
    drift_axis.axhline(max_share, color="C0", linestyle="--", linewidth=1, label="gate: share")
    drift_axis.axhline(
        max_score_drift, color="C1", linestyle="--", linewidth=1, label="gate: score drift"
    )
    failed = history[~history["passed"].astype(bool)]
    drift_axis.scatter(
        failed["window_end"], failed["drifted_share"], color="red", zorder=3, label="gate failed"
    )
    drift_axis.set_ylabel("drift")
    drift_axis.legend(loc="upper left", fontsize="small")
    drift_axis.set_title("Drift monitor, one point per run (window end)")
    known = history.dropna(subset=["average_precision"])
    quality_axis.plot(known["window_end"], known["average_precision"], marker="o", label="AP")
    quality_axis.plot(known["window_end"], known["precision"], marker=".", label="precision")
    quality_axis.plot(known["window_end"], known["recall"], marker=".", label="recall")
    quality_axis.set_ylim(0, 1)
    quality_axis.set_ylabel("on labelled rows")
    quality_axis.legend(loc="lower left", fontsize="small")
    if known.empty:
        quality_axis.text(0.5, 0.5, "no labels yet", ha="center", transform=quality_axis.transAxes)
    figure.autofmt_xdate()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    figure.savefig(temporary, dpi=100, format="png")
    temporary.replace(target)
