"""Train/test splits: the handbook's period protocol and the CSV hold-out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.csv_source import feature_schema as csv_feature_schema
from fraud_detection.data.csv_source import prepare_csv
from fraud_detection.errors import DataValidationError
from fraud_detection.params import CsvParams, SplitParams
from fraud_detection.schema import Feature, FeatureSchema
from fraud_detection.split import (
    check_coverage,
    period,
    split_by_period,
    split_dataset,
    split_holdout,
)


def days_of(frame: pd.DataFrame) -> set[dt.date]:
    return set(frame["TX_DATETIME"].dt.date)


def date_range(first: str, count: int) -> set[dt.date]:
    return {d.date() for d in pd.date_range(first, periods=count, freq="D")}


# ------------------------------------------------------- the period protocol


@pytest.fixture(scope="module")
def period_split(small_features, simulator_schema, small_split_params):
    return split_dataset(small_features, simulator_schema, small_split_params)


def test_train_and_test_cover_the_configured_days(period_split):
    assert days_of(period_split.train) == date_range("2018-05-01", 7)
    assert days_of(period_split.test) == date_range("2018-05-15", 7)
    assert period_split.summary["protocol"] == "period"
    assert period_split.summary["train_period"] == ["2018-05-01", "2018-05-07"]
    assert period_split.summary["test_period"] == ["2018-05-15", "2018-05-21"]


def test_the_delay_gap_is_in_neither_set(period_split):
    gap = date_range("2018-05-08", 7)
    assert not days_of(period_split.train) & gap
    assert not days_of(period_split.test) & gap
    assert period_split.train["TX_DATETIME"].max() < pd.Timestamp("2018-05-08")
    assert period_split.test["TX_DATETIME"].min() >= pd.Timestamp("2018-05-15")


def test_training_set_is_every_row_of_its_period(period_split, small_features):
    day = small_features["TX_DATETIME"].dt.normalize()
    expected = small_features[(day >= "2018-05-01") & (day <= "2018-05-07")]
    pd.testing.assert_frame_equal(period_split.train, expected.reset_index(drop=True))
    assert list(period_split.train.columns) == list(small_features.columns)


def test_summary_counts(period_split):
    summary = period_split.summary
    assert summary["train_rows"] == len(period_split.train)
    assert summary["test_rows"] == len(period_split.test)
    assert summary["train_positives"] == period_split.train["TX_FRAUD"].sum() > 0
    assert summary["test_positives"] == period_split.test["TX_FRAUD"].sum() > 0


def test_known_compromised_cards_are_removed_from_test_days(
    period_split, small_features, small_split_params
):
    """Oracle: a test row on day d is dropped iff its card had a fraud on a day f with
    train_start <= f <= d - delay - 1."""
    delay = small_split_params.delay_days
    frame = small_features.assign(day=small_features["TX_DATETIME"].dt.normalize())
    test_days = (frame["day"] >= "2018-05-15") & (frame["day"] <= "2018-05-21")
    frauds = frame[(frame["TX_FRAUD"] == 1) & (frame["day"] >= "2018-05-01")]
    first_fraud = frauds.groupby("CUSTOMER_ID")["day"].min()
    card_first = frame["CUSTOMER_ID"].map(first_fraud)
    known = card_first <= frame["day"] - pd.Timedelta(days=delay + 1)
    expected = frame[test_days & ~known].drop(columns="day").reset_index(drop=True)
    pd.testing.assert_frame_equal(period_split.test, expected)
    removed = int((test_days & known).sum())
    assert removed > 0
    assert period_split.summary["test_rows_removed_known_compromised"] == removed
    # Cards whose first fraud is not yet known on a test day stay in the test set.
    later_known = test_days & card_first.notna() & ~known
    assert later_known.any()


def test_removal_can_be_switched_off(small_features, simulator_schema, small_split_params):
    params = small_split_params.model_copy(update={"remove_known_compromised": False})
    split = split_dataset(small_features, simulator_schema, params)
    day = small_features["TX_DATETIME"].dt.normalize()
    assert len(split.test) == ((day >= "2018-05-15") & (day <= "2018-05-21")).sum()
    assert split.summary["test_rows_removed_known_compromised"] == 0


MINIMAL_SCHEMA = FeatureSchema(
    source="simulator",
    features=[Feature(name="TX_AMOUNT", kind="numeric")],
    target="TX_FRAUD",
    time_column="TX_DATETIME",
    group_column="CUSTOMER_ID",
)


def card_history() -> pd.DataFrame:
    """One row a day from 2018-04-20 to 2018-05-21 for three cards.

    Card 1: a fraud on 2018-05-10 (in the delay gap). Card 2: a fraud on 2018-04-25, before
    training starts. Card 3: a fraud on 2018-05-03 (in training). Card 4: never.
    """
    days = pd.date_range("2018-04-20 12:00", "2018-05-21 12:00", freq="D")
    rows = []
    for card, fraud_day in ((1, "2018-05-10"), (2, "2018-04-25"), (3, "2018-05-03"), (4, None)):
        for when in days:
            fraud = int(fraud_day is not None and when.normalize() == pd.Timestamp(fraud_day))
            rows.append(
                {"TX_DATETIME": when, "CUSTOMER_ID": card, "TX_AMOUNT": 1.0, "TX_FRAUD": fraud}
            )
    return pd.DataFrame(rows)


def test_known_compromised_rule_by_hand():
    params = SplitParams(train_start=dt.date(2018, 5, 1), train_days=7, delay_days=7, test_days=7)
    split = split_by_period(card_history(), MINIMAL_SCHEMA, params)
    test = split.test.assign(day=split.test["TX_DATETIME"].dt.day)
    by_card = test.groupby("CUSTOMER_ID")["day"].apply(list).to_dict()
    # Card 1's fraud on May 10 is known from May 18 (10 + 7 + 1): kept on 15-17 only.
    assert by_card[1] == [15, 16, 17]
    # Card 2's fraud predates training: it is not counted, every test day stays.
    assert by_card[2] == list(range(15, 22))
    # Card 3's fraud on May 3 is known from May 11, before the test starts.
    assert 3 not in by_card
    assert by_card[4] == list(range(15, 22))
    assert split.summary["test_rows_removed_known_compromised"] == 4 + 7


def test_known_compromised_rule_without_delay():
    params = SplitParams(train_start=dt.date(2018, 5, 1), train_days=7, delay_days=0, test_days=7)
    history = card_history()
    # Card 4 is defrauded on the second test day (May 9): known from May 10.
    history.loc[
        (history["CUSTOMER_ID"] == 4) & (history["TX_DATETIME"].dt.day == 9), "TX_FRAUD"
    ] = 1
    split = split_by_period(history, MINIMAL_SCHEMA, params)
    test_days = split.test.groupby("CUSTOMER_ID")["TX_DATETIME"].apply(lambda s: sorted(s.dt.day))
    assert split.summary["test_period"] == ["2018-05-08", "2018-05-14"]
    assert test_days[4] == [8, 9]
    assert test_days[1] == [8, 9, 10]  # its fraud on May 10 is known on May 11


@pytest.mark.parametrize(
    "train_start", [dt.date(2018, 3, 25), dt.date(2018, 5, 15), dt.date(2019, 1, 1)]
)
def test_period_outside_the_data(small_features, simulator_schema, train_start):
    params = SplitParams(train_start=train_start)
    with pytest.raises(DataValidationError) as caught:
        split_dataset(small_features, simulator_schema, params)
    message = str(caught.value)
    assert "split.train_start" in message
    assert f"needs data from {train_start}" in message
    assert "the data covers 2018-04-01 to 2018-05-30" in message


def test_only_the_protocol_s_days_are_needed(
    period_split, small_features, simulator_schema, small_split_params
):
    # The split stage reads only period(params)'s days; the sets must come out the same.
    days = period(small_split_params)
    when = small_features["TX_DATETIME"]
    inside = (when >= days.train_first) & (when < days.test_last + pd.Timedelta(days=1))
    narrow = split_dataset(small_features[inside], simulator_schema, small_split_params)
    pd.testing.assert_frame_equal(narrow.train, period_split.train)
    pd.testing.assert_frame_equal(narrow.test, period_split.test)
    assert narrow.summary == period_split.summary


def test_coverage_is_checked_against_the_whole_data():
    days = period(SplitParams(train_start=dt.date(2018, 5, 1)))
    assert days.test_last == pd.Timestamp("2018-05-21")
    check_coverage(days, pd.Timestamp("2018-04-01 00:10"), pd.Timestamp("2018-05-21 23:59"))
    with pytest.raises(DataValidationError, match="covers 2018-04-01 to 2018-05-20"):
        check_coverage(days, pd.Timestamp("2018-04-01"), pd.Timestamp("2018-05-20 23:00"))


def test_a_set_without_fraud_is_rejected():
    history = card_history()
    history["TX_FRAUD"] = 0
    history.loc[history["TX_DATETIME"].dt.day == 16, "TX_FRAUD"] = 1  # only in the test period
    params = SplitParams(train_start=dt.date(2018, 5, 1), remove_known_compromised=False)
    with pytest.raises(DataValidationError, match=r"the training set has \d+ rows and 0 fraud"):
        split_dataset(history, MINIMAL_SCHEMA, params)


# --------------------------------------------------------------- CSV hold-out


def csv_table(rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "x": rng.normal(size=rows),
            "Time": rng.permutation(rows).astype(float) * 10,
            "Class": (np.arange(rows) % 20 == 0).astype(int),  # 5% positives
        }
    )


def prepared(params: CsvParams) -> tuple[pd.DataFrame, FeatureSchema]:
    clean, info = prepare_csv(csv_table(), params)
    return clean, csv_feature_schema(info, clean)


def test_stratified_holdout_without_time():
    clean, schema = prepared(CsvParams(drop_columns=["row_id"]))
    split = split_dataset(clean, schema, SplitParams(test_size=0.25, seed=1))
    assert split.summary["protocol"] == "stratified hold-out"
    assert len(split.test) == 50
    assert len(split.train) == 150
    # Both classes on both sides, in the same proportion (10 positives in 200 rows).
    assert split.test["Class"].sum() in (2, 3)
    assert split.train["Class"].sum() + split.test["Class"].sum() == 10
    ids = set(split.train["row_id"]) | set(split.test["row_id"])
    assert ids == set(range(200))
    assert not set(split.train["row_id"]) & set(split.test["row_id"])
    # Deterministic for a seed, different for another.
    again = split_dataset(clean, schema, SplitParams(test_size=0.25, seed=1))
    other = split_dataset(clean, schema, SplitParams(test_size=0.25, seed=2))
    pd.testing.assert_frame_equal(again.test, split.test)
    assert set(other.test["row_id"]) != set(split.test["row_id"])


def test_holdout_with_time_keeps_the_latest_rows():
    clean, schema = prepared(CsvParams(drop_columns=["row_id"], time_column="Time"))
    split = split_dataset(clean, schema, SplitParams(test_size=0.2))
    assert split.summary["protocol"] == "latest rows held out"
    assert len(split.test) == 40
    assert split.test["Time"].min() > split.train["Time"].max()
    assert sorted(split.test["Time"]) == sorted(clean["Time"].nlargest(40))
    assert split.test["Time"].is_monotonic_increasing
    assert 0 < split.test["Class"].sum() < len(split.test)


def test_holdout_split_on_a_csv_schema_ignores_the_period_params():
    clean, schema = prepared(CsvParams(drop_columns=["row_id"]))
    split = split_holdout(clean, schema, SplitParams(train_start=dt.date(1999, 1, 1)))
    assert len(split.train) + len(split.test) == len(clean)


def test_holdout_with_a_text_date_column_keeps_the_latest_dates():
    dates = pd.date_range("2020-01-01", periods=40, freq="D")
    raw = pd.DataFrame(
        {
            "when": [f"{d.month}/{d.day}/{d.year}" for d in dates],  # as a CSV stores them
            "x": np.arange(40.0),
            "Class": [1 if i % 4 == 0 else 0 for i in range(40)],
        }
    )
    clean, info = prepare_csv(raw, CsvParams(time_column="when"))
    split = split_dataset(clean, csv_feature_schema(info, clean), SplitParams(test_size=0.25))
    assert split.test["when"].min() == pd.Timestamp("2020-01-31")
