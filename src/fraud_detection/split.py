"""Train/test splits: a time-ordered protocol for transaction streams, a hold-out otherwise.

The simulator protocol (docs/dataset.md): a training period, a gap of ``delay_days``
whose labels are not yet known when the model ships, then a test period. Cards already
known to be compromised by the time of a test transaction are dropped from the test set,
since a real system would have blocked them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fraud_detection.errors import DataValidationError
from fraud_detection.params import SplitParams
from fraud_detection.schema import FeatureSchema


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    summary: dict[str, Any]


def split_dataset(frame: pd.DataFrame, schema: FeatureSchema, params: SplitParams) -> Split:
    if schema.source == "simulator" and schema.time_column is not None:
        split = split_by_period(frame, schema, params)
    else:
        split = split_holdout(frame, schema, params)
    for name, part in (("training", split.train), ("test", split.test)):
        _check_both_classes(part, schema.target, name)
    return split


def _day(frame: pd.DataFrame, schema: FeatureSchema) -> pd.Series:
    assert schema.time_column is not None
    return pd.to_datetime(frame[schema.time_column]).dt.normalize()


@dataclass(frozen=True)
class Period:
    """The protocol's days: training, then the delay, then test (first and last days)."""

    train_first: pd.Timestamp
    train_last: pd.Timestamp
    test_first: pd.Timestamp
    test_last: pd.Timestamp


def period(params: SplitParams) -> Period:
    one_day = pd.Timedelta(days=1)
    train_first = pd.Timestamp(params.train_start)
    train_last = train_first + (params.train_days - 1) * one_day
    test_first = train_last + (params.delay_days + 1) * one_day
    return Period(
        train_first, train_last, test_first, test_first + (params.test_days - 1) * one_day
    )


def check_coverage(days: Period, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """The data's first and last days must hold the whole protocol."""
    if days.train_first < first.normalize() or days.test_last > last.normalize():
        raise DataValidationError(
            f"the split needs data from {days.train_first.date()} to {days.test_last.date()} "
            f"but the data covers {first.date()} to {last.date()}; move split.train_start "
            "or lengthen the simulated period (data.simulator.start_date / n_days)"
        )


def split_by_period(frame: pd.DataFrame, schema: FeatureSchema, params: SplitParams) -> Split:
    """The training and test periods. Rows outside ``period(params)`` are never used, so
    ``frame`` may hold only the protocol's days (the stage reads no more than those)."""
    day = _day(frame, schema)
    days = period(params)
    check_coverage(days, day.min(), day.max())
    train_first, train_last = days.train_first, days.train_last
    test_first, test_last = days.test_first, days.test_last
    in_train = (day >= train_first) & (day <= train_last)
    in_test = (day >= test_first) & (day <= test_last)
    removed = 0
    if params.remove_known_compromised and schema.group_column is not None:
        known = _known_compromised(frame, schema, day, train_first, params.delay_days)
        removed = int((in_test & known).sum())
        in_test &= ~known
    train, test = frame[in_train], frame[in_test]
    summary = {
        "protocol": "period",
        "train_period": [str(train_first.date()), str(train_last.date())],
        "test_period": [str(test_first.date()), str(test_last.date())],
        "test_rows_removed_known_compromised": removed,
    }
    return Split(
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        summary | _sizes(train, test, schema),
    )


def _known_compromised(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    day: pd.Series,
    train_start: pd.Timestamp,
    delay_days: int,
) -> pd.Series:
    """True for rows whose card had a fraud, seen from training start, whose label is known.

    A fraud on day ``f`` is known on day ``d`` when ``f <= d - delay - 1``.
    """
    assert schema.group_column is not None
    frauds = (frame[schema.target] == 1) & (day >= train_start)
    first_fraud = day[frauds].groupby(frame.loc[frauds, schema.group_column]).min()
    card_first_fraud = frame[schema.group_column].map(first_fraud)
    return (card_first_fraud <= day - pd.Timedelta(days=delay_days + 1)).fillna(False).astype(bool)


def split_holdout(frame: pd.DataFrame, schema: FeatureSchema, params: SplitParams) -> Split:
    if schema.time_column is not None:
        order = np.argsort(frame[schema.time_column].to_numpy(), kind="stable")
        cut = round(len(frame) * (1 - params.test_size))
        train, test = frame.iloc[order[:cut]], frame.iloc[order[cut:]]
        protocol = "latest rows held out"
    else:
        train, test = train_test_split(
            frame,
            test_size=params.test_size,
            stratify=frame[schema.target],
            random_state=params.seed,
        )
        protocol = "stratified hold-out"
    summary = {"protocol": protocol, "test_size": params.test_size}
    return Split(
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        summary | _sizes(train, test, schema),
    )


def _sizes(train: pd.DataFrame, test: pd.DataFrame, schema: FeatureSchema) -> dict[str, Any]:
    return {
        "train_rows": len(train),
        "train_positives": int(train[schema.target].sum()),
        "test_rows": len(test),
        "test_positives": int(test[schema.target].sum()),
    }


def _check_both_classes(part: pd.DataFrame, target: str, name: str) -> None:
    positives = int(part[target].sum())
    if len(part) == 0 or positives in (0, len(part)):
        raise DataValidationError(
            f"the {name} set has {len(part)} rows and {positives} fraud(s): it needs both "
            "classes; use more data or change the split params"
        )
