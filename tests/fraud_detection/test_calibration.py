"""Calibrators map scores to probabilities; the calibrated step is one fitted estimator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss

from fraud_detection.calibration import (
    CalibratedClassifier,
    IdentityCalibrator,
    IsotonicCalibrator,
    SigmoidCalibrator,
    check_folds,
    cross_fitted,
    fit_calibrator,
    helpful_method,
    with_calibration,
    without_calibration,
)
from fraud_detection.errors import DataValidationError
from tests.model_helpers import MIXED_SCHEMA, fitted_pipeline, mixed_data


def inflated_scores(rows: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a 2% positive rate and scores whose log-odds are shifted by log(10):
    what a model trained on ten times the true positive share answers."""
    rng = np.random.default_rng(seed)
    true_log_odds = rng.normal(-4.5, 1.5, rows)
    y = (rng.random(rows) < expit(true_log_odds)).astype(int)
    return expit(true_log_odds + np.log(10.0)), y


def test_sigmoid_undoes_a_prior_shift_in_the_log_odds() -> None:
    scores, y = inflated_scores()
    calibrator = fit_calibrator("sigmoid", scores, y)
    assert isinstance(calibrator, SigmoidCalibrator)
    assert calibrator.slope == pytest.approx(1.0, abs=0.1)
    assert calibrator.intercept == pytest.approx(-np.log(10.0), abs=0.25)
    fixed = calibrator.predict(scores)
    assert fixed.mean() == pytest.approx(y.mean(), rel=0.05)
    assert brier_score_loss(y, fixed) < 0.8 * brier_score_loss(y, scores)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_is_monotone_so_the_ranking_barely_moves(method: str) -> None:
    scores, y = inflated_scores()
    fixed = fit_calibrator(method, scores, y).predict(scores)
    assert np.all(np.diff(fixed[np.argsort(scores)]) >= -1e-12)
    assert average_precision_score(y, fixed) == pytest.approx(
        average_precision_score(y, scores), abs=0.01
    )
    assert brier_score_loss(y, fixed) < brier_score_loss(y, scores)


def test_isotonic_matches_scikit_learns_predict_and_stays_flat_outside_its_knots() -> None:
    scores, y = inflated_scores(rows=3000)
    ours = fit_calibrator("isotonic", scores, y)
    assert isinstance(ours, IsotonicCalibrator)
    theirs = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, y)
    probe = np.concatenate([scores[:500], [0.0, 1e-9, 1.0]])
    np.testing.assert_allclose(ours.predict(probe), theirs.predict(probe), atol=1e-12)


def test_exact_zero_and_one_scores_are_finite_after_sigmoid() -> None:
    calibrator = SigmoidCalibrator(slope=1.0, intercept=-2.0)
    out = calibrator.predict(np.array([0.0, 1.0]))
    assert np.all(np.isfinite(out))
    assert 0 < out[0] < out[1] < 1
    assert out[1] == pytest.approx(expit(logit(1 - 1e-7) - 2.0))


def test_none_keeps_the_scores_and_the_pipeline() -> None:
    X, y = mixed_data(rows=300)
    pipeline = fitted_pipeline(X, y, MIXED_SCHEMA, "logistic_regression")
    calibrator = fit_calibrator("none", np.array([0.1, 0.9]), np.array([0, 1]))
    assert isinstance(calibrator, IdentityCalibrator)
    assert with_calibration(pipeline, calibrator) is pipeline
    assert without_calibration(pipeline) is pipeline


def test_unknown_method_names_the_key() -> None:
    with pytest.raises(DataValidationError, match=r"train\.calibration\.method 'platt'"):
        fit_calibrator("platt", np.array([0.1]), np.array([1]))


def test_cross_fitting_calibrates_each_fold_on_the_others() -> None:
    scores, y = inflated_scores(rows=4000)
    fold = np.repeat([0, 1], 2000)
    out = cross_fitted("sigmoid", scores, y, fold)
    first = fit_calibrator("sigmoid", scores[2000:], y[2000:]).predict(scores[:2000])
    np.testing.assert_allclose(out[:2000], first)
    assert not np.allclose(out[:2000], fit_calibrator("sigmoid", scores, y).predict(scores[:2000]))


def test_too_few_positives_in_a_fold_stops_with_the_key_and_the_fix() -> None:
    y = np.array([1] * 12 + [0] * 100 + [1] * 3 + [0] * 100)
    fold = np.repeat([0, 1], [112, 103])
    check_folds(y, fold, 3)
    with pytest.raises(DataValidationError) as caught:
        check_folds(y, fold, 10)
    message = str(caught.value)
    assert "CV fold 1 has 3 positive row(s)" in message
    assert "train.calibration.min_positives=10" in message
    assert "train.calibration.method: none" in message


def test_the_calibrated_step_is_one_fitted_scikit_learn_estimator() -> None:
    X, y = mixed_data(rows=400)
    pipeline = fitted_pipeline(X, y, MIXED_SCHEMA, "logistic_regression")
    calibrator = SigmoidCalibrator(slope=0.5, intercept=-1.0)
    shipped = with_calibration(pipeline, calibrator)
    step = shipped[-1]
    assert isinstance(step, CalibratedClassifier)
    assert list(shipped.classes_) == [0, 1]
    raw = pipeline.predict_proba(X)[:, 1]
    proba = shipped.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], calibrator.predict(raw))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(without_calibration(shipped).predict_proba(X)[:, 1], raw)
    assert set(shipped.predict(X)) <= {0, 1}
    # clone() keeps the fitted parts, as for scikit-learn's FrozenEstimator: tools that
    # clone see the same model instead of an unfitted copy.
    assert clone(step) is step


def test_reversed_class_order_keeps_the_positive_column() -> None:
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    model = LogisticRegression().fit(X, y)
    model.classes_ = np.array([1, 0])  # as if the positive class came first
    model.coef_, model.intercept_ = -model.coef_, -model.intercept_
    step = CalibratedClassifier(model, IdentityCalibrator()).fit(None)
    np.testing.assert_allclose(step.predict_proba(X), model.predict_proba(X))


def test_a_calibrator_that_does_not_help_does_not_ship() -> None:
    """Forest-like scores: most exactly 0, the rest already calibrated. A log-odds
    sigmoid cannot fit both groups and raises the Brier score, so none is kept; scores
    inflated by resampling keep the sigmoid."""
    rng = np.random.default_rng(0)
    rows = 20_000
    zero = rng.random(rows) < 0.9
    scores = np.where(zero, 0.0, rng.uniform(0.02, 1, rows))
    y = (rng.random(rows) < np.where(zero, 0.003, scores)).astype(int)
    fold = rng.integers(0, 4, rows)
    raw_brier = np.mean((scores - y) ** 2)
    assert np.mean((cross_fitted("sigmoid", scores, y, fold) - y) ** 2) > raw_brier
    assert helpful_method("sigmoid", scores, y, fold) == "none"
    inflated, labels = inflated_scores()
    assert helpful_method("sigmoid", inflated, labels, np.arange(len(labels)) % 4) == "sigmoid"
    assert helpful_method("none", inflated, labels, np.arange(len(labels)) % 4) == "none"
