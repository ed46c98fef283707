"""Logistic regression trained by batch gradient descent, in numpy (the interview classic).

The objective is scikit-learn's for ``LogisticRegression(C=C)`` with an L2 penalty,
divided by the number of rows so that the learning rate does not depend on it:

    mean log loss  +  ||w||^2 / (2 n C)          (the intercept is not penalised)

so with enough iterations the coefficients match scikit-learn's (tests check it). It is
for teaching, not for the pipeline: scikit-learn's solvers are faster and more robust.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class DescentResult:
    coef: FloatArray
    intercept: float
    # The objective after each step (losses[0]: before the first step).
    losses: FloatArray
    converged: bool

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """Fraud probability per row (one column, unlike scikit-learn's two)."""
        return sigmoid(features @ self.coef + self.intercept)


def sigmoid(z: FloatArray) -> FloatArray:
    # exp of a large negative number overflows; this form never does.
    out: FloatArray = np.exp(-np.logaddexp(0.0, -z))
    return out


def objective(
    features: FloatArray, target: FloatArray, coef: FloatArray, intercept: float, c: float
) -> float:
    """Mean log loss plus the L2 penalty ||w||^2 / (2 n C)."""
    z = features @ coef + intercept
    # log(1 + e^z) - y z is the log loss of one row, written to stay finite.
    log_loss = np.mean(np.logaddexp(0.0, z) - target * z)
    return float(log_loss + coef @ coef / (2 * len(target) * c))


def gradient(
    features: FloatArray, target: FloatArray, coef: FloatArray, intercept: float, c: float
) -> tuple[FloatArray, float]:
    """The objective's gradient with respect to the coefficients and the intercept."""
    error = sigmoid(features @ coef + intercept) - target
    n = len(target)
    coef_gradient: FloatArray = features.T @ error / n + coef / (n * c)
    return coef_gradient, float(error.mean())


def fit_logistic_regression(
    features: FloatArray,
    target: FloatArray,
    *,
    learning_rate: float,
    c: float = 1.0,
    max_steps: int = 10_000,
    tolerance: float = 1e-9,
) -> DescentResult:
    """Full-batch gradient descent from zero weights.

    Stops when the gradient's norm falls below ``tolerance`` (converged: at the minimum the
    gradient is zero) or after ``max_steps``. A learning rate that is too large makes the
    objective oscillate or grow: the losses show it, nothing hides it.
    """
    if learning_rate <= 0 or c <= 0:
        raise ValueError("learning_rate and c must be positive")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    coef, intercept = np.zeros(x.shape[1]), 0.0
    losses = [objective(x, y, coef, intercept, c)]
    converged = False
    for _ in range(max_steps):
        coef_step, intercept_step = gradient(x, y, coef, intercept, c)
        if np.sqrt(coef_step @ coef_step + intercept_step**2) < tolerance:
            converged = True
            break
        coef = coef - learning_rate * coef_step
        intercept -= learning_rate * intercept_step
        losses.append(objective(x, y, coef, intercept, c))
        if not np.isfinite(losses[-1]):
            break
    return DescentResult(coef, intercept, np.asarray(losses), converged)
