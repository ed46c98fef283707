"""Reading the service's prediction log, a SQLite file or PostgreSQL, chosen by URL.

The monitor reads only the log and the reference data: it never imports the service. The
tables and the stores are defined once, in ``fraud_detection.io.prediction_log``, which
the service writes with. Rows logged under another feature schema than the one the
monitor compares against are left out and counted; rows whose features cannot be read
are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fraud_detection.io.prediction_log import (
    READ_COLUMNS,
    LogNotFoundError,
    LogStoreError,
    open_store,
)
from fraud_detection.schema import FeatureSchema


class MonitorInputError(RuntimeError):
    """The log cannot be used for this run; the message says what is wrong and the fix."""


@dataclass(frozen=True)
class LoggedPredictions:
    """The rows of a time window that match the schema, as a DataFrame with one column per
    feature, plus ``logged_at``, ``request_id``, ``row_index``, ``model_version``,
    ``model_fingerprint``, ``probability`` and ``is_fraud``."""

    frame: pd.DataFrame
    rows_in_window: int
    other_schema_rows: int
    unreadable_rows: int
    model_versions: list[str]


_NAMES = READ_COLUMNS


def read_predictions(
    location: str | Path,
    schema: FeatureSchema,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> LoggedPredictions:
    """Rows logged in ``[start, end)`` (UTC; open ends allowed) under ``schema``, from the
    log at ``location`` (a SQLite file, or a postgresql:// URL)."""
    rows = _select(location, start, end)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(_NAMES)
    by_name = dict(zip(_NAMES, columns, strict=True))
    matching = np.asarray(by_name["schema_fingerprint"], dtype=object) == schema.fingerprint
    features = [text for text, keep in zip(by_name["features"], matching, strict=True) if keep]
    values, readable = _parse(features, len(schema.names))
    frame = pd.DataFrame(values, columns=schema.names)
    numbers = _numeric(frame, schema)
    frame, readable = frame[numbers], readable[numbers]
    keep = np.flatnonzero(matching)[readable]
    for name in ("logged_at", "request_id", "row_index", "model_version", "model_fingerprint"):
        frame.insert(len(frame.columns) - len(schema.names), name, _pick(by_name[name], keep))
    frame["probability"] = np.asarray(_pick(by_name["probability"], keep), dtype=np.float64)
    frame["is_fraud"] = np.asarray(_pick(by_name["is_fraud"], keep), dtype=np.int64)
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601")
    frame["model_version"] = frame["model_version"].astype(str)
    frame["model_fingerprint"] = frame["model_fingerprint"].astype(str)
    return LoggedPredictions(
        frame=frame,
        rows_in_window=len(rows),
        other_schema_rows=int(len(rows) - matching.sum()),
        unreadable_rows=int(len(features) - len(keep)),
        model_versions=sorted(frame["model_version"].unique().tolist()),
    )


def _numeric(frame: pd.DataFrame, schema: FeatureSchema) -> NDArray[np.bool_]:
    """Rows whose numeric features are all finite numbers; those columns become float64."""
    good = np.ones(len(frame), dtype=bool)
    for name in schema.numeric:
        column = frame[name]
        # JSON true/false would pass as 1/0; the service never logs them for a number.
        is_bool = column.map(lambda value: isinstance(value, bool)).to_numpy(bool)
        values = pd.to_numeric(column, errors="coerce").astype("float64")
        good &= np.isfinite(values.to_numpy()) & ~is_bool
        frame[name] = values
    return good


def _pick(column: tuple[Any, ...], rows: NDArray[np.int64]) -> list[Any]:
    return [column[i] for i in rows]


def _select(
    location: str | Path, start: datetime | None, end: datetime | None
) -> list[tuple[Any, ...]]:
    try:
        return open_store(location).read(start, end)
    except LogNotFoundError as error:
        raise MonitorInputError(
            f"{error}: start the service (make serve) and send it traffic, or point the "
            "monitor at the service's SERVING_PREDICTION_LOG"
        ) from None
    except LogStoreError as error:
        raise MonitorInputError(
            f"{error}; give the monitor the service's SERVING_PREDICTION_LOG "
            "(a SQLite file, or postgresql://user:password@host:port/database)"
        ) from None
    except ValueError as error:  # a window end without a time zone, a URL of no store
        raise MonitorInputError(str(error)) from None


def _parse(texts: list[str], width: int) -> tuple[list[list[Any]], NDArray[np.int64]]:
    """The feature lists, and the positions of the texts that held one of ``width`` values.

    One JSON document for the whole window is parsed in a single call (a tenth of the time
    of one call per row); only when that fails is each row parsed alone, to skip the bad.
    """
    try:
        parsed = json.loads("[" + ",".join(texts) + "]") if texts else []
        # As many arrays as texts: a text such as '[1], [2]' (or '[1,' and '2]' side by
        # side) parses inside the whole but is not one row's array.
        if len(parsed) == len(texts) and all(
            isinstance(values, list) and len(values) == width for values in parsed
        ):
            return parsed, np.arange(len(parsed), dtype=np.int64)
    except (TypeError, ValueError):
        pass
    good, positions = [], []
    for position, text in enumerate(texts):
        try:
            values = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(values, list) and len(values) == width:
            good.append(values)
            positions.append(position)
    return good, np.asarray(positions, dtype=np.int64)
