"""The model card states what was measured, including errors per spending group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_detection.model_card import CardFacts, render, spending_segments
from fraud_detection.schema import ClassNames, FeatureSchema, numeric_feature

SCHEMA = FeatureSchema(
    source="simulator",
    target="TX_FRAUD",
    time_column="TX_DATETIME",
    group_column="CUSTOMER_ID",
    features=[
        numeric_feature("TX_AMOUNT", "the payment's amount", minimum=0),
        numeric_feature("TX_DURING_NIGHT", "1 between midnight and 6 am", minimum=0, maximum=1),
    ],
)
SPLIT = {
    "protocol": "period",
    "train_period": ["2018-07-25", "2018-07-31"],
    "test_period": ["2018-08-08", "2018-08-14"],
    "train_rows": 1000,
    "train_positives": 10,
    "test_rows": 800,
    "test_positives": 8,
}
METRICS = {
    "average_precision": 0.6948,
    "roc_auc": 0.8881,
    "precision": 0.9249,
    "recall": 0.6047,
    "f1": 0.7313,
    "brier": 0.0028,
    "log_loss": 0.0151,
    "ece": 0.0004,
    "uncalibrated_brier": 0.0061,
    "uncalibrated_log_loss": 0.0302,
    "uncalibrated_ece": 0.0035,
    "uncalibrated_average_precision": 0.6951,
    "base_rate": 0.0079,
    "base_rate_brier": 0.0068,
    "ece_bins": 10,
    "true_positives": 234.0,
    "false_negatives": 153.0,
    "false_positives": 19.0,
}


def payments() -> tuple[pd.DataFrame, np.ndarray]:
    # Four customers with average payments 10, 20, 30 and 40; customer 3 is defrauded.
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": [0, 0, 1, 1, 2, 2, 3, 3],
            "TX_AMOUNT": [5.0, 15.0, 20.0, 20.0, 30.0, 30.0, 30.0, 50.0],
            "TX_FRAUD": [0, 0, 0, 0, 0, 0, 1, 1],
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17],  # not a plain range: rows matched by label
    )
    # Flags: one genuine payment of customer 0 (a false positive), one of the two frauds.
    proba = np.array([0.9, 0.1, 0.2, 0.1, 0.0, 0.3, 0.95, 0.2])
    return frame, proba


def facts(**changes: object) -> CardFacts:
    frame, proba = payments()
    values: dict[str, object] = {
        "name": "fraud-detector",
        "version": "3",
        "alias": "champion",
        "candidate": "random_forest/none [max_depth=None]",
        "cv_average_precision": 0.734,
        "threshold": 0.448,
        "threshold_rule": "max_f1",
        "decision": "random_forest/none [max_depth=None] has the best CV AP",
        "calibration": "SigmoidCalibrator(slope=0.9, intercept=-1.2)",
        "metrics": METRICS,
        "split": SPLIT,
        "schema": SCHEMA,
        "segments": spending_segments(frame, SCHEMA, proba, 0.5),
    }
    return CardFacts(**(values | changes))  # type: ignore[arg-type]


def test_segments_are_spending_quartiles_with_their_own_errors() -> None:
    frame, proba = payments()
    segments = spending_segments(frame, SCHEMA, proba, 0.5)
    assert segments is not None
    assert segments["segment"].tolist() == ["Q1 (lowest)", "Q2", "Q3", "Q4 (highest)"]
    assert segments["payments"].tolist() == [2, 2, 2, 2]
    assert segments["frauds"].tolist() == [0, 0, 0, 2]
    assert segments["flagged"].tolist() == [1, 0, 0, 1]
    # Q1: one flag, no fraud -> precision 0; Q4: one of two frauds caught, no false flag.
    assert segments["precision"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert segments["recall"].tolist() == [0.0, 0.0, 0.0, 0.5]


def test_no_customer_column_means_no_segments() -> None:
    frame, proba = payments()
    schema = SCHEMA.model_copy(update={"group_column": None})
    assert spending_segments(frame, schema, proba, 0.5) is None
    assert spending_segments(frame.drop(columns="TX_AMOUNT"), SCHEMA, proba, 0.5) is None


def test_card_states_model_data_performance_fairness_and_limits() -> None:
    card = render(facts())
    assert card.startswith("# Model card: fraud-detector v3 (alias `champion`)")
    assert "Decision threshold 0.448 (best F1" in card
    assert "2018-07-25 to 2018-07-31, 1,000 payments, 10 frauds" in card
    assert "- `TX_AMOUNT`: the payment's amount" in card
    assert "| test AP | 0.695 |" in card
    assert "| cross-validated AP (training period) | 0.734 |" in card
    assert "catches 234 of 387 frauds and flags 19 genuine payments" in card
    assert "| Q4 (highest) | 2 | 2 | 1 | 1.000 | 0.500 |" in card
    assert "simulated payments" in card
    assert "not meant to block a payment" in card
    assert "**Why this model.** random_forest/none [max_depth=None] has the best CV AP." in card


def test_card_shows_calibration_before_and_after_against_the_base_rate() -> None:
    card = render(facts())
    assert "`SigmoidCalibrator(slope=0.9, intercept=-1.2)`" in card
    assert "| Brier score | 0.00610 | 0.00280 |" in card
    assert "| log loss | 0.0302 | 0.0151 |" in card
    assert "| expected calibration error (10 equal-width bins) | 0.00350 | 0.00040 |" in card
    assert "share of frauds (0.0079) scores a Brier of 0.00680" in card


def test_card_without_calibration_figures_has_no_calibration_section() -> None:
    metrics = {k: v for k, v in METRICS.items() if not k.startswith(("uncal", "base", "ece_"))}
    assert "## Calibration" not in render(facts(metrics=metrics))


def test_csv_card_has_no_periods_and_says_why_there_are_no_groups() -> None:
    split = {"train_rows": 900, "train_positives": 9, "test_rows": 100, "test_positives": 1}
    card = render(
        facts(
            split=split,
            segments=None,
            schema=SCHEMA.model_copy(update={"source": "csv"}),
            version=None,
            alias=None,
        )
    )
    assert card.startswith("# Model card: fraud-detector\n")
    assert "Test (held out): 100 rows, 1 frauds." in card
    assert "No customer column in this data" in card
    assert "simulated payments" not in card


@pytest.mark.parametrize(("rule", "shown"), [("min_cost", "lowest expected cost")])
def test_threshold_rule_is_named(rule: str, shown: str) -> None:
    assert f"({shown}" in render(facts(threshold_rule=rule))


def test_a_csv_card_speaks_of_its_own_classes() -> None:
    """A loan-default table's card says what its rows and classes are, and never fraud."""
    schema = FeatureSchema(
        source="csv",
        target="default",
        positive_label="Yes",
        class_names=ClassNames(positive="default", negative="repaid"),
        features=[numeric_feature("income", "yearly income", minimum=0)],
    )
    split = {
        "protocol": "holdout",
        "train_rows": 8000,
        "train_positives": 264,
        "test_rows": 2000,
        "test_positives": 66,
    }
    card = render(facts(name="credit-default", schema=schema, split=split, segments=None))
    assert "fraud" not in card.lower()
    assert "the probability that a row is default" in card
    assert "Training: 8,000 rows, 264 defaults." in card
    assert "catches 234 of 387 defaults and flags 19 repaid rows" in card
