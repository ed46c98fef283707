"""The "labels arrive later" file: true outcomes of logged predictions, joined on request id.

The replay writes it (monitoring/replay.py); in production it would come from the fraud
investigation team. Columns: request_id (str), row_index (int, the row of a batch request),
label (0/1) and available_at (UTC): a label counts only once it has arrived.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fraud_detection.io.files import parquet_frame
from monitoring.prediction_log import MonitorInputError

LABEL_COLUMNS = ["request_id", "row_index", "label", "available_at"]


def no_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": pd.Series(dtype=str),
            "row_index": pd.Series(dtype="int64"),
            "label": pd.Series(dtype="int64"),
            "available_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def read_labels(path: Path) -> pd.DataFrame:
    """Every label in the file (none when there is no file yet), one per logged row."""
    if not path.is_file():
        return no_labels()
    try:
        frame = parquet_frame(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise MonitorInputError(
            f"{path} is not a readable labels file ({type(error).__name__}: {error}); "
            "replay traffic again (make replay) or pass --labels with the right file"
        ) from None
    missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
    if missing:
        raise MonitorInputError(
            f"{path} lacks column(s) {missing}; a labels file has {LABEL_COLUMNS}"
        )
    labels = frame[LABEL_COLUMNS].copy()
    empty = [column for column in LABEL_COLUMNS if labels[column].isna().any()]
    if empty:
        raise MonitorInputError(f"{path}: column(s) {empty} have empty values")
    if not labels["label"].isin([0, 1]).all():
        raise MonitorInputError(f"{path}: every label must be 0 or 1")
    try:
        labels["available_at"] = pd.to_datetime(labels["available_at"], utc=True)
        labels["row_index"] = labels["row_index"].astype("int64")
    except (ValueError, TypeError) as error:
        raise MonitorInputError(
            f"{path}: available_at must be times and row_index whole numbers ({error})"
        ) from None
    labels["request_id"] = labels["request_id"].astype(str)
    labels["label"] = labels["label"].astype("int64")
    return labels.drop_duplicates(["request_id", "row_index"], keep="last")


def join_labels(frame: pd.DataFrame, labels: pd.DataFrame, target: str) -> pd.DataFrame:
    """The logged rows that have a label (in column ``target``) and its ``available_at``."""
    joined = frame.merge(
        labels[["request_id", "row_index", "label", "available_at"]],
        on=["request_id", "row_index"],
        how="inner",
    )
    return joined.rename(columns={"label": target})
