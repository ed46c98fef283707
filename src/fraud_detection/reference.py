"""Reference data for the drift monitor: the training period as the model should see it.

Live traffic is compared with this table, feature by feature and on the model's score. Its
scores must be ones the model gives to rows it has not trained on: a forest's scores on
its own training rows are sharper than anything it will ever give live, and that gap
alone would read as score drift (and make the reference's precision and recall look far
better than the model's). So every training row is scored by the champion's recipe
(selection.json: preprocessing, sampler, estimator) refitted without that row's day.
Whole days are held out, and every day of the period is scored, so the reference keeps
the weekly rhythm (weekend share) that a time-ordered cross-validation's first fold loses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict

from fraud_detection.schema import FeatureSchema

SCORE_COLUMN = "probability"
DECISION_COLUMN = "is_fraud"
MAX_FOLDS = 7


class ReferenceInfo(BaseModel):
    """What the monitor needs to know about the reference table (written beside it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_schema: FeatureSchema
    threshold: float
    rows: int
    positives: int
    period_start: str | None
    period_end: str | None
    scored_by: str
    # The registry name of the model (evaluate.registered_model_name), when it has one.
    model_name: str | None = None
    # The content fingerprint of the model the reference was built for (its metadata's
    # model_fingerprint; the service logs it with every prediction): the monitor judges
    # only that model's predictions, another model scores differently. Not a registry
    # version: a version is only known to one store and would go stale in a clone.
    model_fingerprint: str | None = None
    # Key test-period metrics of the model, to set the live figures beside.
    test_metrics: dict[str, float] = {}


def held_out_scores(
    pipeline: Any, frame: pd.DataFrame, schema: FeatureSchema, *, seed: int, n_jobs: int = -1
) -> NDArray[np.float64]:
    """Each row's positive-class probability from ``pipeline`` fitted without its fold
    (the folds of :func:`held_out_folds`)."""
    features, target = frame[schema.names], frame[schema.target].to_numpy()
    times = frame[schema.time_column] if schema.time_column else None
    probabilities = cross_val_predict(
        pipeline,
        features,
        target,
        cv=held_out_folds(target, times, seed=seed),
        method="predict_proba",
        n_jobs=n_jobs,
    )
    scores: NDArray[np.float64] = np.asarray(probabilities[:, 1], dtype=np.float64)
    return scores


def held_out_folds(
    target: NDArray[np.int_], times: pd.Series | None, *, seed: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """(training rows, held-out rows) pairs that score every row once.

    Time-stamped data is split by calendar day (one day per fold, up to ``MAX_FOLDS``
    folds), or into blocks of consecutive time when it spans less than two days or its
    time is a number; data without time by stratified folds.
    """
    placeholder = np.zeros(len(target))
    if times is not None:
        groups = _time_blocks(times)
        splitter = GroupKFold(n_splits=min(MAX_FOLDS, len(np.unique(groups))))
        splits = splitter.split(placeholder, target, groups)
    else:
        splits = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(
            placeholder, target
        )
    return [(train.astype(np.int64), held.astype(np.int64)) for train, held in splits]


def _time_blocks(times: pd.Series) -> NDArray[np.int64]:
    """Calendar days for datetimes; for numeric times (e.g. seconds since the first row,
    as in the public creditcard.csv) ``MAX_FOLDS`` blocks of consecutive time."""
    if pd.api.types.is_datetime64_any_dtype(times):
        days = pd.DatetimeIndex(times).normalize().asi8
        if len(np.unique(days)) >= 2:
            return np.asarray(days, dtype=np.int64)
    order = times.rank(method="first").to_numpy()
    return np.asarray(np.ceil(order * MAX_FOLDS / len(order)), dtype=np.int64)


def reference_table(
    frame: pd.DataFrame, schema: FeatureSchema, scores: NDArray[np.float64], threshold: float
) -> pd.DataFrame:
    """Time (if any), features in schema order, label, score and decision at the threshold."""
    columns = ([schema.time_column] if schema.time_column else []) + schema.names
    table = frame[columns].reset_index(drop=True)
    table[schema.target] = frame[schema.target].to_numpy().astype(np.int64)
    table[SCORE_COLUMN] = scores
    table[DECISION_COLUMN] = (scores >= threshold).astype(np.int64)
    return table


def reference_info(
    table: pd.DataFrame,
    schema: FeatureSchema,
    threshold: float,
    *,
    scored_by: str,
    test_metrics: dict[str, float],
    model_name: str | None = None,
    model_fingerprint: str | None = None,
) -> ReferenceInfo:
    period: list[str | None] = [None, None]
    if schema.time_column is not None and len(table):
        times = pd.DatetimeIndex(table[schema.time_column])
        period = [times.min().isoformat(), times.max().isoformat()]
    return ReferenceInfo(
        feature_schema=schema,
        threshold=threshold,
        rows=len(table),
        positives=int(table[schema.target].sum()),
        period_start=period[0],
        period_end=period[1],
        scored_by=scored_by,
        model_name=model_name,
        model_fingerprint=model_fingerprint,
        test_metrics=test_metrics,
    )
