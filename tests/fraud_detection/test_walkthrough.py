"""The walkthrough's computations: loss curves per learning rate, L1 and L2 paths."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud_detection.gradient_descent import sigmoid
from fraud_detection.walkthrough import learning_rate_curves, regularization_paths, standardized


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
