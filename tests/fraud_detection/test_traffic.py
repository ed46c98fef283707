"""Replayed "production" traffic: the same world after the test period, plus drift scenarios."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud_detection.data.simulator import COLUMNS, SECONDS_PER_DAY, make_world, simulate
from fraud_detection.errors import ParamsError
from fraud_detection.features import feature_schema, transaction_features
from fraud_detection.params import (
    AmountShift,
    BrokenFeature,
    CustomerMix,
    DriftScenarios,
    FeatureParams,
    NewFraudPattern,
    ReplayParams,
    SimulatorParams,
    SplitParams,
)
from fraud_detection.traffic import (
    CARD_TESTING_SCENARIO,
    first_replay_date,
    history_days,
    replay_days,
    replay_traffic,
)

# The small world of tests/conftest.py starts on 2018-04-01. Training from day 35
# (2018-05-06) for 2 days, 1 day of delay and 2 test days: the replay starts on day 40
# (2018-05-11), with the 37 days of history the default features need before it.
SPLIT = SplitParams(train_start=dt.date(2018, 5, 6), train_days=2, delay_days=1, test_days=2)
FIRST_DAY = 40
REPLAY_DAYS = 2
ALL_ROWS = 1_000_000  # more than the replayed days hold: no sampling
# The simulator's columns but its ids, which the replay renumbers.
RAW_COLUMNS = [column for column in COLUMNS if column != "TRANSACTION_ID"]
FEATURES = feature_schema(FeatureParams()).names


def replay(
    rows: int = ALL_ROWS, seed: int = 1, days: int = REPLAY_DAYS, **scenarios: object
) -> ReplayParams:
    return ReplayParams(
        rows=rows, seed=seed, days=days, scenarios=DriftScenarios.model_validate(scenarios)
    )


def without_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="TRANSACTION_ID").reset_index(drop=True)


def row_keys(frame: pd.DataFrame) -> set[tuple[object, ...]]:
    """Each row as a tuple of every column but TRANSACTION_ID (rows are unique by these)."""
    return set(without_id(frame).itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def baseline(small_params: SimulatorParams) -> pd.DataFrame:
    """Every transaction of the two replayed days, no scenario (read-only)."""
    frame: pd.DataFrame = replay_traffic(small_params, FeatureParams(), SPLIT, replay())
    return frame


@pytest.fixture(scope="module")
def simulated_days(small_params: SimulatorParams) -> pd.DataFrame:
    """The simulator's own transactions of the replayed days (read-only)."""
    frame: pd.DataFrame = simulate(small_params, range(FIRST_DAY, FIRST_DAY + REPLAY_DAYS))
    return frame


# ------------------------------------------------------------------- replayed days


def test_first_replay_date_is_the_day_after_the_test_period() -> None:
    # 2 train days from May 6, 1 delay day, 2 test days: the test period ends on May 10.
    assert first_replay_date(SPLIT, ReplayParams()) == dt.date(2018, 5, 11)
    assert first_replay_date(SPLIT, ReplayParams(days_after_test=3)) == dt.date(2018, 5, 14)
    default = SplitParams()  # 2018-07-25 + 7 + 7 + 7 days
    assert first_replay_date(default, ReplayParams()) == dt.date(2018, 8, 15)


def test_replay_days_are_day_indices_of_the_simulator(small_params: SimulatorParams) -> None:
    assert replay_days(small_params, SPLIT, replay(days=2)) == range(40, 42)
    moved = ReplayParams(days=5, days_after_test=3)
    assert replay_days(small_params, SPLIT, moved) == range(43, 48)
    # The replay may run past the simulated period: the world goes on.
    late = ReplayParams(days=7, days_after_test=30)
    assert replay_days(small_params, SPLIT, late) == range(70, 77)


def test_replay_may_start_on_the_start_date(small_params: SimulatorParams) -> None:
    split = SPLIT.model_copy(update={"train_start": dt.date(2018, 3, 27)})  # + 5 days
    assert replay_days(small_params, split, replay(days=3)) == range(0, 3)


def test_replay_before_the_start_date_is_a_params_error(small_params: SimulatorParams) -> None:
    split = SPLIT.model_copy(update={"train_start": dt.date(2018, 3, 26)})  # replay 03-31
    with pytest.raises(ParamsError) as caught:
        replay_days(small_params, split, ReplayParams())
    message = str(caught.value)
    assert "2018-03-31" in message
    assert "2018-04-01" in message
    assert "data.simulator.start_date" in message
    with pytest.raises(ParamsError, match="before the simulation's start date"):
        replay_traffic(small_params, FeatureParams(), split, ReplayParams())


def test_history_days_cover_the_longest_window_and_the_label_delay() -> None:
    assert history_days(FeatureParams()) == 30 + 7
    longer_customer = FeatureParams(
        customer_windows_days=[1, 45], terminal_windows_days=[3], label_delay_days=2
    )
    assert history_days(longer_customer) == 45
    assert history_days(FeatureParams(terminal_windows_days=[10], label_delay_days=0)) == 30


# ------------------------------------------------------------ continuing the world


def test_replay_reproduces_the_simulators_days(
    baseline: pd.DataFrame, simulated_days: pd.DataFrame
) -> None:
    assert len(baseline) == len(simulated_days) > 1000
    assert baseline["TX_TIME_DAYS"].unique().tolist() == [FIRST_DAY, FIRST_DAY + 1]
    pd.testing.assert_frame_equal(
        baseline[RAW_COLUMNS], simulated_days[RAW_COLUMNS].reset_index(drop=True)
    )
    assert baseline["TX_FRAUD"].sum() == simulated_days["TX_FRAUD"].sum() > 0


def test_replay_features_equal_those_of_a_longer_simulation(
    baseline: pd.DataFrame, small_features: pd.DataFrame
) -> None:
    # small_features: the 60-day world with its features; days 40-41 sit in its middle, so
    # the same history precedes them and later days (which must not matter) follow them.
    days = small_features["TX_TIME_DAYS"]
    expected = small_features[(days >= FIRST_DAY) & (days < FIRST_DAY + REPLAY_DAYS)]
    pd.testing.assert_frame_equal(without_id(baseline), without_id(expected))
    # The history is there: 30-day windows count the weeks before the replay.
    assert (
        baseline["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] > baseline["CUSTOMER_ID_NB_TX_7DAY_WINDOW"]
    ).mean() > 0.9
    assert (baseline["TERMINAL_ID_NB_TX_30DAY_WINDOW"] > 0).mean() > 0.9


def test_replay_after_the_simulated_period_continues_the_world(
    small_params: SimulatorParams,
) -> None:
    # Days 70-71 lie past the 60 simulated days; a 75-day simulation holds them.
    late = ReplayParams(rows=ALL_ROWS, days=2, days_after_test=30)
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, late)
    longer = small_params.model_copy(update={"n_days": 75})
    full = transaction_features(simulate(longer), FeatureParams())
    expected = full[full["TX_TIME_DAYS"].between(70, 71)]
    assert len(frame) > 1000
    pd.testing.assert_frame_equal(without_id(frame), without_id(expected))


def test_replay_columns_and_ids(baseline: pd.DataFrame, simulated_days: pd.DataFrame) -> None:
    engineered = [name for name in FEATURES if name != "TX_AMOUNT"]
    assert list(baseline.columns) == COLUMNS + engineered
    assert list(simulated_days.columns) == COLUMNS
    assert baseline["TRANSACTION_ID"].tolist() == list(range(len(baseline)))
    assert baseline["TRANSACTION_ID"].dtype == np.int64


# ---------------------------------------------------------------- rows and seeds


def test_rows_above_or_at_the_available_count_return_everything(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    available = len(baseline)
    exactly = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=available))
    pd.testing.assert_frame_equal(exactly, baseline)
    one_less = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=available - 1))
    assert len(one_less) == available - 1
    assert row_keys(one_less) < row_keys(baseline)


def test_sample_is_in_time_order_and_renumbered(small_params: SimulatorParams) -> None:
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300))
    assert len(frame) == 300
    assert frame["TX_DATETIME"].is_monotonic_increasing
    assert frame["TX_TIME_SECONDS"].is_monotonic_increasing
    assert frame["TRANSACTION_ID"].tolist() == list(range(300))
    # Both days are represented (the draw is over the whole replay, not its start).
    assert set(frame["TX_TIME_DAYS"]) == {FIRST_DAY, FIRST_DAY + 1}


def test_same_seed_gives_the_same_frame(small_params: SimulatorParams) -> None:
    first = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300, seed=5))
    again = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300, seed=5))
    pd.testing.assert_frame_equal(first, again)


def test_another_seed_draws_other_rows_of_the_same_world(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    first = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300, seed=5))
    other = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300, seed=6))
    world = row_keys(baseline)
    assert row_keys(first) <= world
    assert row_keys(other) <= world
    # ~1,170 rows, 300 drawn twice: the draws overlap by ~25%, far from entirely.
    assert len(row_keys(first) & row_keys(other)) < 200


# ----------------------------------------------------------------- drift scenarios


def test_amount_shift_multiplies_the_replayed_amounts(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    shift = AmountShift(enabled=True, multiplier=1.37)
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, replay(amount_shift=shift))
    assert len(frame) == len(baseline)
    np.testing.assert_array_equal(
        frame["TX_AMOUNT"].to_numpy(), np.round(baseline["TX_AMOUNT"].to_numpy() * 1.37, 2)
    )
    # Labels, times, cards and terminals are untouched; so are the count and terminal
    # features (only the customers' mean amounts follow the new amounts).
    unchanged = [c for c in baseline.columns if c != "TX_AMOUNT" and "AVG_AMOUNT" not in c]
    pd.testing.assert_frame_equal(frame[unchanged], baseline[unchanged])
    # The features see the new amounts: a customer's only payment in the last day is its
    # own 1-day mean.
    alone = frame["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert alone.sum() > 100
    np.testing.assert_allclose(
        frame.loc[alone, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"], frame.loc[alone, "TX_AMOUNT"]
    )
    # The 30-day means mix in the unshifted history, so they rise by less than 37%.
    ratio = (
        frame["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"].mean()
        / baseline["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"].mean()
    )
    assert 1.0 < ratio < 1.2


def test_new_fraud_pattern_adds_night_card_testing(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    pattern = NewFraudPattern(
        enabled=True, cards_per_day=12, transactions_per_card=7, min_amount=1.0, max_amount=3.0
    )
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, replay(new_fraud_pattern=pattern))
    testing = frame[frame["TX_FRAUD_SCENARIO"] == CARD_TESTING_SCENARIO]
    assert len(frame) == len(baseline) + 2 * 12 * 7
    assert testing.groupby("TX_TIME_DAYS").size().to_dict() == {FIRST_DAY: 84, FIRST_DAY + 1: 84}
    assert (testing["TX_FRAUD"] == 1).all()
    assert testing["TX_AMOUNT"].between(1.0, 3.0).all()
    np.testing.assert_allclose(testing["TX_AMOUNT"] * 100, np.round(testing["TX_AMOUNT"] * 100))
    assert (testing["TX_DATETIME"].dt.hour < 6).all()
    assert (testing["TX_DURING_NIGHT"] == 1).all()
    # Seven payments per card on a day, each card's burst within one hour.
    per_card = testing.groupby(["TX_TIME_DAYS", "CUSTOMER_ID"])["TX_TIME_SECONDS"]
    assert (per_card.size() % 7 == 0).all()
    # Times are consistent across the time columns.
    start = pd.Timestamp(small_params.start_date)
    seconds = testing["TX_TIME_SECONDS"]
    assert (testing["TX_DATETIME"] == start + pd.to_timedelta(seconds, unit="s")).all()
    assert (seconds // SECONDS_PER_DAY == testing["TX_TIME_DAYS"]).all()
    assert testing["CUSTOMER_ID"].between(0, small_params.n_customers - 1).all()
    assert testing["TERMINAL_ID"].between(0, small_params.n_terminals - 1).all()
    # The whole replay stays in time order and is renumbered, the new rows included.
    assert frame["TX_DATETIME"].is_monotonic_increasing
    assert frame["TRANSACTION_ID"].tolist() == list(range(len(frame)))
    # The other rows are the baseline's: same transactions, and same features for every
    # customer whose card was not tested (terminal features only see labels 7 days old).
    others = frame[frame["TX_FRAUD_SCENARIO"] != CARD_TESTING_SCENARIO]
    pd.testing.assert_frame_equal(others[RAW_COLUMNS].reset_index(drop=True), baseline[RAW_COLUMNS])
    untested = ~others["CUSTOMER_ID"].isin(testing["CUSTOMER_ID"]).to_numpy()
    pd.testing.assert_frame_equal(without_id(others[untested]), without_id(baseline[untested]))
    terminal = [c for c in FEATURES if c.startswith("TERMINAL_ID")]
    pd.testing.assert_frame_equal(others[terminal].reset_index(drop=True), baseline[terminal])


def test_new_fraud_pattern_tests_cards_per_day_distinct_cards(
    small_params: SimulatorParams,
) -> None:
    pattern = NewFraudPattern(enabled=True, cards_per_day=20, transactions_per_card=5)
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, replay(new_fraud_pattern=pattern))
    testing = frame[frame["TX_FRAUD_SCENARIO"] == CARD_TESTING_SCENARIO]
    cards = testing.groupby("TX_TIME_DAYS")["CUSTOMER_ID"].nunique()
    assert cards.to_dict() == {FIRST_DAY: 20, FIRST_DAY + 1: 20}


def test_new_fraud_pattern_depends_on_the_replay_seed(small_params: SimulatorParams) -> None:
    pattern = NewFraudPattern(enabled=True, cards_per_day=5, transactions_per_card=3)

    def card_testing_rows(seed: int) -> pd.DataFrame:
        params = replay(seed=seed, new_fraud_pattern=pattern)
        frame = replay_traffic(small_params, FeatureParams(), SPLIT, params)
        return without_id(frame[frame["TX_FRAUD_SCENARIO"] == CARD_TESTING_SCENARIO])

    first, again, other = card_testing_rows(3), card_testing_rows(3), card_testing_rows(4)
    pd.testing.assert_frame_equal(first, again)
    assert len(other) == len(first) == 30
    assert not first["TX_TIME_SECONDS"].equals(other["TX_TIME_SECONDS"])


def test_broken_feature_is_constant_and_nothing_else_changes(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    broken = BrokenFeature(enabled=True, feature="TERMINAL_ID_RISK_7DAY_WINDOW", value=-2.5)
    frame = replay_traffic(small_params, FeatureParams(), SPLIT, replay(broken_feature=broken))
    assert baseline["TERMINAL_ID_RISK_7DAY_WINDOW"].nunique() > 1
    assert (frame["TERMINAL_ID_RISK_7DAY_WINDOW"] == -2.5).all()
    assert frame["TERMINAL_ID_RISK_7DAY_WINDOW"].dtype == np.float64
    rest = [c for c in baseline.columns if c != "TERMINAL_ID_RISK_7DAY_WINDOW"]
    pd.testing.assert_frame_equal(frame[rest], baseline[rest])


def test_broken_feature_default_is_the_7_day_customer_count(
    small_params: SimulatorParams,
) -> None:
    frame = replay_traffic(
        small_params,
        FeatureParams(),
        SPLIT,
        replay(rows=200, broken_feature=BrokenFeature(enabled=True)),
    )
    # 1, not 0: the schema's lower bound for a count that includes the payment itself,
    # so the API accepts the broken rows and the monitor is the one to notice.
    assert (frame["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 1.0).all()
    assert frame["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].min() >= 1


@pytest.mark.parametrize("name", ["NO_SUCH_FEATURE", "TX_AMOUNT", "TX_FRAUD", "TRANSACTION_ID"])
def test_broken_feature_must_be_an_engineered_feature(
    small_params: SimulatorParams, name: str
) -> None:
    broken = BrokenFeature(enabled=True, feature=name)
    with pytest.raises(ParamsError) as caught:
        replay_traffic(small_params, FeatureParams(), SPLIT, replay(broken_feature=broken))
    message = str(caught.value)
    assert message.startswith("replay.scenarios.broken_feature.feature")
    assert f"'{name}'" in message
    # The message lists the valid choices (the engineered features), not the raw columns.
    assert "TX_DURING_WEEKEND" in message
    assert "CUSTOMER_ID_NB_TX_7DAY_WINDOW" in message
    assert "TX_TIME_SECONDS" not in message


def top_spender_share(frame: pd.DataFrame, params: SimulatorParams, top_share: float) -> float:
    """Share of rows from the customers whose profile's mean amount is in the top share."""
    mean_amount = make_world(params).mean_amount
    top = np.flatnonzero(mean_amount >= np.quantile(mean_amount, 1 - top_share))
    return float(frame["CUSTOMER_ID"].isin(top).mean())


def test_customer_mix_favours_the_top_spenders(small_params: SimulatorParams) -> None:
    mix = CustomerMix(enabled=True, top_share=0.25, weight=5.0)
    plain = replay_traffic(small_params, FeatureParams(), SPLIT, replay(rows=300, seed=2))
    mixed = replay_traffic(
        small_params, FeatureParams(), SPLIT, replay(rows=300, seed=2, customer_mix=mix)
    )
    assert len(plain) == len(mixed) == 300
    plain_share = top_spender_share(plain, small_params, 0.25)
    mixed_share = top_spender_share(mixed, small_params, 0.25)
    assert 0.15 < plain_share < 0.4
    assert mixed_share > plain_share + 0.2
    assert mixed["TX_AMOUNT"].mean() > 1.1 * plain["TX_AMOUNT"].mean()
    assert mixed["TX_DATETIME"].is_monotonic_increasing


def test_customer_mix_only_changes_which_rows_are_drawn(
    small_params: SimulatorParams, baseline: pd.DataFrame
) -> None:
    mix = CustomerMix(enabled=True, weight=20.0)
    sampled = replay_traffic(
        small_params, FeatureParams(), SPLIT, replay(rows=300, customer_mix=mix)
    )
    assert row_keys(sampled) <= row_keys(baseline)
    # With every row sent there is nothing to favour: the baseline comes back.
    everything = replay_traffic(small_params, FeatureParams(), SPLIT, replay(customer_mix=mix))
    pd.testing.assert_frame_equal(everything, baseline)


def test_customer_mix_with_card_testing_of_unseen_customers(
    small_params: SimulatorParams,
) -> None:
    # Card testing can pick customers who never pay (no terminal in reach): they have no
    # average spending, count as not top, and the draw still works.
    mix = CustomerMix(enabled=True)
    pattern = NewFraudPattern(enabled=True, cards_per_day=150, transactions_per_card=2)
    frame = replay_traffic(
        small_params,
        FeatureParams(),
        SPLIT,
        replay(rows=500, customer_mix=mix, new_fraud_pattern=pattern),
    )
    assert len(frame) == 500
    assert frame["TX_DATETIME"].is_monotonic_increasing
    # The weights were computed over rows of such customers: the same card testing (it
    # depends on the seed, not on rows) holds customers without a reachable terminal.
    full = replay_traffic(
        small_params, FeatureParams(), SPLIT, replay(customer_mix=mix, new_fraud_pattern=pattern)
    )
    never_pay = np.flatnonzero(np.diff(make_world(small_params).offsets) == 0)
    tested = full.loc[full["TX_FRAUD_SCENARIO"] == CARD_TESTING_SCENARIO, "CUSTOMER_ID"]
    assert tested.isin(never_pay).any()


# ------------------------------------------------------------------------ params


def test_new_fraud_pattern_amounts_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="min_amount must be below max_amount"):
        NewFraudPattern(min_amount=5.0, max_amount=5.0)
    with pytest.raises(ValidationError, match="min_amount must be below max_amount"):
        NewFraudPattern(min_amount=6.0, max_amount=2.0)
    assert NewFraudPattern(min_amount=0.1, max_amount=0.2).max_amount == 0.2


def test_drift_scenarios_are_off_by_default_and_listed_when_on() -> None:
    assert DriftScenarios().enabled == []
    assert ReplayParams().scenarios.enabled == []
    both = DriftScenarios(
        amount_shift=AmountShift(enabled=True), customer_mix=CustomerMix(enabled=True)
    )
    assert both.enabled == ["amount_shift", "customer_mix"]
    every = DriftScenarios.model_validate(
        {name: {"enabled": True} for name in DriftScenarios.model_fields}
    )
    assert every.enabled == ["amount_shift", "new_fraud_pattern", "broken_feature", "customer_mix"]


def test_replay_params_reject_unknown_and_invalid_keys() -> None:
    with pytest.raises(ValidationError, match="amount_shfit"):
        ReplayParams.model_validate({"scenarios": {"amount_shfit": {"enabled": True}}})
    with pytest.raises(ValidationError):
        ReplayParams(rows=0)
    with pytest.raises(ValidationError):
        AmountShift(multiplier=0)
    with pytest.raises(ValidationError):
        CustomerMix(top_share=1.0)
    with pytest.raises(ValidationError):
        BrokenFeature(feature="")
