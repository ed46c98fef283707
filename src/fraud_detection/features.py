"""Feature engineering for transaction streams: 15 numeric features, no look-ahead.

Every window count and mean is computed with sorted keys and ``searchsorted`` over
cumulative sums, so the cost is a few sorts of the whole table rather than a Python loop
over customers or terminals.

* Customer features use the customer's own transactions in ``(t - w, t]``, the current
  one included: spending history is known at payment time.
* Terminal features use only transactions whose label is already known: those in
  ``(t - delay - w, t - delay]``, never the current one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fraud_detection.params import FeatureParams
from fraud_detection.schema import Feature, FeatureSchema, numeric_feature

SECONDS_PER_DAY = 86_400

TARGET = "TX_FRAUD"
TIME_COLUMN = "TX_DATETIME"
# Each payment's id: the Dask engine's partitions are indexed and sorted by it.
ID_COLUMN = "TRANSACTION_ID"
GROUP_COLUMN = "CUSTOMER_ID"
# Columns a raw transaction table must have to compute the features.
REQUIRED_COLUMNS = [TIME_COLUMN, "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", TARGET]


def customer_count_name(days: int) -> str:
    return f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW"


def customer_mean_name(days: int) -> str:
    return f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_WINDOW"


def terminal_count_name(days: int) -> str:
    return f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW"


def terminal_risk_name(days: int) -> str:
    return f"TERMINAL_ID_RISK_{days}DAY_WINDOW"


def feature_schema(params: FeatureParams) -> FeatureSchema:
    """The schema of :func:`transaction_features` for these params (without example)."""
    delay = params.label_delay_days
    features: list[Feature] = [
        numeric_feature("TX_AMOUNT", "Transaction amount", minimum=0),
        numeric_feature("TX_DURING_WEEKEND", "1 on Saturday or Sunday", minimum=0, maximum=1),
        numeric_feature(
            "TX_DURING_NIGHT",
            f"1 when the hour is {params.night_last_hour} or earlier",
            minimum=0,
            maximum=1,
        ),
    ]
    for days in params.customer_windows_days:
        features += [
            numeric_feature(
                customer_count_name(days),
                f"The customer's transactions in the last {days} day(s), this one included",
                minimum=1,
            ),
            numeric_feature(
                customer_mean_name(days),
                f"The customer's mean amount over the last {days} day(s), this one included",
                minimum=0,
            ),
        ]
    for days in params.terminal_windows_days:
        features += [
            numeric_feature(
                terminal_count_name(days),
                f"Transactions at the terminal in the {days} day(s) ending {delay} day(s) ago",
                minimum=0,
            ),
            numeric_feature(
                terminal_risk_name(days),
                f"Share of fraud among them (labels known after {delay} day(s))",
                minimum=0,
                maximum=1,
            ),
        ]
    return FeatureSchema(
        source="simulator",
        features=features,
        target=TARGET,
        positive_label=1,
        time_column=TIME_COLUMN,
        group_column=GROUP_COLUMN,
    )


def _window_starts(
    keys: NDArray[np.int64], ends: NDArray[np.int64], width: int
) -> NDArray[np.int64]:
    """First position whose key lies inside ``(ends - width, ends]`` (keys sorted)."""
    return np.searchsorted(keys, ends - width, side="right").astype(np.int64)


def _sorted_by(
    group: NDArray[np.int64], seconds: NDArray[np.int64], reach: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Row order by (group, time) and the matching composite keys.

    The key ``group * span + seconds`` puts each group's times in a band of its own, with
    a gap wider than ``reach`` (the furthest any window looks back, in seconds), so a
    window on the key never crosses into the neighbouring group.
    """
    order = np.lexsort((seconds, group))
    if not len(seconds):
        return order, seconds.copy()
    first = int(seconds.min())
    span = int(seconds.max()) - first + reach + 1
    keys = group[order] * span + (seconds[order] - first)
    return order, keys


def _window_sums(
    values: NDArray[np.float64],
) -> tuple[NDArray[np.float64] | NDArray[np.int64], float]:
    """Prefix sums of ``values`` (in sort order) and the unit to divide their differences by.

    Whole cents are summed as integers: a window's sum, a difference of two prefix sums,
    is then exact whatever rows precede the window, so features computed on any partition
    of the rows by key (the Dask path) equal these bit for bit. Other values are summed as
    floats, whose differences carry the rounding of every earlier row.
    """
    cents = np.rint(values * 100)
    if np.all(np.abs(values * 100 - cents) < 1e-6) and np.all(np.abs(cents) < 2**52):
        return np.concatenate([[0], np.cumsum(cents.astype(np.int64))]), 100.0
    return np.concatenate([[0.0], np.cumsum(values)]), 1.0


def _customer_windows(
    customer: NDArray[np.int64],
    seconds: NDArray[np.int64],
    amount: NDArray[np.float64],
    windows: list[int],
) -> dict[str, NDArray[np.float64]]:
    order, keys = _sorted_by(customer, seconds, max(windows) * SECONDS_PER_DAY)
    position = np.arange(len(order), dtype=np.int64)
    cumulative, unit = _window_sums(amount[order])
    out: dict[str, NDArray[np.float64]] = {}
    for days in windows:
        start = _window_starts(keys, keys, days * SECONDS_PER_DAY)
        count = (position - start + 1).astype(np.float64)
        total = (cumulative[position + 1] - cumulative[start]) / unit
        out[customer_count_name(days)] = _unsort(order, count)
        out[customer_mean_name(days)] = _unsort(order, total / count)
    return out


def _terminal_windows(
    terminal: NDArray[np.int64],
    seconds: NDArray[np.int64],
    fraud: NDArray[np.float64],
    windows: list[int],
    delay_days: int,
) -> dict[str, NDArray[np.float64]]:
    order, keys = _sorted_by(terminal, seconds, (delay_days + max(windows)) * SECONDS_PER_DAY)
    position = np.arange(len(order), dtype=np.int64)
    cumulative, unit = _window_sums(fraud[order])
    known_until = keys - delay_days * SECONDS_PER_DAY
    # Labels are known up to ``t - delay``; never the current row's or a later row's.
    end = np.minimum(np.searchsorted(keys, known_until, side="right"), position)
    out: dict[str, NDArray[np.float64]] = {}
    for days in windows:
        start = np.minimum(_window_starts(keys, known_until, days * SECONDS_PER_DAY), end)
        count = (end - start).astype(np.float64)
        frauds = (cumulative[end] - cumulative[start]) / unit
        risk = np.divide(frauds, count, out=np.zeros_like(frauds), where=count > 0)
        out[terminal_count_name(days)] = _unsort(order, count)
        out[terminal_risk_name(days)] = _unsort(order, risk)
    return out


def _unsort(order: NDArray[np.int64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    result = np.empty_like(values)
    result[order] = values
    return result


def _seconds(transactions: pd.DataFrame) -> NDArray[np.int64]:
    return pd.DatetimeIndex(transactions[TIME_COLUMN]).as_unit("s").asi8.astype(np.int64)


def calendar_features(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Weekend and night flags: each row's own, needing no other row."""
    when = pd.DatetimeIndex(transactions[TIME_COLUMN])
    columns = {
        "TX_DURING_WEEKEND": (when.weekday >= 5).astype(np.float64),
        "TX_DURING_NIGHT": (when.hour <= params.night_last_hour).astype(np.float64),
    }
    return pd.DataFrame(columns, index=transactions.index)


def customer_features(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Each card's counts and mean amounts over its windows.

    Needs every payment of each card present in ``transactions`` (any set of whole cards
    will do); payments at the same second count in the order of the rows.
    """
    columns = _customer_windows(
        transactions["CUSTOMER_ID"].to_numpy(np.int64),
        _seconds(transactions),
        transactions["TX_AMOUNT"].to_numpy(np.float64),
        params.customer_windows_days,
    )
    return pd.DataFrame(columns, index=transactions.index)


def terminal_features(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Each terminal's counts and fraud shares over its delayed windows (whole terminals)."""
    columns = _terminal_windows(
        transactions["TERMINAL_ID"].to_numpy(np.int64),
        _seconds(transactions),
        transactions[TARGET].to_numpy(np.float64),
        params.terminal_windows_days,
        params.label_delay_days,
    )
    return pd.DataFrame(columns, index=transactions.index)


def check_columns(columns: pd.Index) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"transactions lack column(s) {missing}; expected {REQUIRED_COLUMNS}")


def transaction_features(transactions: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """The raw columns plus the engineered features, in the input's row order."""
    check_columns(transactions.columns)
    engineered = pd.concat(
        [
            calendar_features(transactions, params),
            customer_features(transactions, params),
            terminal_features(transactions, params),
        ],
        axis=1,
    )
    result = pd.concat([transactions, engineered], axis=1)
    result["TX_AMOUNT"] = result["TX_AMOUNT"].astype(np.float64)
    return result
