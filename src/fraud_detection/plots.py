"""Evaluation figures and the curve tables behind them (for DVC plots).

Figures are built with matplotlib's object API (``Figure``), so nothing here touches
pyplot's global state or needs a display; callers decide where to save them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    precision_recall_curve,
    roc_curve,
)

from fraud_detection.schema import ClassNames

MAX_CURVE_POINTS = 400


def _figure(width: float = 5.5, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def precision_recall_figure(
    y_true: ArrayLike, proba: ArrayLike, threshold: float, title: str
) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    PrecisionRecallDisplay.from_predictions(
        y_true, proba, ax=axes, name="model", plot_chance_level=True
    )
    flagged = np.asarray(proba) >= threshold
    y = np.asarray(y_true)
    if flagged.any():
        precision = y[flagged].mean()
        recall = y[flagged].sum() / max(y.sum(), 1)
        axes.plot(recall, precision, "o", color="crimson", label=f"threshold {threshold:.3f}")
    axes.set_title(title)
    axes.legend(loc="upper right")
    return figure


def roc_figure(y_true: ArrayLike, proba: ArrayLike, title: str) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    RocCurveDisplay.from_predictions(y_true, proba, ax=axes, name="model", plot_chance_level=True)
    axes.set_title(title)
    return figure


def confusion_figure(matrix: np.ndarray, threshold: float, labels: ClassNames) -> Figure:
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    ConfusionMatrixDisplay(matrix, display_labels=[labels.negative, labels.positive]).plot(
        ax=axes, values_format="d", colorbar=False
    )
    axes.set_title(f"Test confusion matrix at threshold {threshold:.3f}")
    return figure


def calibration_figure(y_true: ArrayLike, scores: dict[str, ArrayLike], title: str) -> Figure:
    """Reliability diagram of one or more score sets (e.g. before and after calibration).

    With rare positives nearly every score is below 0.01 and the scores that matter are
    spread over 0.01 to 1, so the bins are spaced evenly in log(probability) and both axes
    are logarithmic; bins with fewer than ``MIN_BIN_ROWS`` rows are left out as noise."""
    figure = _figure(6.0, 4.8)
    axes = figure.add_subplot()
    y = np.asarray(y_true)
    low = 1.0
    for name, proba in scores.items():
        table = reliability_table(y, np.asarray(proba, dtype=np.float64))
        shown = table[table["fraction_positive"] > 0]
        low = min(low, float(shown[["mean_predicted", "fraction_positive"]].min().min()))
        axes.plot(shown["mean_predicted"], shown["fraction_positive"], "o-", label=name)
    low = max(low / 2, 1e-5)
    axes.plot([low, 1], [low, 1], "k:", label="perfectly calibrated")
    axes.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1))
    axes.set_xlabel(f"mean predicted probability ({RELIABILITY_BINS} log-spaced bins)")
    axes.set_ylabel("observed positive rate")
    axes.set_title(title)
    axes.legend(loc="upper left")
    return figure


RELIABILITY_BINS = 12
MIN_BIN_ROWS = 20


def reliability_table(y_true: ArrayLike, proba: ArrayLike) -> pd.DataFrame:
    """Rows, mean predicted probability and observed positive rate per log-spaced bin
    (from the smallest score above 1e-5 to 1), bins of fewer than MIN_BIN_ROWS dropped."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-5, 1.0)
    edges = np.geomspace(p.min(), 1.0, RELIABILITY_BINS + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, RELIABILITY_BINS - 1)
    frame = pd.DataFrame({"bin": which, "y": y, "p": p})
    table = frame.groupby("bin").agg(
        rows=("y", "size"), mean_predicted=("p", "mean"), fraction_positive=("y", "mean")
    )
    return table[table["rows"] >= MIN_BIN_ROWS].reset_index(drop=True)


def importance_figure(importance: pd.DataFrame) -> Figure:
    """Bars of permutation importance (mean drop in AP) with their spread."""
    ordered = importance.sort_values("importance_mean")
    figure = _figure(6.5, 0.3 * len(ordered) + 1.5)
    axes = figure.add_subplot()
    axes.barh(
        ordered["feature"],
        ordered["importance_mean"],
        xerr=ordered["importance_std"],
        color="steelblue",
    )
    axes.set_xlabel("drop in average precision when the feature is shuffled")
    axes.set_title("Permutation importance on the test set")
    return figure


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= MAX_CURVE_POINTS:
        return frame
    keep = np.unique(np.linspace(0, len(frame) - 1, MAX_CURVE_POINTS).astype(int))
    return frame.iloc[keep].reset_index(drop=True)


def precision_recall_table(y_true: ArrayLike, proba: ArrayLike) -> pd.DataFrame:
    precision, recall, _ = precision_recall_curve(y_true, proba)
    return _thin(pd.DataFrame({"recall": recall, "precision": precision}).round(5))


def roc_table(y_true: ArrayLike, proba: ArrayLike) -> pd.DataFrame:
    fpr, tpr, _ = roc_curve(y_true, proba)
    return _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(5))
