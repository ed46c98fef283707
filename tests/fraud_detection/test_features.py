"""Feature engineering: exact window values, no look-ahead, row order, and a pandas oracle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.simulator import simulate
from fraud_detection.features import (
    REQUIRED_COLUMNS,
    customer_count_name,
    customer_features,
    customer_mean_name,
    feature_schema,
    terminal_count_name,
    terminal_features,
    terminal_risk_name,
    transaction_features,
)
from fraud_detection.params import FeatureParams, SimulatorParams
from tests.reference_features import rolling_features

SHORT = FeatureParams(customer_windows_days=[1, 7], terminal_windows_days=[1, 7])


def table(rows: list[tuple[str, int, int, float, int]]) -> pd.DataFrame:
    """Hand-made transactions: (time, customer, terminal, amount, fraud)."""
    frame = pd.DataFrame(rows, columns=REQUIRED_COLUMNS)
    frame["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"])
    return frame


def engineered(params: FeatureParams) -> list[str]:
    return [name for name in feature_schema(params).names if name != "TX_AMOUNT"]


# --------------------------------------------------------------- customer windows


@pytest.fixture
def one_customer() -> pd.DataFrame:
    # 2018-04-02 is a Monday. Customer 1 pays five times; customer 2 once, in between.
    return table(
        [
            ("2018-04-02 10:00:00", 1, 50, 10.0, 0),
            ("2018-04-02 22:00:00", 1, 51, 20.0, 1),
            ("2018-04-02 11:00:00", 2, 50, 100.0, 0),
            ("2018-04-03 10:00:00", 1, 50, 30.0, 0),  # exactly 1 day after the first
            ("2018-04-09 10:00:00", 1, 52, 40.0, 0),  # exactly 7 days after the first
            ("2018-04-09 10:00:01", 1, 52, 50.0, 0),
        ]
    )


def test_customer_windows_by_hand(one_customer):
    out = transaction_features(one_customer, SHORT)
    # Windows are (t - w, t]: the current row is in, a row exactly w earlier is out.
    assert out[customer_count_name(1)].tolist() == [1, 2, 1, 2, 1, 2]
    assert out[customer_mean_name(1)].tolist() == [10, 15, 100, 25, 40, 45]
    assert out[customer_count_name(7)].tolist() == [1, 2, 1, 3, 3, 4]
    assert out[customer_mean_name(7)].tolist() == [10, 15, 100, 20, 30, 35]


def test_customer_windows_ignore_other_customers(one_customer):
    alone = one_customer[one_customer["CUSTOMER_ID"] == 1]
    together = transaction_features(one_customer, SHORT)
    separate = transaction_features(alone, SHORT)
    columns = [customer_count_name(7), customer_mean_name(7)]
    pd.testing.assert_frame_equal(together.loc[alone.index, columns], separate[columns])


def test_customer_windows_use_the_configured_widths(one_customer):
    params = FeatureParams(customer_windows_days=[2, 8], terminal_windows_days=[1])
    out = transaction_features(one_customer, params)
    assert out[customer_count_name(2)].tolist() == [1, 2, 1, 3, 1, 2]
    assert out[customer_count_name(8)].tolist() == [1, 2, 1, 3, 4, 5]
    assert out[customer_mean_name(8)].tolist() == [10, 15, 100, 20, 25, 30]
    assert customer_count_name(1) not in out.columns


# --------------------------------------------------------------- terminal windows


@pytest.fixture
def one_terminal() -> pd.DataFrame:
    # Terminal 9's history (customers differ so that only terminal features matter).
    return table(
        [
            ("2018-04-01 12:00:00", 1, 9, 10.0, 1),
            ("2018-04-02 12:00:00", 2, 9, 10.0, 0),
            ("2018-04-05 12:00:00", 3, 9, 10.0, 1),
            ("2018-04-09 12:00:00", 4, 9, 10.0, 0),  # exactly 7 days after the second
            ("2018-04-10 00:00:00", 5, 9, 10.0, 0),
            ("2018-04-12 12:00:00", 6, 9, 10.0, 0),
            ("2018-04-02 12:00:00", 7, 8, 10.0, 1),  # another terminal's fraud
        ]
    )


def test_terminal_windows_with_a_seven_day_delay(one_terminal):
    out = transaction_features(one_terminal, SHORT.model_copy(update={"label_delay_days": 7}))
    # Row 3 (04-09 12:00) sees (04-01 12:00, 04-02 12:00] for 1 day: only row 1.
    # Row 5 (04-12 12:00) sees row 2 for 1 day; rows 0, 1, 2 for 7 days.
    assert out[terminal_count_name(1)].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert out[terminal_risk_name(1)].tolist() == [0, 0, 0, 0, 0, 1, 0]
    assert out[terminal_count_name(7)].tolist() == [0, 0, 0, 2, 2, 3, 0]
    np.testing.assert_allclose(out[terminal_risk_name(7)], [0, 0, 0, 0.5, 0.5, 2 / 3, 0])


def test_terminal_windows_without_delay_exclude_the_current_row(one_terminal):
    out = transaction_features(one_terminal, SHORT.model_copy(update={"label_delay_days": 0}))
    # Windows (t - w, t] minus the row itself: row 2 (a fraud) sees rows 0 and 1 over
    # 7 days, risk 1/2; counting its own label would give 2/3.
    assert out[terminal_count_name(1)].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert out[terminal_risk_name(1)].tolist() == [0, 0, 0, 0, 0, 0, 0]
    assert out[terminal_count_name(7)].tolist() == [0, 1, 2, 1, 2, 2, 0]
    np.testing.assert_allclose(out[terminal_risk_name(7)], [0, 1, 0.5, 1, 0.5, 0, 0])


@pytest.mark.parametrize("delay", [0, 7])
def test_a_row_never_sees_its_own_label(one_terminal, delay):
    params = SHORT.model_copy(update={"label_delay_days": delay})
    before = transaction_features(one_terminal, params)
    for row in one_terminal.index:
        flipped = one_terminal.copy()
        flipped.loc[row, "TX_FRAUD"] = 1 - flipped.loc[row, "TX_FRAUD"]
        after = transaction_features(flipped, params)
        pd.testing.assert_series_equal(
            after.loc[row, engineered(params)], before.loc[row, engineered(params)]
        )


def test_terminal_features_ignore_other_terminals(one_terminal):
    params = SHORT.model_copy(update={"label_delay_days": 0})
    out = transaction_features(one_terminal, params)
    # Terminal 8's single row has no history although terminal 9 has a fraud at that time.
    assert out.loc[6, terminal_count_name(7)] == 0
    # Row 3 at terminal 9 would see 2 frauds over 7 days if terminal 8's counted.
    assert out.loc[3, terminal_risk_name(7)] == 1.0


# ------------------------------------------------------------------- calendar flags


def test_weekend_and_night_flags():
    frame = table(
        [
            ("2018-04-06 23:59:59", 1, 1, 1.0, 0),  # Friday, late evening
            ("2018-04-07 00:00:00", 1, 1, 1.0, 0),  # Saturday, midnight
            ("2018-04-08 06:59:59", 1, 1, 1.0, 0),  # Sunday, last night second
            ("2018-04-09 07:00:00", 1, 1, 1.0, 0),  # Monday, first day second
            ("2018-04-09 12:00:00", 1, 1, 1.0, 0),
        ]
    )
    out = transaction_features(frame, SHORT)
    assert out["TX_DURING_WEEKEND"].tolist() == [0, 1, 1, 0, 0]
    assert out["TX_DURING_NIGHT"].tolist() == [0, 1, 1, 0, 0]
    early = transaction_features(frame, SHORT.model_copy(update={"night_last_hour": 0}))
    assert early["TX_DURING_NIGHT"].tolist() == [0, 1, 0, 0, 0]


# ---------------------------------------------------------- output shape and order


def test_raw_columns_are_kept_and_features_added(one_customer):
    out = transaction_features(one_customer, FeatureParams())
    assert list(out.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert set(out.columns) == set(REQUIRED_COLUMNS) | set(feature_schema(FeatureParams()).names)
    assert out["TX_AMOUNT"].dtype == np.float64
    for name in engineered(FeatureParams()):
        assert out[name].dtype == np.float64, name
    pd.testing.assert_index_equal(out.index, one_customer.index)


def test_integer_amounts_become_float(one_customer):
    frame = one_customer.assign(TX_AMOUNT=one_customer["TX_AMOUNT"].astype(np.int64))
    out = transaction_features(frame, SHORT)
    assert out["TX_AMOUNT"].dtype == np.float64
    assert out[customer_mean_name(1)].tolist() == [10, 15, 100, 25, 40, 45]


def test_missing_column_is_named(one_customer):
    with pytest.raises(ValueError, match=r"lack column\(s\) \['TERMINAL_ID'\]"):
        transaction_features(one_customer.drop(columns="TERMINAL_ID"), SHORT)


def untied(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop rows sharing a second with another row of the same customer or terminal
    (their relative order, and hence their windows, depends on the input order)."""
    tied = frame.duplicated(["CUSTOMER_ID", "TX_DATETIME"], keep=False) | frame.duplicated(
        ["TERMINAL_ID", "TX_DATETIME"], keep=False
    )
    return frame[~tied].reset_index(drop=True)


def test_output_follows_the_input_row_order(small_transactions, feature_params):
    frame = untied(small_transactions[small_transactions["TX_TIME_DAYS"] < 40])
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert not shuffled.index.is_monotonic_increasing
    expected = transaction_features(frame, feature_params)
    out = transaction_features(shuffled, feature_params)
    pd.testing.assert_index_equal(out.index, shuffled.index)
    pd.testing.assert_frame_equal(out.sort_index(), expected)
    # The same with a plain 0..n-1 index after shuffling.
    renumbered = transaction_features(shuffled.reset_index(drop=True), feature_params)
    pd.testing.assert_frame_equal(
        renumbered.set_index(shuffled.index).sort_index(), expected, check_index_type=False
    )


# ---------------------------------------------------------------------- look-ahead


@pytest.fixture(scope="module")
def cut() -> pd.Timestamp:
    return pd.Timestamp("2018-05-10 12:00:00")


def test_later_amounts_do_not_change_earlier_features(small_transactions, feature_params, cut):
    frame = small_transactions
    later = frame["TX_DATETIME"] > cut
    changed = frame.copy()
    changed.loc[later, "TX_AMOUNT"] = changed.loc[later, "TX_AMOUNT"] * 7 + 1
    before = transaction_features(frame, feature_params)
    after = transaction_features(changed, feature_params)
    pd.testing.assert_frame_equal(after[~later], before[~later])
    # Control: the change does reach the later rows' customer means.
    assert not after.loc[later, customer_mean_name(7)].equals(
        before.loc[later, customer_mean_name(7)]
    )


@pytest.mark.parametrize("delay", [7, 0, 3])
def test_labels_after_t_minus_delay_do_not_change_features(small_transactions, cut, delay):
    params = FeatureParams(label_delay_days=delay)
    frame = small_transactions
    # Relabel every transaction whose label would not yet be known at the cut.
    unknown = frame["TX_DATETIME"] > cut - pd.Timedelta(days=delay)
    seen = frame["TX_DATETIME"] <= cut
    changed = frame.copy()
    changed.loc[unknown, "TX_FRAUD"] = 1 - changed.loc[unknown, "TX_FRAUD"]
    before = transaction_features(frame, params)
    after = transaction_features(changed, params)
    features = engineered(params)
    pd.testing.assert_frame_equal(after.loc[seen, features], before.loc[seen, features])
    # Control: relabelling older transactions does change the terminal risk at the cut.
    known = ~unknown
    control = frame.copy()
    control.loc[known, "TX_FRAUD"] = 1 - control.loc[known, "TX_FRAUD"]
    moved = transaction_features(control, params)
    assert not moved.loc[seen, terminal_risk_name(30)].equals(
        before.loc[seen, terminal_risk_name(30)]
    )


# -------------------------------------------------------------------------- oracle


@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(),
        FeatureParams(label_delay_days=0),
        FeatureParams(
            customer_windows_days=[2, 14], terminal_windows_days=[3, 10], label_delay_days=3
        ),
    ],
    ids=["default", "no-delay", "custom"],
)
def test_matches_a_pandas_rolling_oracle(small_transactions, params):
    frame = small_transactions[small_transactions["TX_TIME_DAYS"] < 45]
    out = transaction_features(frame, params).reset_index(drop=True)
    expected = rolling_features(frame, params)
    for name in expected.columns:
        np.testing.assert_allclose(
            out[name].to_numpy(), expected[name].to_numpy(), rtol=1e-9, atol=1e-9, err_msg=name
        )
    # The comparison is not vacuous: terminals do have known history and some risk.
    assert (out[terminal_count_name(params.terminal_windows_days[-1])] > 0).mean() > 0.3
    assert (out[terminal_risk_name(params.terminal_windows_days[-1])] > 0).any()


# -------------------------------------------------------------------------- schema


def test_feature_schema_names_the_engineered_columns(
    small_transactions, small_features, simulator_schema
):
    assert len(simulator_schema.names) == 15
    assert simulator_schema.names == simulator_schema.numeric
    added = [c for c in small_features.columns if c not in small_transactions.columns]
    expected_added = [n for n in simulator_schema.names if n != "TX_AMOUNT"]
    assert sorted(added) == sorted(expected_added)
    assert set(simulator_schema.names) <= set(small_features.columns)
    assert simulator_schema.target == "TX_FRAUD"
    assert simulator_schema.time_column == "TX_DATETIME"
    assert simulator_schema.group_column == "CUSTOMER_ID"
    assert simulator_schema.source == "simulator"


def test_feature_schema_follows_the_windows():
    params = FeatureParams(customer_windows_days=[2], terminal_windows_days=[5, 9])
    schema = feature_schema(params)
    assert schema.names == [
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_2DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_2DAY_WINDOW",
        "TERMINAL_ID_NB_TX_5DAY_WINDOW",
        "TERMINAL_ID_RISK_5DAY_WINDOW",
        "TERMINAL_ID_NB_TX_9DAY_WINDOW",
        "TERMINAL_ID_RISK_9DAY_WINDOW",
    ]


def test_feature_bounds_hold_on_simulated_data(small_features, simulator_schema):
    for feature in simulator_schema.features:
        values = small_features[feature.name]
        assert values.notna().all(), feature.name
        if feature.minimum is not None:
            assert values.min() >= feature.minimum, feature.name
        if feature.maximum is not None:
            assert values.max() <= feature.maximum, feature.name


def test_long_windows_never_reach_into_another_card():
    """A window wider than the gap between two cards' key ranges must stay in its card."""
    start = pd.Timestamp("2020-01-01")
    frame = pd.DataFrame(
        {
            "TX_DATETIME": [start, start + pd.Timedelta(days=1000), start + pd.Timedelta(days=5)],
            "CUSTOMER_ID": [0, 0, 1],
            "TERMINAL_ID": [0, 0, 1],
            "TX_AMOUNT": [10.0, 20.0, 99.0],
            "TX_FRAUD": [1, 1, 0],
        }
    )
    params = FeatureParams(
        customer_windows_days=[900], terminal_windows_days=[900], label_delay_days=0
    )
    result = transaction_features(frame, params)
    assert result[customer_count_name(900)].tolist() == [1.0, 1.0, 1.0]
    assert result[customer_mean_name(900)].tolist() == [10.0, 20.0, 99.0]
    assert result[terminal_count_name(900)].tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------ partition invariance


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return simulate(SimulatorParams(n_customers=300, n_terminals=600, n_days=40))


@pytest.mark.parametrize(
    ("key", "kernel", "modulus", "remainder"),
    [("CUSTOMER_ID", customer_features, 7, 3), ("TERMINAL_ID", terminal_features, 5, 1)],
    ids=["cards", "terminals"],
)
def test_features_of_whole_keys_do_not_depend_on_the_other_keys(
    simulated: pd.DataFrame,
    key: str,
    kernel: Callable[[pd.DataFrame, FeatureParams], pd.DataFrame],
    modulus: int,
    remainder: int,
) -> None:
    # The Dask path computes each partition's cards (or terminals) alone; sums in integer
    # cents make their windows equal, bit for bit, to the same rows of the whole table.
    whole = transaction_features(simulated, SHORT)
    some = simulated[simulated[key] % modulus == remainder]
    alone = kernel(some, SHORT)
    pd.testing.assert_frame_equal(alone, whole.loc[some.index, alone.columns], check_exact=True)


def test_amounts_finer_than_cents_are_summed_as_floats() -> None:
    frame = table(
        [
            ("2018-04-02 10:00", 1, 1, 0.001, 0),
            ("2018-04-02 11:00", 1, 1, 0.002, 0),
        ]
    )
    means = customer_features(frame, SHORT)[customer_mean_name(1)].tolist()
    assert means == pytest.approx([0.001, 0.0015])
