""" "Production" traffic for the replay: days after the test period, from the same world.

The simulator keys its randomness by calendar date, so simulating later days continues the
world the model was trained on: the same customers, terminals and fraud scenarios. The
replayed days get their features from the history before them, exactly as in training.
Drift scenarios (all off by default) then change that traffic in the ways production data
tends to change; see docs/monitoring.md for what each one should trip in the monitor.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fraud_detection.data.simulator import SECONDS_PER_DAY, simulate
from fraud_detection.errors import ParamsError
from fraud_detection.features import ID_COLUMN, TARGET, TIME_COLUMN, transaction_features
from fraud_detection.params import (
    CustomerMix,
    FeatureParams,
    NewFraudPattern,
    ReplayParams,
    SimulatorParams,
    SplitParams,
)

CARD_TESTING_SCENARIO = 4
"""TX_FRAUD_SCENARIO of the card-testing fraud that only the replay produces."""

# Streams of np.random.SeedSequence([replay seed, stream, date]); apart from the simulator's.
_SAMPLE_STREAM = 100
_CARD_TESTING_STREAM = 101


def first_replay_date(split: SplitParams, replay: ReplayParams) -> dt.date:
    """The day after the test period, moved on by ``replay.days_after_test``."""
    after_test = split.train_days + split.delay_days + split.test_days
    return split.train_start + dt.timedelta(days=after_test + replay.days_after_test)


def replay_days(sim: SimulatorParams, split: SplitParams, replay: ReplayParams) -> range:
    """The replayed days, as day indices of the simulator (days since its start date)."""
    first = (first_replay_date(split, replay) - sim.start_date).days
    if first < 0:
        raise ParamsError(
            f"the replay would start on {first_replay_date(split, replay)}, before the "
            f"simulation's start date {sim.start_date}; move data.simulator.start_date back"
        )
    return range(first, first + replay.days)


def history_days(features: FeatureParams) -> int:
    """Days of history the features of a day look back over (windows plus label delay)."""
    longest_terminal = max(features.terminal_windows_days) + features.label_delay_days
    return max(*features.customer_windows_days, longest_terminal)


def replay_traffic(
    sim: SimulatorParams,
    features: FeatureParams,
    split: SplitParams,
    replay: ReplayParams,
) -> pd.DataFrame:
    """The transactions to replay, with their features and true labels, in time order.

    Columns: the simulator's raw columns (TRANSACTION_ID renumbered over the replay) plus
    every engineered feature. ``replay.rows`` of them are drawn (without replacement) from
    the replayed days, with the drift scenarios of ``replay.scenarios`` applied.
    """
    days = replay_days(sim, split, replay)
    first = max(0, days.start - history_days(features))
    raw = simulate(sim, range(first, days.stop))
    in_replay = raw["TX_TIME_DAYS"].to_numpy() >= days.start
    scenarios = replay.scenarios
    spending = raw.groupby("CUSTOMER_ID")["TX_AMOUNT"].mean()
    if scenarios.amount_shift.enabled:
        raw.loc[in_replay, "TX_AMOUNT"] = np.round(
            raw.loc[in_replay, "TX_AMOUNT"] * scenarios.amount_shift.multiplier, 2
        )
    if scenarios.new_fraud_pattern.enabled:
        testing = card_testing(sim, days, scenarios.new_fraud_pattern, replay.seed)
        raw = pd.concat([raw, testing], ignore_index=True)
        raw = raw.sort_values(TIME_COLUMN, kind="stable", ignore_index=True)
    frame = transaction_features(raw, features)
    frame = frame[frame["TX_TIME_DAYS"].to_numpy() >= days.start].reset_index(drop=True)
    if scenarios.broken_feature.enabled:
        broken = scenarios.broken_feature
        if broken.feature not in frame.columns or broken.feature in raw.columns:
            raise ParamsError(
                f"replay.scenarios.broken_feature.feature: '{broken.feature}' is not an "
                f"engineered feature; choose one of {_engineered(frame, raw)}"
            )
        frame[broken.feature] = float(broken.value)
    weights = _mix_weights(frame, spending, scenarios.customer_mix)
    first_date = sim.start_date + dt.timedelta(days=days.start)
    picked = _draw(len(frame), replay.rows, weights, replay.seed, first_date.toordinal())
    frame = frame.iloc[picked].reset_index(drop=True)
    frame[ID_COLUMN] = np.arange(len(frame), dtype=np.int64)
    return frame


def card_testing(
    sim: SimulatorParams, days: range, pattern: NewFraudPattern, seed: int
) -> pd.DataFrame:
    """Bursts of small night-time payments from cards being tested by fraudsters.

    Each day, ``cards_per_day`` random customers make ``transactions_per_card`` payments of
    a few units at random terminals, in a one-hour burst that starts before 5 am.
    """
    parts = []
    for day in days:
        date = sim.start_date + dt.timedelta(days=day)
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, _CARD_TESTING_STREAM, date.toordinal()])
        )
        n_cards = min(pattern.cards_per_day, sim.n_customers)
        cards = rng.choice(sim.n_customers, size=n_cards, replace=False)
        per_card = pattern.transactions_per_card
        burst_start = rng.integers(0, 5 * 3600, size=len(cards))
        seconds = (
            day * SECONDS_PER_DAY
            + np.repeat(burst_start, per_card)
            + rng.integers(0, 3600, size=len(cards) * per_card)
        )
        parts.append(
            pd.DataFrame(
                {
                    "CUSTOMER_ID": np.repeat(cards, per_card).astype(np.int64),
                    "TERMINAL_ID": rng.integers(0, sim.n_terminals, size=len(seconds)),
                    "TX_AMOUNT": np.round(
                        rng.uniform(pattern.min_amount, pattern.max_amount, size=len(seconds)), 2
                    ),
                    "TX_TIME_SECONDS": seconds.astype(np.int64),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["TX_TIME_DAYS"] = frame["TX_TIME_SECONDS"] // SECONDS_PER_DAY
    frame[TIME_COLUMN] = pd.Timestamp(sim.start_date) + pd.to_timedelta(
        frame["TX_TIME_SECONDS"], unit="s"
    )
    frame[TARGET] = np.int8(1)
    frame["TX_FRAUD_SCENARIO"] = np.int8(CARD_TESTING_SCENARIO)
    frame[ID_COLUMN] = np.int64(-1)  # renumbered with the replay
    return frame


def _mix_weights(
    frame: pd.DataFrame, spending: pd.Series, mix: CustomerMix
) -> NDArray[np.float64] | None:
    """Sampling weights that favour the top spenders, or None for a uniform draw."""
    if not mix.enabled:
        return None
    top = spending >= spending.quantile(1 - mix.top_share)
    is_top = frame["CUSTOMER_ID"].map(top).fillna(False).to_numpy(bool)
    weights: NDArray[np.float64] = np.where(is_top, mix.weight, 1.0)
    return weights


def _draw(
    available: int, rows: int, weights: NDArray[np.float64] | None, seed: int, ordinal: int
) -> NDArray[np.int64]:
    """Indices of ``rows`` of ``available`` rows, drawn without replacement, in time order.

    Seeded by the first replayed date (like the simulator), not by a day index.
    """
    if rows >= available:
        return np.arange(available, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SAMPLE_STREAM, ordinal]))
    p = None if weights is None else weights / weights.sum()
    picked = rng.choice(available, size=rows, replace=False, p=p)
    return np.sort(picked).astype(np.int64)


def _engineered(frame: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column not in raw.columns]


def held_out_traffic(
    test: pd.DataFrame, feature_names: list[str], replay: ReplayParams
) -> tuple[pd.DataFrame, int]:
    """Traffic for CSV data, which has no world to continue: the held-out test rows.

    Rows with a missing feature value are left out (the API takes no nulls yet); their
    count is returned beside the rows. The drift scenarios need the simulator's columns.
    """
    if replay.scenarios.enabled:
        raise ParamsError(
            f"replay.scenarios {replay.scenarios.enabled} change simulated transactions; "
            "with CSV data (data.source: csv) switch them off"
        )
    complete = test[test[feature_names].notna().all(axis=1)].reset_index(drop=True)
    picked = _draw(len(complete), replay.rows, None, replay.seed, 0)
    return complete.iloc[picked].reset_index(drop=True), len(test) - len(complete)
