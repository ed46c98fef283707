"""The walkthrough's computations: loss curves per learning rate, L1 and L2 paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fraud_detection.gradient_descent import sigmoid
from fraud_detection.walkthrough import (
    accuracy_paradox,
    ap_by_period,
    best_of_each_model,
    calibration_table,
    customer_segments,
    cv_estimates,
    depth_curve,
    isolation_forest_ap,
    learning_rate_curves,
    pca_projection,
    regularization_paths,
    size_curve,
    standardized,
    threshold_table,
)

Split = tuple[np.ndarray, np.ndarray]


def data(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, 5))
    target = (rng.random(rows) < sigmoid(features[:, 0] * 2 - features[:, 1])).astype(float)
    return features, target


def test_standardized_columns_have_zero_mean_and_unit_variance() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 10.0, 40.0]})
    scaled = standardized(frame)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0)


def test_curves_have_one_column_per_rate_and_every_step() -> None:
    features, target = data()
    curves = learning_rate_curves(features, target, [0.1, 1.0, 200.0], steps=50)
    assert list(curves.columns) == ["0.1", "1", "200"]
    assert len(curves) == 51
    np.testing.assert_allclose(curves.iloc[0], np.log(2))  # zero weights: p = 0.5
    assert curves["1"].iloc[-1] < curves["0.1"].iloc[-1]  # a larger sane rate gets further
    assert np.any(np.diff(curves["200"]) > 0)  # far too large: the loss goes back up


def test_l1_zeroes_coefficients_that_l2_only_shrinks() -> None:
    features, target = data()  # only x0 and x1 carry signal
    names = [f"x{i}" for i in range(5)]
    paths = regularization_paths(features, target, names, [0.05, 1.0])
    assert list(paths.columns[:3]) == ["penalty", "C", "zeros"]
    strong_l1, weak_l1, strong_l2, weak_l2 = (row for _, row in paths.iterrows())
    assert (strong_l1["penalty"], strong_l1["C"], weak_l2["C"]) == ("L1", 0.05, 1.0)
    # A strong L1 penalty keeps exactly the two features that carry the signal.
    assert strong_l1["zeros"] == 3
    assert strong_l1["x0"] != 0.0
    assert strong_l1["x1"] != 0.0
    assert weak_l1["zeros"] < 3
    # L2 sets none to zero; it shrinks them all.
    assert strong_l2["zeros"] == weak_l2["zeros"] == 0
    assert abs(strong_l2["x0"]) < abs(weak_l2["x0"])


def split_in_time(rows: int = 1200) -> tuple[Split, Split]:
    features, target = data(rows)
    half = rows // 2
    return (features[:half], target[:half]), (features[half:], target[half:])


def test_depth_curve_shows_memorizing_trees() -> None:
    train, test = split_in_time()
    curve = depth_curve(train, test, [1, 3, None])
    assert curve["depth"].tolist() == [1, 3, "unlimited"]
    assert curve["leaves"].tolist()[0] == 2
    unlimited = curve.iloc[-1]
    assert unlimited["train_ap"] == 1.0  # every training row in a pure leaf
    assert unlimited["test_ap"] < curve["test_ap"].max()  # and worse on unseen rows


def test_size_curve_trains_on_the_latest_rows() -> None:
    train, test = split_in_time()
    curve = size_curve(LogisticRegression(), train, test, [0.25, 1.0])
    assert curve["rows"].tolist() == [150, 600]
    assert curve["test_ap"].between(0, 1).all()
    assert curve["test_ap"].iloc[-1] > 0.5  # the signal is learnable


def test_accuracy_paradox_and_threshold_table_count_what_they_say() -> None:
    target = np.array([0.0] * 98 + [1.0, 1.0])
    proba = np.array([0.1] * 97 + [0.9, 0.8, 0.2])
    constant = np.full(100, 0.02)
    table = accuracy_paradox(target, {"dummy": constant, "model": proba}, 0.5)
    dummy, model = table.iloc[0], table.iloc[1]
    assert (dummy["accuracy"], dummy["recall"], dummy["flagged"]) == (0.98, 0.0, 0)
    assert dummy["average_precision"] == pytest.approx(0.02)
    assert (model["flagged"], model["recall"]) == (2, 0.5)
    rows = threshold_table(target, proba, [0.5, 0.15], fp_cost=1.0, fn_cost=10.0)
    high, low = rows.iloc[0], rows.iloc[1]
    assert (high["tp"], high["fp"], high["fn"], high["tn"]) == (1, 1, 1, 97)
    assert high["cost"] == 1 * 1.0 + 1 * 10.0
    assert (low["tp"], low["fp"], low["fn"]) == (2, 1, 0)
    assert low["precision"] == pytest.approx(2 / 3)


def test_cv_estimates_report_both_schemes_and_the_later_test() -> None:
    train, test = split_in_time()
    estimates = cv_estimates(LogisticRegression(), train, test, n_splits=3)
    assert len(estimates["shuffled"]) == len(estimates["time_ordered"]) == 3
    assert 0.5 < estimates["test"] <= 1.0


def test_isolation_forest_ranks_outliers_first() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 3))
    target = np.zeros(500)
    features[:10] += 8.0  # ten far-out rows are the "frauds"
    target[:10] = 1.0
    assert isolation_forest_ap(features[10:], (features, target)) > 0.9


def test_customer_segments_cover_every_customer_and_payment() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": np.repeat(np.arange(40), 5),
            "TX_AMOUNT": np.repeat(rng.choice([10.0, 100.0], 40), 5) + rng.random(200),
            "TX_TIME_DAYS": np.tile(np.arange(5), 40),
            "TX_FRAUD": (rng.random(200) < 0.05).astype(int),
        }
    )
    segments = customer_segments(frame, "CUSTOMER_ID", "TX_AMOUNT", k=2)
    assert segments["customers"].sum() == 40
    assert segments["payments"].sum() == 200
    assert segments["frauds"].sum() == frame["TX_FRAUD"].sum()
    assert segments["mean_amount"].is_monotonic_increasing
    assert segments["payments_per_day"].tolist() == pytest.approx([1.0, 1.0])


def test_pca_projection_has_two_components_ordered_by_variance() -> None:
    features, _ = data()
    projected, explained = pca_projection(standardized(pd.DataFrame(features)))
    assert projected.shape == (len(features), 2)
    assert explained[0] >= explained[1] > 0


def test_calibration_table_compares_predicted_and_observed_per_band() -> None:
    target = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    proba = np.array([0.0, 0.05, 0.2, 0.4, 0.9, 1.0])
    table = calibration_table(target, proba, [0.0, 0.1, 0.5, 1.0])
    assert table.index.tolist() == ["0 to 0.1", "0.1 to 0.5", "0.5 to 1"]
    assert table["payments"].tolist() == [2, 2, 2]  # 1.0 falls in the last band
    assert table["mean_predicted"].tolist() == pytest.approx([0.025, 0.3, 0.95])
    assert table["observed"].tolist() == pytest.approx([0.0, 0.5, 0.5])


def test_best_of_each_model_keeps_each_models_top_row() -> None:
    board = pd.DataFrame(
        {
            "model": ["tree", "forest", "tree", "forest", "dummy"],
            "strategy": ["none", "smote", "smote", "none", "none"],
            "average_precision_mean": [0.5, 0.7, 0.6, 0.72, 0.01],
        }
    )
    best = best_of_each_model(board)
    assert best["model"].tolist() == ["forest", "tree", "dummy"]
    assert best["strategy"].tolist() == ["none", "smote", "none"]


def test_ap_by_period_fits_on_train_and_reports_both_periods() -> None:
    from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415

    train, test = split_in_time()
    estimators = {"deep": DecisionTreeClassifier(random_state=0), "linear": LogisticRegression()}
    scores = ap_by_period(estimators, train, test)
    assert scores["deep"]["train_ap"] == 1.0  # memorized its own period
    assert scores["deep"]["test_ap"] < scores["linear"]["test_ap"]
    # The given estimators stay unfitted: each is cloned before fitting.
    assert not hasattr(estimators["linear"], "coef_")
