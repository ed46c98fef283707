"""The from-scratch logistic regression agrees with scikit-learn and behaves as taught."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from fraud_detection.gradient_descent import (
    fit_logistic_regression,
    gradient,
    objective,
    sigmoid,
)


def data(rows: int = 400, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4))
    logit = features @ np.array([1.5, -2.0, 0.5, 0.0]) - 1.0
    target = (rng.random(rows) < sigmoid(logit)).astype(np.float64)
    return features, target


@pytest.mark.parametrize("c", [1.0, 0.05])
def test_coefficients_match_scikit_learn_with_the_same_penalty(c: float) -> None:
    features, target = data()
    ours = fit_logistic_regression(features, target, learning_rate=1.0, c=c, max_steps=50_000)
    theirs = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(features, target)
    assert ours.converged
    np.testing.assert_allclose(ours.coef, theirs.coef_[0], atol=1e-5)
    assert ours.intercept == pytest.approx(theirs.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(
        ours.predict_proba(features), theirs.predict_proba(features)[:, 1], atol=1e-6
    )


def test_a_stronger_penalty_shrinks_the_coefficients() -> None:
    features, target = data()
    loose = fit_logistic_regression(features, target, learning_rate=1.0, c=10.0)
    tight = fit_logistic_regression(features, target, learning_rate=1.0, c=0.01)
    assert np.linalg.norm(tight.coef) < 0.5 * np.linalg.norm(loose.coef)


def test_the_gradient_is_the_objectives_slope() -> None:
    features, target = data(rows=50)
    rng = np.random.default_rng(1)
    coef, intercept, c = rng.normal(size=4), 0.3, 0.5
    coef_gradient, intercept_gradient = gradient(features, target, coef, intercept, c)
    step = 1e-6
    for i in range(4):
        shift = np.eye(4)[i] * step
        slope = (
            objective(features, target, coef + shift, intercept, c)
            - objective(features, target, coef - shift, intercept, c)
        ) / (2 * step)
        assert coef_gradient[i] == pytest.approx(slope, rel=1e-5)
    slope = (
        objective(features, target, coef, intercept + step, c)
        - objective(features, target, coef, intercept - step, c)
    ) / (2 * step)
    assert intercept_gradient == pytest.approx(slope, rel=1e-5)


def test_a_small_learning_rate_lowers_the_loss_at_every_step() -> None:
    features, target = data()
    result = fit_logistic_regression(features, target, learning_rate=0.1, max_steps=300)
    assert np.all(np.diff(result.losses) < 0)
    assert not result.converged  # 300 small steps are not enough: the loss still falls
    assert result.losses[0] == pytest.approx(np.log(2))  # all-zero weights: p = 0.5


def test_too_large_a_learning_rate_overshoots() -> None:
    features, target = data()
    result = fit_logistic_regression(features, target, learning_rate=60.0, max_steps=200)
    assert np.any(np.diff(result.losses) > 0)
    assert (
        result.losses[-1]
        > fit_logistic_regression(features, target, learning_rate=1.0, max_steps=200).losses[-1]
    )


def test_sigmoid_stays_finite_and_exact_at_the_extremes() -> None:
    values = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(values, [0.0, 0.5, 1.0])


@pytest.mark.parametrize(("rate", "c"), [(0.0, 1.0), (0.1, 0.0), (-1.0, 1.0)])
def test_a_learning_rate_or_penalty_that_is_not_positive_is_refused(rate: float, c: float) -> None:
    features, target = data(rows=10)
    with pytest.raises(ValueError, match="must be positive"):
        fit_logistic_regression(features, target, learning_rate=rate, c=c)
