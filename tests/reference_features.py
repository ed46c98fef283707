"""A straightforward pandas implementation of the window features.

It is the oracle the vectorized features are tested against, and the baseline the
benchmark compares them with: time-based ``rolling`` windows per customer and terminal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud_detection.features import (
    REQUIRED_COLUMNS,
    customer_count_name,
    customer_mean_name,
    terminal_count_name,
    terminal_risk_name,
)
from fraud_detection.params import FeatureParams


def rolling_features(frame: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """A direct pandas implementation with time-based rolling windows, for comparison.

    Customers: rolling(w) over their own rows, current row included ((t - w, t]).
    Terminals: labels known up to t - delay, i.e. rows in (t - delay - w, t - delay]:
    rolling(delay + w) minus rolling(delay). Without delay: rolling(w) minus the row itself.
    """
    data = frame[REQUIRED_COLUMNS].copy()
    data["TX_FRAUD"] = data["TX_FRAUD"].astype(np.float64)
    data["row"] = np.arange(len(data))
    out = pd.DataFrame(index=range(len(data)))

    by_customer = data.sort_values(["CUSTOMER_ID", "TX_DATETIME"], kind="stable")
    customer_rows = by_customer["row"].to_numpy()
    grouped = by_customer.groupby("CUSTOMER_ID")
    for days in params.customer_windows_days:
        window = grouped.rolling(f"{days}D", on="TX_DATETIME")["TX_AMOUNT"]
        count = window.count().to_numpy()
        total = window.sum().to_numpy()
        out.loc[customer_rows, customer_count_name(days)] = count
        out.loc[customer_rows, customer_mean_name(days)] = total / count

    by_terminal = data.sort_values(["TERMINAL_ID", "TX_DATETIME"], kind="stable")
    terminal_rows = by_terminal["row"].to_numpy()
    grouped = by_terminal.groupby("TERMINAL_ID")
    delay = params.label_delay_days
    own = by_terminal["TX_FRAUD"].to_numpy()
    for days in params.terminal_windows_days:
        wide = grouped.rolling(f"{delay + days}D", on="TX_DATETIME")["TX_FRAUD"]
        wide_count, wide_frauds = wide.count().to_numpy(), wide.sum().to_numpy()
        if delay:
            near = grouped.rolling(f"{delay}D", on="TX_DATETIME")["TX_FRAUD"]
            count = wide_count - near.count().to_numpy()
            frauds = wide_frauds - near.sum().to_numpy()
        else:
            count, frauds = wide_count - 1, wide_frauds - own
        risk = np.where(count > 0, frauds / np.maximum(count, 1), 0.0)
        out.loc[terminal_rows, terminal_count_name(days)] = count
        out.loc[terminal_rows, terminal_risk_name(days)] = risk
    return out
