"""Metrics: scores, threshold choice, card precision top-k and the hold-out report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from fraud_detection.evaluation import (
    METRICS,
    card_precision_top_k,
    choose_threshold,
    confusion,
    error_costs,
    expected_calibration_error,
    holdout_report,
    importance_table,
    probability_scores,
    scores,
)
from fraud_detection.params import EvaluateParams, ThresholdParams
from fraud_detection.schema import Feature, FeatureSchema

# ------------------------------------------------------------------------ scores


def test_scores_on_a_known_example():
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    result = scores(y, p, threshold=0.5)
    assert tuple(result) == METRICS
    # Ranked: 0.8 (fraud), 0.4, 0.35 (fraud), 0.1: precision 1 at recall 1/2, 2/3 at 1.
    assert result["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert result["roc_auc"] == pytest.approx(0.75)
    assert result["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # At 0.5 only 0.8 is flagged: one true positive, one missed fraud.
    assert result["precision"] == 1.0
    assert result["recall"] == 0.5
    assert result["f1"] == pytest.approx(2 / 3)


def test_scores_flag_scores_equal_to_the_threshold():
    result = scores([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.4)
    assert result["precision"] == 0.5
    assert result["recall"] == 0.5


def test_scores_when_nothing_is_flagged():
    result = scores([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    assert result["f1"] == 0.0
    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["roc_auc"] == 0.75


# ----------------------------------------------------------------- thresholds

Y = [1, 1, 0, 1, 0, 0, 0, 0]
P = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
# Flagging the top k rows, k = 0..8:
#   TP = 0 1 2 2 3 3 3 3 3, FP = 0 0 0 1 1 2 3 4 5, FN = 3 2 1 1 0 0 0 0 0
#   F1 = 0, 1/2, 4/5, 2/3, 6/7, 3/4, 2/3, 3/5, 6/11


def test_max_f1_threshold():
    choice = choose_threshold(Y, P, ThresholdParams(rule="max_f1"))
    assert choice.rule == "max_f1"
    assert choice.value == 0.6
    assert choice.f1 == pytest.approx(6 / 7)
    # One false positive at cost 1, no missed fraud, over 8 rows.
    assert choice.expected_cost == pytest.approx(1 / 8)
    assert scores(Y, P, choice.value)["f1"] == pytest.approx(choice.f1)


@pytest.mark.parametrize(
    ("cost_fp", "cost_fn", "threshold", "f1", "cost"),
    [
        # Costs 0:30 1:20 2:10 3:11 4:1 5:2 ... -> k = 4.
        (1.0, 10.0, 0.6, 6 / 7, 1 / 8),
        # Costs 0:3 1:2 2:1 3:2 4:1 ... -> a tie between k = 2 and 4: the stricter wins.
        (1.0, 1.0, 0.8, 4 / 5, 1 / 8),
        # Missing a fraud is free: cost 0 for flagging nothing (k = 0).
        (1.0, 0.0, np.nextafter(0.9, np.inf), 0.0, 0.0),
        # False alarms are free: the first (strictest) threshold that catches every fraud.
        (0.0, 1.0, 0.6, 6 / 7, 0.0),
    ],
)
def test_min_cost_threshold(cost_fp, cost_fn, threshold, f1, cost):
    params = ThresholdParams(
        rule="min_cost", cost_false_positive=cost_fp, cost_false_negative=cost_fn
    )
    choice = choose_threshold(Y, P, params)
    assert choice.rule == "min_cost"
    assert choice.value == threshold
    assert choice.f1 == pytest.approx(f1)
    assert choice.expected_cost == pytest.approx(cost)


def test_min_cost_flags_nothing_when_false_positives_are_very_costly():
    y = [0, 1, 1, 0]
    p = [0.9, 0.8, 0.7, 0.6]  # the highest score is a genuine payment
    params = ThresholdParams(rule="min_cost", cost_false_positive=100.0, cost_false_negative=1.0)
    choice = choose_threshold(y, p, params)
    assert choice.value > 0.9
    assert choice.value == np.nextafter(0.9, np.inf)
    assert choice.f1 == 0.0
    assert choice.expected_cost == pytest.approx(2 / 4)  # two missed frauds at cost 1
    assert confusion(y, p, choice.value)[:, 1].sum() == 0  # nothing flagged


def test_min_cost_flags_everything_when_missed_fraud_is_very_costly():
    y = [1, 0, 0, 1]
    p = [0.9, 0.8, 0.7, 0.1]  # one fraud has the lowest score
    params = ThresholdParams(rule="min_cost", cost_false_positive=1.0, cost_false_negative=100.0)
    choice = choose_threshold(y, p, params)
    assert choice.value == 0.1
    assert choice.expected_cost == pytest.approx(2 / 4)
    assert choice.f1 == pytest.approx(2 / 3)


def test_max_f1_with_tied_scores():
    choice = choose_threshold([1, 0, 1, 0], [0.7, 0.7, 0.3, 0.3], ThresholdParams())
    # Flag the two 0.7: F1 1/2; flag all four: F1 2/3.
    assert choice.value == 0.3
    assert choice.f1 == pytest.approx(2 / 3)


# ------------------------------------------------------------ confusion, costs


def test_confusion_and_error_costs():
    matrix = confusion(Y, P, 0.65)  # flags 0.9, 0.8, 0.7
    assert matrix.tolist() == [[4, 1], [1, 2]]
    costs = error_costs(matrix, ThresholdParams(cost_false_positive=2.0, cost_false_negative=10.0))
    assert costs == {
        "true_negatives": 4,
        "false_positives": 1,
        "false_negatives": 1,
        "true_positives": 2,
        "cost_false_positives": 2.0,
        "cost_false_negatives": 10.0,
    }
    assert confusion([0, 0], [0.1, 0.2], 0.5).tolist() == [[2, 0], [0, 0]]


# ------------------------------------------------------------ card precision


def two_days() -> pd.DataFrame:
    rows = [
        # day 1: top 2 cards are A (fraud) and B (genuine) -> 1/2; A is now caught.
        (1, "A", 1, 0.90),
        (1, "B", 0, 0.80),
        (1, "D", 0, 0.10),
        # day 2: A has the top score but is already blocked. C's score is its highest
        # transaction (0.6) and it is fraud through its other transaction -> C, E: 1/2.
        (2, "A", 1, 0.95),
        (2, "C", 0, 0.60),
        (2, "C", 1, 0.20),
        (2, "E", 0, 0.55),
        (2, "B", 0, 0.50),
    ]
    return pd.DataFrame(rows, columns=["day", "card", "y", "p"])


def test_card_precision_top_k_by_hand():
    frame = two_days()
    mean, per_day = card_precision_top_k(frame["day"], frame["card"], frame["y"], frame["p"], k=2)
    assert per_day.to_dict() == {1: 0.5, 2: 0.5}
    assert mean == 0.5
    assert per_day.name == "card_precision_top_2"


def test_card_caught_on_day_one_is_excluded_on_day_two():
    frame = two_days()
    _, per_day = card_precision_top_k(frame["day"], frame["card"], frame["y"], frame["p"], k=2)
    # Were A still counted on day 2, the top 2 would be A and C: 2/2.
    assert per_day[2] == 0.5
    # A genuine card in the top k is not blocked: B stays eligible on day 2 (top 3 of 3).
    _, wider = card_precision_top_k(frame["day"], frame["card"], frame["y"], frame["p"], k=3)
    assert wider[1] == pytest.approx(1 / 3)
    assert wider[2] == pytest.approx(1 / 3)  # C (fraud), E, B; A excluded


def test_card_precision_divides_by_k_even_with_fewer_cards():
    frame = two_days()
    _, per_day = card_precision_top_k(frame["day"], frame["card"], frame["y"], frame["p"], k=10)
    assert per_day[1] == pytest.approx(1 / 10)
    assert per_day[2] == pytest.approx(1 / 10)


def test_card_precision_with_dates_as_days():
    frame = two_days()
    days = pd.to_datetime("2018-08-07") + pd.to_timedelta(frame["day"], unit="D")
    mean, per_day = card_precision_top_k(days, frame["card"], frame["y"], frame["p"], k=2)
    assert mean == 0.5
    assert list(per_day.index) == [pd.Timestamp("2018-08-08"), pd.Timestamp("2018-08-09")]


def test_card_precision_of_no_rows_is_nan():
    mean, per_day = card_precision_top_k([], [], [], [], k=5)
    assert np.isnan(mean)
    assert per_day.empty


# ------------------------------------------------------------ hold-out report


def report_inputs() -> tuple[pd.DataFrame, np.ndarray]:
    frame = two_days()
    test = pd.DataFrame(
        {
            "TX_DATETIME": pd.to_datetime("2018-08-07 10:00")
            + pd.to_timedelta(frame["day"], unit="D"),
            "CUSTOMER_ID": frame["card"],
            "TX_AMOUNT": np.arange(len(frame), dtype=float),
            "TX_FRAUD": frame["y"],
        }
    )
    return test, frame["p"].to_numpy()


def test_holdout_report_with_cards_and_days():
    test, proba = report_inputs()
    schema = FeatureSchema(
        source="simulator",
        features=[Feature(name="TX_AMOUNT", kind="numeric")],
        target="TX_FRAUD",
        time_column="TX_DATETIME",
        group_column="CUSTOMER_ID",
    )
    params = EvaluateParams(
        top_k_cards=2,
        threshold=ThresholdParams(cost_false_positive=1.0, cost_false_negative=10.0),
    )
    metrics, matrix = holdout_report(test, schema, proba, 0.85, params)
    # Flagged at 0.85: A on both days (frauds). Missed: C's fraud. Genuine: 5.
    assert matrix.tolist() == [[5, 0], [1, 2]]
    assert metrics["threshold"] == 0.85
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["false_negatives"] == 1
    assert metrics["cost_false_negatives"] == 10.0
    assert metrics["card_precision_top_2"] == 0.5
    assert metrics["test_rows"] == 8
    assert metrics["test_positives"] == 3
    for name in METRICS:
        assert metrics[name] == pytest.approx(scores(test["TX_FRAUD"], proba, 0.85)[name])


@pytest.mark.parametrize(
    ("time_column", "group_column"),
    [(None, None), ("TX_DATETIME", None), (None, "CUSTOMER_ID")],
)
def test_holdout_report_without_cards_and_days_has_no_card_precision(time_column, group_column):
    test, proba = report_inputs()
    schema = FeatureSchema(
        source="csv",
        features=[Feature(name="TX_AMOUNT", kind="numeric")],
        target="TX_FRAUD",
        time_column=time_column,
        group_column=group_column,
    )
    metrics, _ = holdout_report(test, schema, proba, 0.5, EvaluateParams(top_k_cards=2))
    assert not any(key.startswith("card_precision") for key in metrics)
    assert metrics["test_rows"] == 8
    assert set(METRICS) <= set(metrics)


# --------------------------------------------------------- permutation importance


def test_importance_ranks_the_informative_feature_first():
    rng = np.random.default_rng(0)
    rows = 3000
    frame = pd.DataFrame({"signal": rng.normal(size=rows), "noise": rng.normal(size=rows)})
    frame["label"] = (frame["signal"] > 1.3).astype(int)
    schema = FeatureSchema(
        source="csv",
        features=[Feature(name="noise", kind="numeric"), Feature(name="signal", kind="numeric")],
        target="label",
    )
    model = Pipeline([("tree", DecisionTreeClassifier(max_depth=2, random_state=0))])
    model.fit(frame[schema.names], frame["label"])
    params = EvaluateParams(permutation_repeats=3, permutation_max_rows=500)
    with parallel_config(backend="threading"):
        table = importance_table(model, frame, schema, params, seed=0)
    assert table["feature"].tolist() == ["signal", "noise"]
    importance = table["importance_mean"].to_numpy()
    assert importance[0] > 0.5
    assert importance[1] == pytest.approx(0.0, abs=1e-9)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]


def test_expected_calibration_error_weights_each_bin_by_its_rows() -> None:
    # 80 rows at 0.05 (observed 0.0) and 20 at 0.85 (observed 0.5): gaps 0.05 and 0.35.
    proba = np.array([0.05] * 80 + [0.85] * 20)
    y = np.array([0] * 80 + [1] * 10 + [0] * 10)
    assert expected_calibration_error(y, proba) == pytest.approx(0.8 * 0.05 + 0.2 * 0.35)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_probability_scores_include_log_loss_for_exact_zeros() -> None:
    result = probability_scores(np.array([0, 1]), np.array([0.0, 0.5]))
    assert result["brier"] == pytest.approx(0.125)
    assert np.isfinite(result["log_loss"])
