"""The selection rule: which cross-validated candidate becomes the model to ship.

The highest mean CV average precision is only the first cut: fold-to-fold spread makes
small differences in AP noise. Every leaderboard row (the best grid point of a model and
strategy) whose mean AP is within ``tie_standard_errors`` standard errors of the best
one's is tied with it, and the tie goes to the row whose out-of-fold scores are the best
probabilities once calibrated (lowest Brier score or log loss), then to the simpler
model and strategy. Calibrated scores here are cross-fitted (each fold calibrated on the
others), so the comparison does not flatter a calibrator on its own training rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.calibration import cross_fitted_if_helpful
from fraud_detection.evaluation import PROBABILITY_METRICS, probability_scores
from fraud_detection.params import CalibrationParams, ModelKind, SelectionParams, Strategy
from fraud_detection.validation import CandidateResult, best_result, by_family

# "Simpler" for the last tie-break: fewer moving parts to explain, fit and serve.
_KIND_ORDER: dict[ModelKind, int] = {
    "dummy": 0,
    "logistic_regression": 1,
    "decision_tree": 2,
    "lightgbm": 3,
    "xgboost": 3,
    "random_forest": 4,
    "mlp": 5,
}
_STRATEGY_ORDER: dict[Strategy, int] = {"none": 0, "class_weight": 1, "undersample": 2, "smote": 3}
# Calibrated scores equal to this many decimals are a tie for the simpler-model rule.
_DECIMALS = 6


def simplicity(result: CandidateResult) -> tuple[int, int]:
    candidate = result.candidate
    return _KIND_ORDER[candidate.kind], _STRATEGY_ORDER[candidate.strategy]


def calibrated_summary(
    result: CandidateResult, n_rows: int, y: np.ndarray, method: str
) -> tuple[str, dict[str, float]]:
    """The calibration this candidate would ship with (``method``, or ``none`` where it
    does not help), and the mean and std over folds of Brier, log loss and ECE of its
    cross-fitted calibrated out-of-fold scores (``calibrated_brier_mean``, ...)."""
    oof = result.out_of_fold(n_rows)
    labels = y[oof["row"].to_numpy()]
    folds = oof["fold"].to_numpy()
    method, proba = cross_fitted_if_helpful(method, oof["proba"].to_numpy(), labels, folds)
    per_fold = pd.DataFrame(
        [probability_scores(labels[folds == f], proba[folds == f]) for f in np.unique(folds)]
    )
    summary: dict[str, float] = {}
    for metric in PROBABILITY_METRICS:
        summary[f"calibrated_{metric}_mean"] = float(per_fold[metric].mean())
        summary[f"calibrated_{metric}_std"] = float(per_fold[metric].std(ddof=0))
    return method, summary


@dataclass(frozen=True)
class Decision:
    """The winner, the rows tied with the best AP, and the sentence that says why."""

    winner: CandidateResult
    tied: list[str]  # families (model/strategy), best AP first
    calibrated: dict[str, dict[str, float]]  # family -> calibrated_summary figures
    methods: dict[str, str]  # family -> the calibration it ships with
    reason: str


def standard_error(result: CandidateResult) -> float:
    """The standard error of a candidate's mean CV AP across its folds."""
    values = [fold.metrics["average_precision"] for fold in result.folds]
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def choose(
    results: list[CandidateResult],
    y: np.ndarray,
    selection: SelectionParams,
    calibration: CalibrationParams,
) -> Decision:
    """Apply the selection rule to every model/strategy's best grid point."""
    rows = sorted(
        (best_result(members) for members in by_family(results).values()),
        key=lambda r: -r.mean_average_precision,
    )
    top = rows[0]
    error = standard_error(top)
    floor = top.mean_average_precision - selection.tie_standard_errors * error
    tied = [r for r in rows if r.mean_average_precision >= floor]
    summaries = {
        r.candidate.family: calibrated_summary(r, len(y), y, calibration.method) for r in rows
    }
    calibrated = {family: figures for family, (_, figures) in summaries.items()}
    methods = {family: method for family, (method, _) in summaries.items()}
    key = f"calibrated_{selection.tie_break}_mean"

    def order(result: CandidateResult) -> tuple[float, tuple[int, int], float]:
        value = round(calibrated[result.candidate.family][key], _DECIMALS)
        return value, simplicity(result), -result.mean_average_precision

    ranked = sorted(tied, key=order)
    winner = ranked[0]
    reason = _reason(
        ranked,
        top=top,
        error=error,
        selection=selection,
        calibrated=calibrated,
        method=calibration.method,
    )
    return Decision(
        winner=winner,
        tied=[r.candidate.family for r in tied],
        calibrated=calibrated,
        methods=methods,
        reason=reason,
    )


def _reason(
    ranked: list[CandidateResult],
    *,
    top: CandidateResult,
    error: float,
    selection: SelectionParams,
    calibrated: dict[str, dict[str, float]],
    method: str,
) -> str:
    winner = ranked[0].candidate
    k = selection.tie_standard_errors
    window = (
        f"{k:g} standard error(s) ({k * error:.4f}) of the best CV AP "
        f"{top.mean_average_precision:.4f}"
    )
    if len(ranked) == 1:
        return f"{winner.label} has the best CV AP; no other candidate is within {window}"
    metric = selection.tie_break.replace("_", " ")
    key = f"calibrated_{selection.tie_break}_mean"
    runner = ranked[1].candidate
    won, second = calibrated[winner.family][key], calibrated[runner.family][key]
    how = "calibrated" if method != "none" else "uncalibrated"
    why = f"the lowest {how} out-of-fold {metric} ({won:.5f}; next {runner.label} {second:.5f})"
    if round(won, _DECIMALS) == round(second, _DECIMALS):
        why = f"the same {how} out-of-fold {metric} as {runner.label} and is the simpler model"
    return f"{len(ranked)} candidates are within {window}; {winner.label} has {why}"
