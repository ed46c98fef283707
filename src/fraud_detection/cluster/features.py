"""The 15 features on a Dask DataFrame, equal bit for bit to the local path's.

A card's windows need all its payments in time order, a terminal's all of its own: the
payments are shuffled by card, and again by terminal, so each partition holds whole cards
(or terminals), and the local kernels (fraud_detection.features) run on each partition
as they run on the whole table. The results are shuffled back into the input's
partitions by transaction id and joined to the raw columns.

Equality needs two things the kernels provide: window sums that do not depend on which
other keys share a partition (integer cents, see ``_window_sums``), and the same order
of payments made in the same second (each partition is sorted by transaction id, which
is the local table's order).
"""

from __future__ import annotations

from collections.abc import Callable

import dask.dataframe as dd
import numpy as np
import pandas as pd

from fraud_detection.features import (
    ID_COLUMN,
    TARGET,
    TIME_COLUMN,
    calendar_features,
    check_columns,
    customer_features,
    terminal_features,
)
from fraud_detection.params import FeatureParams

# What the window kernels read, besides the id.
_WINDOW_INPUTS = [TIME_COLUMN, "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", TARGET]

Kernel = Callable[[pd.DataFrame, FeatureParams], pd.DataFrame]


def _add_windows(part: pd.DataFrame, kernel: Kernel, params: FeatureParams) -> pd.DataFrame:
    """``part`` in id order, with ``kernel``'s columns added (``part`` holds whole keys)."""
    part = part.sort_values(ID_COLUMN, kind="stable")
    return pd.concat([part, kernel(part, params)], axis=1).reset_index(drop=True)


def dask_transaction_features(transactions: dd.DataFrame, params: FeatureParams) -> dd.DataFrame:
    """The raw columns plus the engineered features, partitioned as ``transactions``.

    ``transactions`` is indexed by transaction id with known divisions (ids in time
    order, as the simulator writes them); the result has the local path's columns, in
    its order, with the id as a column again. Three shuffles: by card, by terminal, back
    by id.
    """
    check_columns(pd.Index([transactions.index.name, *transactions.columns]))
    if transactions.index.name != ID_COLUMN or not transactions.known_divisions:
        raise ValueError(f"transactions must be indexed by {ID_COLUMN} with known divisions")
    needed = transactions[_WINDOW_INPUTS].reset_index()
    # Dask needs each step's (empty) output frame in advance: the kernels make it.
    card_meta = _add_windows(needed._meta, customer_features, params)
    terminal_meta = _add_windows(card_meta, terminal_features, params)
    by_card = needed.shuffle(on="CUSTOMER_ID").map_partitions(
        _add_windows, customer_features, params, meta=card_meta
    )
    by_terminal = by_card.shuffle(on="TERMINAL_ID").map_partitions(
        _add_windows, terminal_features, params, meta=terminal_meta
    )
    windows = by_terminal.drop(columns=_WINDOW_INPUTS)
    windows = windows.set_index(ID_COLUMN, divisions=transactions.divisions)
    calendar = transactions.map_partitions(
        calendar_features, params, meta=calendar_features(transactions._meta, params)
    )
    result: dd.DataFrame = transactions.join(calendar).join(windows).reset_index()
    result["TX_AMOUNT"] = result["TX_AMOUNT"].astype(np.float64)
    return result
