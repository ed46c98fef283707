"""The transaction simulator: the generating process, the fraud scenarios, reproducibility."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.simulator import COLUMNS, SECONDS_PER_DAY, make_world, simulate
from fraud_detection.params import SimulatorParams

# The three scenario sections of params.yaml, by scenario number.
SCENARIO_KEYS = {1: "large_amount", 2: "compromised_terminals", 3: "compromised_cards"}


def with_scenarios(params: SimulatorParams, enabled: set[int]) -> SimulatorParams:
    """``params`` with only the scenarios numbered in ``enabled`` switched on."""
    scenarios = params.scenarios
    for number, key in SCENARIO_KEYS.items():
        section = getattr(scenarios, key).model_copy(update={"enabled": number in enabled})
        scenarios = scenarios.model_copy(update={key: section})
    return params.model_copy(update={"scenarios": scenarios})


def transactions_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns that do not depend on fraud labels."""
    return frame[["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def handbook_60_days() -> pd.DataFrame:
    """The handbook-size world (5,000 customers, 10,000 terminals), first 60 days (~1 s)."""
    return simulate(SimulatorParams(n_days=60))


@pytest.fixture(scope="module")
def base_amounts(small_params: SimulatorParams) -> pd.DataFrame:
    """The small world without scenario 3: every amount as drawn, never inflated."""
    return simulate(with_scenarios(small_params, {1, 2}))


# ------------------------------------------------------------------ shape and volume


def test_columns_and_types(small_transactions):
    frame = small_transactions
    assert list(frame.columns) == COLUMNS
    assert pd.api.types.is_datetime64_any_dtype(frame["TX_DATETIME"])
    for column in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_TIME_SECONDS"):
        assert pd.api.types.is_integer_dtype(frame[column]), column
    assert frame["TRANSACTION_ID"].tolist() == list(range(len(frame)))
    assert frame["TX_DATETIME"].is_monotonic_increasing


def test_times_fall_inside_their_day(small_transactions, small_params):
    frame = small_transactions
    seconds = frame["TX_TIME_SECONDS"]
    assert (seconds >= 0).all()
    assert (seconds // SECONDS_PER_DAY == frame["TX_TIME_DAYS"]).all()
    assert frame["TX_TIME_DAYS"].between(0, small_params.n_days - 1).all()
    start = pd.Timestamp(small_params.start_date)
    assert (frame["TX_DATETIME"] == start + pd.to_timedelta(seconds, unit="s")).all()
    assert (
        frame["TX_DATETIME"].dt.normalize()
        == start + pd.to_timedelta(frame["TX_TIME_DAYS"], unit="D")
    ).all()
    assert frame["TX_DATETIME"].min() >= start
    end = small_params.start_date + dt.timedelta(days=small_params.n_days)
    assert frame["TX_DATETIME"].max() < pd.Timestamp(end)


def test_times_of_day_centre_on_noon(small_transactions):
    time_of_day = small_transactions["TX_TIME_SECONDS"] % SECONDS_PER_DAY
    assert abs(time_of_day.mean() - SECONDS_PER_DAY / 2) < 600
    # Normal(43,200, 20,000) truncated to the day: its sd is a bit below 20,000.
    assert 17_000 < time_of_day.std() < 20_000


def test_amounts_are_non_negative_cents(small_transactions):
    amount = small_transactions["TX_AMOUNT"].to_numpy()
    assert (amount >= 0).all()
    np.testing.assert_allclose(amount * 100, np.round(amount * 100), atol=1e-6)


def test_every_terminal_is_within_the_radius_of_its_customer(small_transactions, small_params):
    world = make_world(small_params)
    customer_xy = world.customer_xy[small_transactions["CUSTOMER_ID"].to_numpy()]
    terminal_xy = world.terminal_xy[small_transactions["TERMINAL_ID"].to_numpy()]
    distance = np.linalg.norm(customer_xy - terminal_xy, axis=1)
    assert distance.max() <= small_params.radius
    # The radius is used: the farthest pairs come close to it.
    assert distance.max() > 0.8 * small_params.radius


def test_customers_without_terminals_never_pay(small_transactions, small_params):
    world = make_world(small_params)
    degree = np.diff(world.offsets)
    isolated = np.flatnonzero(degree == 0)
    assert len(isolated) > 0, "the small world should have some isolated customers"
    assert not small_transactions["CUSTOMER_ID"].isin(isolated).any()


def test_daily_volume_matches_the_poisson_rates(small_transactions, small_params):
    world = make_world(small_params)
    reachable = np.diff(world.offsets) > 0
    inside_the_day = math.erf(SECONDS_PER_DAY / 2 / 20_000 / math.sqrt(2))
    expected = world.tx_per_day[reachable].sum() * inside_the_day
    observed = len(small_transactions) / small_params.n_days
    assert observed == pytest.approx(expected, rel=0.03)


def test_make_world_profiles(small_params):
    world = make_world(small_params)
    assert world.n_customers == small_params.n_customers
    assert world.n_terminals == small_params.n_terminals
    assert ((world.customer_xy >= 0) & (world.customer_xy <= 100)).all()
    assert ((world.terminal_xy >= 0) & (world.terminal_xy <= 100)).all()
    assert ((world.mean_amount >= 5) & (world.mean_amount <= 100)).all()
    np.testing.assert_allclose(world.std_amount, world.mean_amount / 2)
    assert ((world.tx_per_day >= 0) & (world.tx_per_day <= 4)).all()


def test_make_world_reachable_terminals_are_exactly_those_within_the_radius(small_params):
    world = make_world(small_params)
    distances = np.linalg.norm(
        world.customer_xy[:, None, :] - world.terminal_xy[None, :, :], axis=2
    )
    for customer in range(0, world.n_customers, 7):
        reachable = world.reachable[world.offsets[customer] : world.offsets[customer + 1]]
        expected = np.flatnonzero(distances[customer] <= small_params.radius)
        assert sorted(reachable.tolist()) == expected.tolist()


def test_make_world_is_seeded(small_params):
    first, again = make_world(small_params), make_world(small_params)
    other = make_world(small_params.model_copy(update={"seed": small_params.seed + 1}))
    np.testing.assert_array_equal(first.customer_xy, again.customer_xy)
    np.testing.assert_array_equal(first.reachable, again.reachable)
    assert not np.array_equal(first.customer_xy, other.customer_xy)


def test_progress_is_reported_for_every_day(small_params):
    calls: list[tuple[int, int]] = []
    params = small_params.model_copy(update={"n_days": 5})
    simulate(params, progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    # The simulator also generates the days a leaked card's period runs past the end.
    expected_margin = params.scenarios.compromised_cards.duration_days - 1
    assert total == 5 + expected_margin
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_fraud_flag_agrees_with_the_scenario(small_transactions):
    scenario = small_transactions["TX_FRAUD_SCENARIO"]
    assert set(scenario.unique()) <= {0, 1, 2, 3}
    assert (small_transactions["TX_FRAUD"] == (scenario > 0).astype(int)).all()


def test_small_world_fraud_share_is_plausible(small_transactions):
    share = small_transactions["TX_FRAUD"].mean()
    assert 0.003 < share < 0.03


@pytest.mark.parametrize("scenario", [1, 2, 3])
def test_each_scenario_occurs(small_transactions, scenario):
    assert (small_transactions["TX_FRAUD_SCENARIO"] == scenario).sum() >= 5


def test_handbook_world_matches_the_published_figures(handbook_60_days):
    frame = handbook_60_days
    per_day = frame.groupby("TX_TIME_DAYS").size()
    assert 9_000 < per_day.mean() < 10_500  # "about 10,000 a day"
    assert 0.004 < frame["TX_FRAUD"].mean() < 0.012  # 0.84% over 183 days, less at first
    # Once scenarios 2 and 3 have run for their full span: ~85 frauds and ~80 cards a day.
    settled = frame[frame["TX_TIME_DAYS"] >= 30]
    frauds = settled[settled["TX_FRAUD"] == 1]
    assert 60 < frauds.groupby("TX_TIME_DAYS").size().mean() < 110
    assert 55 < frauds.groupby("TX_TIME_DAYS")["CUSTOMER_ID"].nunique().mean() < 105
    assert set(frame["TX_FRAUD_SCENARIO"].unique()) == {0, 1, 2, 3}


def test_scenario_1_labels_every_large_amount(small_transactions, base_amounts, small_params):
    threshold = small_params.scenarios.large_amount.threshold
    frame = small_transactions
    pd.testing.assert_frame_equal(transactions_only(frame), transactions_only(base_amounts))
    drawn = base_amounts["TX_AMOUNT"]
    scenario = frame["TX_FRAUD_SCENARIO"]
    # Scenario 1 rows: a large amount, as drawn (scenario 3 would have overwritten them).
    assert (frame.loc[scenario == 1, "TX_AMOUNT"] > threshold).all()
    assert (frame.loc[scenario == 1, "TX_AMOUNT"] == drawn[scenario == 1]).all()
    # Every amount drawn above the threshold is fraud, by scenario 1 or a later one.
    assert (frame.loc[drawn > threshold, "TX_FRAUD"] == 1).all()
    assert (drawn > threshold).sum() >= (scenario == 1).sum() > 0
    # Genuine rows keep their drawn amount, and it never exceeds the threshold.
    assert (frame.loc[scenario == 0, "TX_AMOUNT"] <= threshold).all()


def test_scenario_1_threshold_is_configurable(small_params):
    params = with_scenarios(small_params, {1})
    lowered = params.scenarios.model_copy(
        update={"large_amount": params.scenarios.large_amount.model_copy(update={"threshold": 100})}
    )
    frame = simulate(params.model_copy(update={"scenarios": lowered, "n_days": 10}))
    assert ((frame["TX_AMOUNT"] > 100) == (frame["TX_FRAUD"] == 1)).all()
    assert frame["TX_FRAUD"].sum() > 0


def test_scenario_3_inflates_amounts_of_leaked_cards(
    small_transactions, base_amounts, small_params
):
    multiplier = small_params.scenarios.compromised_cards.amount_multiplier
    leaked = (small_transactions["TX_FRAUD_SCENARIO"] == 3).to_numpy()
    amount = small_transactions["TX_AMOUNT"].to_numpy()
    drawn = base_amounts["TX_AMOUNT"].to_numpy()
    np.testing.assert_array_equal(amount[~leaked], drawn[~leaked])
    # Each leaked row is inflated once, or a few times when two draws overlap.
    inflated_once = np.round(drawn * multiplier, 2)
    inflated_twice = np.round(inflated_once * multiplier, 2)
    once = np.isclose(amount, inflated_once)
    twice = np.isclose(amount, inflated_twice)
    assert (once | twice)[leaked].all()
    assert once[leaked].mean() > 0.9


def test_scenario_3_is_confined_to_a_few_cards(small_transactions, small_params):
    scenario = small_params.scenarios.compromised_cards
    leaked = small_transactions[small_transactions["TX_FRAUD_SCENARIO"] == 3]
    assert leaked["CUSTOMER_ID"].nunique() <= scenario.per_day * small_params.n_days
    # A leaked card spends a share of its transactions fraudulently, not all of them.
    cards = small_transactions[small_transactions["CUSTOMER_ID"].isin(leaked["CUSTOMER_ID"])]
    assert len(leaked) < 0.5 * len(cards)


def test_scenario_2_compromises_whole_terminal_days(small_params):
    params = with_scenarios(small_params, {2})
    frame = simulate(params)
    assert set(frame["TX_FRAUD_SCENARIO"].unique()) == {0, 2}
    per_terminal_day = frame.groupby(["TERMINAL_ID", "TX_TIME_DAYS"])["TX_FRAUD"].agg(
        ["min", "max"]
    )
    # On a given day a terminal is either compromised (every payment fraud) or not.
    assert (per_terminal_day["min"] == per_terminal_day["max"]).all()
    compromised = frame.loc[frame["TX_FRAUD"] == 1, "TERMINAL_ID"].nunique()
    assert 0 < compromised <= params.scenarios.compromised_terminals.per_day * params.n_days


@pytest.mark.parametrize("disabled", [1, 2, 3])
def test_disabling_a_scenario_removes_it(small_params, disabled):
    frame = simulate(with_scenarios(small_params, {1, 2, 3} - {disabled}))
    present = set(frame["TX_FRAUD_SCENARIO"].unique())
    assert disabled not in present
    assert present == {0, 1, 2, 3} - {disabled}


def test_no_scenario_means_no_fraud(small_params):
    frame = simulate(with_scenarios(small_params, set()))
    assert frame["TX_FRAUD"].sum() == 0
    assert (frame["TX_FRAUD_SCENARIO"] == 0).all()


# ------------------------------------------------------------------ reproducibility


def test_same_seed_same_frame(small_params, small_transactions):
    pd.testing.assert_frame_equal(simulate(small_params), small_transactions)


def test_different_seed_different_frame(small_params, small_transactions):
    other = simulate(small_params.model_copy(update={"seed": small_params.seed + 1}))
    assert len(other) != len(small_transactions) or not other.equals(small_transactions)
    # Not a mere relabelling: the customers' activity differs.
    counts = small_transactions["CUSTOMER_ID"].value_counts().sort_index()
    other_counts = other["CUSTOMER_ID"].value_counts().sort_index()
    assert not counts.equals(other_counts)


def test_later_range_reproduces_the_transactions_of_those_days(small_params, base_amounts):
    days = range(20, 45)
    later = simulate(with_scenarios(small_params, {1, 2}), days=days)
    full = base_amounts[base_amounts["TX_TIME_DAYS"].isin(days)].reset_index(drop=True)
    assert later["TX_TIME_DAYS"].min() == 20
    assert later["TX_TIME_DAYS"].max() == 44
    pd.testing.assert_frame_equal(transactions_only(later), transactions_only(full))
    # Amounts before any fraud inflation (scenario 3 is off in both runs).
    np.testing.assert_array_equal(later["TX_AMOUNT"].to_numpy(), full["TX_AMOUNT"].to_numpy())
    assert later["TRANSACTION_ID"].tolist() == list(range(len(later)))


def test_later_range_to_the_end_continues_the_same_world(small_params, small_transactions):
    """Frauds started before the range (terminals, cards) carry over into it."""
    days = range(35, small_params.n_days)
    later = simulate(small_params, days=days)
    full = small_transactions[small_transactions["TX_TIME_DAYS"] >= days.start]
    pd.testing.assert_frame_equal(
        later.drop(columns="TRANSACTION_ID"),
        full.drop(columns="TRANSACTION_ID").reset_index(drop=True),
    )
    # Fraud is present from the range's first day, not only after a warm-up.
    first_days = later[later["TX_TIME_DAYS"] < days.start + 2]
    assert first_days["TX_FRAUD_SCENARIO"].isin([2, 3]).any()


def test_shorter_simulation_keeps_the_labels_of_the_days_it_shares(
    small_params, small_transactions
):
    shorter = simulate(small_params.model_copy(update={"n_days": 40}))
    full = small_transactions[small_transactions["TX_TIME_DAYS"] < 40].reset_index(drop=True)
    pd.testing.assert_frame_equal(transactions_only(shorter), transactions_only(full))
    pd.testing.assert_frame_equal(shorter, full)


def test_seeds_follow_the_calendar_date(small_params, small_transactions):
    """A simulation starting 20 days later draws the same transactions for shared dates."""
    later_start = small_params.start_date + dt.timedelta(days=20)
    # Same end date (2018-05-31) as the fixture's 60 days from 2018-04-01.
    shifted = simulate(small_params.model_copy(update={"start_date": later_start, "n_days": 40}))
    overlap = small_transactions[small_transactions["TX_DATETIME"] >= pd.Timestamp(later_start)]
    pd.testing.assert_frame_equal(transactions_only(shifted), transactions_only(overlap))
    assert shifted["TX_TIME_DAYS"].min() == 0  # day numbers restart at the new start date
    # Once the longest scenario has run its course after the later start, the frauds
    # (and inflated amounts) agree too: their draws are keyed by date as well.
    longest = max(
        small_params.scenarios.compromised_terminals.duration_days,
        small_params.scenarios.compromised_cards.duration_days,
    )
    settled = pd.Timestamp(later_start + dt.timedelta(days=longest))
    a = shifted[shifted["TX_DATETIME"] >= settled].reset_index(drop=True)
    b = overlap[overlap["TX_DATETIME"] >= settled].reset_index(drop=True)
    for column in ("TX_AMOUNT", "TX_FRAUD", "TX_FRAUD_SCENARIO"):
        pd.testing.assert_series_equal(a[column], b[column])


def test_start_date_changes_the_draws(small_params, small_transactions):
    shifted = simulate(small_params.model_copy(update={"start_date": dt.date(2019, 4, 1)}))
    first_day = small_transactions[small_transactions["TX_TIME_DAYS"] == 0]
    shifted_first_day = shifted[shifted["TX_TIME_DAYS"] == 0]
    assert not np.array_equal(
        first_day["CUSTOMER_ID"].to_numpy(), shifted_first_day["CUSTOMER_ID"].to_numpy()
    )
