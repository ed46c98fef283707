"""Metrics for imbalanced binary classification: scores, threshold choice, card precision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    confusion_matrix_at_thresholds,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from fraud_detection.params import EvaluateParams, ThresholdParams
from fraud_detection.schema import FeatureSchema

# Threshold-free metrics first; average precision is the selection metric. Brier score,
# log loss and ECE judge the probabilities themselves.
RANKING_METRICS = ("average_precision", "roc_auc")
PROBABILITY_METRICS = ("brier", "log_loss", "ece")
THRESHOLD_METRICS = ("f1", "precision", "recall")
METRICS = RANKING_METRICS + PROBABILITY_METRICS + THRESHOLD_METRICS
# Expected calibration error over this many equal-width probability bins (0-0.1, ...).
ECE_BINS = 10


def expected_calibration_error(y_true: ArrayLike, proba: ArrayLike, bins: int = ECE_BINS) -> float:
    """The mean gap between predicted probability and observed positive rate per bin,
    weighted by the bin's share of rows (equal-width bins, as Guo et al. 2017 define it)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.bincount(which, weights=p - y, minlength=bins)
    return float(np.abs(gap).sum() / len(p))


def probability_scores(y_true: ArrayLike, proba: ArrayLike) -> dict[str, float]:
    """Brier score, log loss and ECE: how far the probabilities are from the outcomes."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    return {
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }


def calibration_report(
    y_true: ArrayLike, raw_proba: ArrayLike, base_rate: float
) -> dict[str, float]:
    """Test figures beside the calibrated ones: the raw scores' AP and probability scores
    (``uncalibrated_*``), and the Brier score of always answering the training base rate,
    the bar any probability has to clear."""
    y = np.asarray(y_true)
    raw = probability_scores(y, raw_proba)
    return {
        "uncalibrated_average_precision": float(average_precision_score(y, raw_proba)),
        **{f"uncalibrated_{name}": value for name, value in raw.items()},
        "base_rate": base_rate,
        "base_rate_brier": float(brier_score_loss(y, np.full(len(y), base_rate))),
        "ece_bins": ECE_BINS,
    }


def scores(y_true: ArrayLike, proba: ArrayLike, threshold: float) -> dict[str, float]:
    """Ranking metrics plus F1, precision and recall when flagging ``proba >= threshold``."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    flagged = (p >= threshold).astype(int)
    return {
        "average_precision": float(average_precision_score(y, p)),
        "roc_auc": float(roc_auc_score(y, p)),
        **probability_scores(y, p),
        "f1": float(f1_score(y, flagged, zero_division=0)),
        "precision": float(precision_score(y, flagged, zero_division=0)),
        "recall": float(recall_score(y, flagged, zero_division=0)),
    }


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    rule: str
    f1: float
    expected_cost: float  # per row, with the configured error costs


def choose_threshold(
    y_true: ArrayLike, proba: ArrayLike, params: ThresholdParams
) -> ThresholdChoice:
    """Pick the decision threshold on out-of-fold predictions.

    ``max_f1`` maximises F1; ``min_cost`` minimises
    ``cost_false_positive * FP + cost_false_negative * FN``.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    _, fps, fns, tps, thresholds = confusion_matrix_at_thresholds(y, p)
    # Prepend "flag nothing": a threshold just above the highest score.
    fps, tps = np.concatenate([[0], fps]), np.concatenate([[0], tps])
    fns = np.concatenate([[tps[-1]], fns])
    thresholds = np.concatenate([[np.nextafter(thresholds[0], np.inf)], thresholds])
    f1 = np.divide(2 * tps, 2 * tps + fps + fns, out=np.zeros(len(tps)), where=tps > 0)
    cost = params.cost_false_positive * fps + params.cost_false_negative * fns
    best = int(np.argmax(f1)) if params.rule == "max_f1" else int(np.argmin(cost))
    return ThresholdChoice(
        value=float(thresholds[best]),
        rule=params.rule,
        f1=float(f1[best]),
        expected_cost=float(cost[best]) / len(y),
    )


def confusion(y_true: ArrayLike, proba: ArrayLike, threshold: float) -> NDArray[np.int64]:
    """2 x 2 counts: rows are the truth (genuine, fraud), columns the decision."""
    flagged = (np.asarray(proba) >= threshold).astype(int)
    return np.asarray(confusion_matrix(np.asarray(y_true), flagged, labels=[0, 1]), dtype=np.int64)


def error_costs(matrix: NDArray[np.int64], params: ThresholdParams) -> dict[str, float]:
    """The confusion matrix's four counts and what the two kinds of error cost."""
    false_positives, false_negatives = int(matrix[0, 1]), int(matrix[1, 0])
    return {
        "true_negatives": int(matrix[0, 0]),
        "false_positives": false_positives,
        "false_negatives": false_negatives,
        "true_positives": int(matrix[1, 1]),
        "cost_false_positives": false_positives * params.cost_false_positive,
        "cost_false_negatives": false_negatives * params.cost_false_negative,
    }


def card_precision_top_k(
    day: ArrayLike, card: ArrayLike, y_true: ArrayLike, proba: ArrayLike, k: int
) -> tuple[float, pd.Series]:
    """Card precision top-k: the mean over days of the share of fraud among the k cards
    with the highest scores that day.

    A card's score for a day is its highest transaction score; it counts as fraud if any
    of its transactions that day was. Cards caught in an earlier day's top k are left out
    of later days, as investigators would already have blocked them.
    """
    frame = pd.DataFrame(
        {
            "day": np.asarray(day),
            "card": np.asarray(card),
            "y": np.asarray(y_true),
            "p": np.asarray(proba),
        }
    )
    caught: set[object] = set()
    per_day: dict[object, float] = {}
    for when, rows in frame.groupby("day", sort=True):
        cards = rows[~rows["card"].isin(caught)].groupby("card").agg(p=("p", "max"), y=("y", "max"))
        top = cards.nlargest(k, "p")
        per_day[when] = float(top["y"].sum()) / k
        caught.update(top.index[top["y"] == 1])
    series = pd.Series(per_day, name=f"card_precision_top_{k}")
    return (float(series.mean()) if len(series) else float("nan")), series


def holdout_report(
    test: pd.DataFrame,
    schema: FeatureSchema,
    proba: NDArray[np.float64],
    threshold: float,
    params: EvaluateParams,
) -> tuple[dict[str, float], NDArray[np.int64]]:
    """Every test-period metric at the chosen threshold, and the confusion matrix.

    Card precision top-k is added when rows belong to cards and days (simulator data).
    """
    y = test[schema.target].to_numpy()
    metrics: dict[str, float] = {"threshold": threshold, **scores(y, proba, threshold)}
    matrix = confusion(y, proba, threshold)
    metrics |= error_costs(matrix, params.threshold)
    if schema.group_column and schema.time_column:
        day = pd.to_datetime(test[schema.time_column]).dt.normalize()
        k = params.top_k_cards
        metrics[f"card_precision_top_{k}"], _ = card_precision_top_k(
            day, test[schema.group_column], y, proba, k
        )
    metrics |= {"test_rows": len(test), "test_positives": int(y.sum())}
    return metrics, matrix


def importance_table(
    model: Any, frame: pd.DataFrame, schema: FeatureSchema, params: EvaluateParams, seed: int
) -> pd.DataFrame:
    """Permutation importance: how much average precision drops when a feature is shuffled.

    Runs on a stratified sample of at most ``params.permutation_max_rows`` rows, so the
    fraud share (and hence what AP means) stays that of ``frame``.
    """
    sample = frame
    if len(frame) > params.permutation_max_rows:
        sample, _ = train_test_split(
            frame,
            train_size=params.permutation_max_rows,
            stratify=frame[schema.target],
            random_state=seed,
        )
    # Threads, not processes: tree and linear predictions release the GIL, and worker
    # processes would each need a pickled copy of the model (2.5x slower, measured).
    with joblib.parallel_config(backend="threading"):
        result = permutation_importance(
            model,
            sample[schema.names],
            sample[schema.target],
            scoring="average_precision",
            n_repeats=params.permutation_repeats,
            random_state=seed,
            n_jobs=-1,
        )
    table = pd.DataFrame(
        {
            "feature": schema.names,
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return table.sort_values("importance_mean", ascending=False).reset_index(drop=True)
