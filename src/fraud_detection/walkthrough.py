"""Computations behind docs/walkthrough.md: interview questions answered on our own data.

Pure functions: arrays in, tables out. docs/build_walkthrough.py (`make docs`) feeds them
the pipeline's training week and turns the tables into the figures and numbers the
walkthrough shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fraud_detection.gradient_descent import fit_logistic_regression

FloatArray = NDArray[np.float64]


def standardized(features: pd.DataFrame) -> FloatArray:
    """Zero mean, unit variance per column: gradient descent and penalties need one scale."""
    scaled: FloatArray = StandardScaler().fit_transform(features.to_numpy(np.float64))
    return scaled


def learning_rate_curves(
    features: FloatArray, target: FloatArray, rates: list[float], steps: int, c: float = 1.0
) -> pd.DataFrame:
    """The objective after each of ``steps`` gradient steps, one column per learning rate.

    A curve stops early if its step made the objective non-finite (a rate far too large).
    """
    curves = {}
    for rate in rates:
        losses = fit_logistic_regression(
            features, target, learning_rate=rate, c=c, max_steps=steps, tolerance=0.0
        ).losses
        curves[f"{rate:g}"] = pd.Series(losses[: steps + 1])
    frame = pd.DataFrame(curves)
    frame.index.name = "step"
    return frame


def regularization_paths(
    features: FloatArray, target: FloatArray, names: list[str], strengths: list[float]
) -> pd.DataFrame:
    """Coefficients of L1- and L2-penalised logistic regression over the penalty strength.

    One row per (penalty, C); C is scikit-learn's inverse strength (small C: strong
    penalty). ``zeros`` counts the coefficients the fit set to exactly zero.
    """
    rows = []
    for penalty, l1_ratio, solver in (("L1", 1.0, "liblinear"), ("L2", 0.0, "lbfgs")):
        for c in strengths:
            model = LogisticRegression(
                C=c, l1_ratio=l1_ratio, solver=solver, max_iter=5000, random_state=0
            ).fit(features, target)
            coef = model.coef_[0]
            rows.append(
                {"penalty": penalty, "C": c, "zeros": int(np.sum(coef == 0.0))}
                | dict(zip(names, coef.tolist(), strict=True))
            )
    return pd.DataFrame(rows)
