"""The reliability diagram's bins and the figure built from them."""

from __future__ import annotations

import numpy as np

from fraud_detection.plots import MIN_BIN_ROWS, calibration_figure, reliability_table


def test_reliability_bins_are_log_spaced_and_small_ones_are_dropped() -> None:
    rng = np.random.default_rng(0)
    proba = np.concatenate([rng.uniform(1e-3, 2e-3, 5000), rng.uniform(0.5, 0.6, 400), [0.2]])
    y = (rng.random(len(proba)) < proba).astype(int)
    table = reliability_table(y, proba)
    assert (table["rows"] >= MIN_BIN_ROWS).all()
    assert table["rows"].sum() == len(proba) - 1  # the lone 0.2 is a bin of one row
    assert table["mean_predicted"].is_monotonic_increasing
    # The bins' observed rates follow their scores (the labels were drawn from them).
    high = table[table["mean_predicted"] > 0.4]
    assert np.allclose(high["fraction_positive"], high["mean_predicted"], atol=0.08)
    assert high["rows"].sum() == 400


def test_calibration_figure_draws_each_score_set_and_the_diagonal() -> None:
    rng = np.random.default_rng(1)
    proba = rng.beta(0.5, 30, 20_000)
    y = (rng.random(len(proba)) < proba).astype(int)
    figure = calibration_figure(y, {"before": np.sqrt(proba), "after": proba}, "t")
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == [
        "before",
        "after",
        "perfectly calibrated",
    ]
    assert axes.get_xscale() == "log"
