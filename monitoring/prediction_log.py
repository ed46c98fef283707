"""Reading the service's prediction log (SQLite, written by serving/prediction_log.py).

The monitor reads only this file and the reference data: it never imports the service.
The table layout it relies on is documented in docs/serving.md ("The prediction log").
Rows logged under another feature schema than the one the monitor compares against are
left out and counted; rows whose features cannot be read are skipped and counted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.schema import FeatureSchema


class MonitorInputError(RuntimeError):
    """The log cannot be used for this run; the message says what is wrong and the fix."""


@dataclass(frozen=True)
class LoggedPredictions:
    """The rows of a time window that match the schema, as a DataFrame with one column per
    feature, plus ``logged_at``, ``request_id``, ``row_index``, ``model_version``,
    ``probability`` and ``is_fraud``."""

    frame: pd.DataFrame
    rows_in_window: int
    other_schema_rows: int
    unreadable_rows: int
    model_versions: list[str]


_COLUMNS = (
    "logged_at, request_id, row_index, model_name, model_version, schema_fingerprint, "
    "features, probability, is_fraud"
)


def read_predictions(
    path: Path,
    schema: FeatureSchema,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> LoggedPredictions:
    """Rows logged in ``[start, end)`` (UTC; open ends allowed) under ``schema``."""
    rows = _select(path, start, end)
    matching = [row for row in rows if row[5] == schema.fingerprint]
    records, unreadable = _parse(matching, schema)
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "logged_at",
            "request_id",
            "row_index",
            "model_version",
            *schema.names,
            "probability",
            "is_fraud",
        ],
    )
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601")
    frame[schema.numeric] = frame[schema.numeric].astype("float64")
    return LoggedPredictions(
        frame=frame,
        rows_in_window=len(rows),
        other_schema_rows=len(rows) - len(matching),
        unreadable_rows=unreadable,
        model_versions=sorted({str(row[4]) for row in matching}),
    )


def _select(path: Path, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
    if not path.is_file():
        raise MonitorInputError(
            f"no prediction log at {path}: start the service (make serve) and send it "
            "traffic, or point the monitor at the service's SERVING_PREDICTION_LOG"
        )
    conditions, parameters = [], []
    if start is not None:
        conditions.append("logged_at >= ?")
        parameters.append(_iso(start))
    if end is not None:
        conditions.append("logged_at < ?")
        parameters.append(_iso(end))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only fixed text goes into the SQL; the window ends are bound parameters.
    query = f"SELECT {_COLUMNS} FROM predictions{where} ORDER BY id"
    try:
        # Read-only: the monitor must never lock out the service that writes the log.
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
            return connection.execute(query, parameters).fetchall()
    except sqlite3.DatabaseError as error:
        raise MonitorInputError(
            f"{path} is not a readable prediction log ({error}); it should be the SQLite "
            "file the service writes (SERVING_PREDICTION_LOG)"
        ) from None


def _parse(rows: list[tuple[Any, ...]], schema: FeatureSchema) -> tuple[list[list[Any]], int]:
    width = len(schema.names)
    records, unreadable = [], 0
    for logged_at, request_id, row_index, _, version, _, features, probability, flag in rows:
        try:
            values = json.loads(features)
        except (TypeError, ValueError):
            unreadable += 1
            continue
        if not isinstance(values, list) or len(values) != width:
            unreadable += 1
            continue
        records.append([logged_at, request_id, row_index, str(version), *values, probability, flag])
    return records, unreadable


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise MonitorInputError(f"{moment} has no time zone; give window ends in UTC")
    return moment.isoformat(timespec="microseconds")
