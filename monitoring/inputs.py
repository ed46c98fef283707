"""What a monitoring run reads, checked before Evidently is even imported.

The reference (with the schema the model carries), the window's rows of the prediction
log, and the labels file. Every problem is a :class:`MonitorInputError` whose message
says what to do, so `python -m monitoring` answers a wrong path at once instead of after
Evidently's seconds-long import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fraud_detection.io.files import parquet_frame
from fraud_detection.io.model_package import LOCAL_VERSION
from fraud_detection.params import MonitorParams
from fraud_detection.reference import DECISION_COLUMN, SCORE_COLUMN, ReferenceInfo
from monitoring.labels import no_labels, read_labels
from monitoring.prediction_log import LoggedPredictions, MonitorInputError, read_predictions

# The monitor's exit codes, here so that the CLI can use them without loading Evidently.
EXIT_PASSED, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime | None, start: datetime | None, hours: float) -> Window:
        end = end or datetime.now(UTC)
        start = start or end - timedelta(hours=hours)
        for moment in (start, end):
            if moment.tzinfo is None:
                raise MonitorInputError(f"{moment} has no time zone; give window ends in UTC")
        if start >= end:
            raise MonitorInputError(f"the window starts ({start}) after it ends ({end})")
        return cls(start, end)


@dataclass(frozen=True)
class Reference:
    table: pd.DataFrame
    info: ReferenceInfo


@dataclass(frozen=True)
class MonitorInputs:
    """Everything one run judges: the reference, the window's rows and the labels."""

    window: Window
    reference: Reference
    frame: pd.DataFrame
    counts: dict[str, Any]
    labels: pd.DataFrame


def read_inputs(
    params: MonitorParams,
    *,
    window: Window,
    log_path: str | Path,
    reference_path: Path,
    labels_path: Path | None,
) -> MonitorInputs:
    reference = load_reference(reference_path)
    frame, counts = current_rows(log_path, reference, window, params)
    labels = read_labels(labels_path) if labels_path is not None else no_labels()
    return MonitorInputs(window, reference, frame, counts, labels)


def load_reference(path: Path) -> Reference:
    """The reference table and its description (schema, threshold), checked against each other."""
    info_path = path.with_suffix(".json")
    if not path.is_file() or not info_path.is_file():
        raise MonitorInputError(
            f"no reference data at {path} (and {info_path.name}): the pipeline makes it; "
            "run `dvc repro reference` (or `make train`)"
        )
    try:
        info = ReferenceInfo.model_validate_json(info_path.read_text(encoding="utf-8"))
        table = parquet_frame(path)
    except Exception as error:  # pydantic, json and pyarrow each raise their own types
        raise MonitorInputError(
            f"the reference at {path} cannot be read ({type(error).__name__}: {error}); "
            "rebuild it with `dvc repro reference`"
        ) from None
    schema = info.feature_schema
    needed = [*schema.names, schema.target, SCORE_COLUMN, DECISION_COLUMN]
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise MonitorInputError(
            f"the reference at {path} lacks column(s) {missing} its schema needs; "
            "rebuild it with `dvc repro reference`"
        )
    return Reference(table, info)


def current_rows(
    log_path: str | Path, reference: Reference, window: Window, params: MonitorParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The window's usable rows, and what was skipped and why."""
    schema = reference.info.feature_schema
    logged = read_predictions(log_path, schema, start=window.start, end=window.end)
    frame = logged.frame
    keep = _judged(frame, reference, params)
    other_version = int((~keep).sum())
    others = sorted(frame.loc[~keep, "model_version"].unique().tolist())
    frame = frame[keep]
    counts = {
        "rows_in_window": logged.rows_in_window,
        "other_schema_rows": logged.other_schema_rows,
        "unreadable_rows": logged.unreadable_rows,
        "other_version_rows": other_version,
        "model_versions": sorted(frame["model_version"].unique().tolist()),
        "other_model_versions": others,
    }
    if len(frame) < params.min_rows:
        raise MonitorInputError(
            _too_few(
                len(frame),
                logged=logged,
                window=window,
                params=params,
                reference=reference,
                counts=counts,
            )
        )
    return frame.reset_index(drop=True), counts


def _judged(frame: pd.DataFrame, reference: Reference, params: MonitorParams) -> pd.Series:
    """Which rows the monitor judges: monitor.model_version's if set, else the model the
    reference was built for, known by its fingerprint in every store. Rows logged without
    a fingerprint (a model older than it) cannot be told apart, so they are kept."""
    if params.model_version is not None:
        return frame["model_version"] == params.model_version
    fingerprint = reference.info.model_fingerprint
    if not fingerprint:
        return pd.Series(True, index=frame.index)
    return frame["model_fingerprint"].isin([fingerprint, ""])


def _version_name(version: str) -> str:
    return "a model folder" if version == LOCAL_VERSION else f"v{version}"


def _too_few(
    usable: int,
    *,
    logged: LoggedPredictions,
    window: Window,
    params: MonitorParams,
    reference: Reference,
    counts: dict[str, Any],
) -> str:
    reasons = []
    if logged.other_schema_rows:
        reasons.append(
            f"{logged.other_schema_rows:,} were logged under another feature schema than the "
            f"reference's ({reference.info.feature_schema.fingerprint}): rebuild the reference "
            "for the served model (`dvc repro reference`) or monitor that model's log"
        )
    if counts["other_version_rows"] and params.model_version is not None:
        reasons.append(
            f"{counts['other_version_rows']:,} came from other model versions than "
            f"monitor.model_version={params.model_version!r}"
        )
    elif counts["other_version_rows"]:
        served = ", ".join(_version_name(v) for v in counts["other_model_versions"])
        reasons.append(
            f"{counts['other_version_rows']:,} came from another model ({served}) than the one "
            f"the reference describes (model fingerprint {reference.info.model_fingerprint}), "
            "the pipeline's latest model (a challenger if it did not beat the champion): "
            "serve that model (SERVING_MODEL_URI=models/model make serve), or rebuild the "
            "reference for the served model (docs/monitoring.md, 'The reference')"
        )
    if logged.unreadable_rows:
        reasons.append(f"{logged.unreadable_rows:,} could not be read")
    detail = (
        f" Of {logged.rows_in_window:,} logged rows, " + "; ".join(reasons) + "." if reasons else ""
    )
    return (
        f"only {usable:,} usable rows logged between {window.start:%Y-%m-%d %H:%M} and "
        f"{window.end:%Y-%m-%d %H:%M} UTC; the monitor needs at least {params.min_rows:,} "
        f"(monitor.min_rows).{detail} Send traffic (make replay) or widen the window "
        "(--start, or monitor.window_hours)."
    )
