"""The selection rule: a tie within one standard error of the best CV AP goes to the
best calibrated probabilities, then to the simpler model."""

from __future__ import annotations

import numpy as np
import pytest

from fraud_detection.modeling import Candidate
from fraud_detection.params import CalibrationParams, SelectionParams
from fraud_detection.selection import choose, standard_error
from fraud_detection.validation import (
    CandidateResult,
    FoldResult,
    leaderboard,
    leaderboard_markdown,
)

ROWS = 6000
FOLDS = [np.arange(i * 2000, (i + 1) * 2000) for i in range(3)]


def labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(-4.0, 1.5, ROWS)
    return (rng.random(ROWS) < 1 / (1 + np.exp(-signal))).astype(int), signal


def result(
    model: str, kind: str, strategy: str, aps: list[float], proba: np.ndarray
) -> CandidateResult:
    candidate = Candidate(model, kind, strategy)  # type: ignore[arg-type]
    folds = [
        FoldResult(0, f, {"average_precision": ap}, 0.1, rows, proba[rows])
        for f, (ap, rows) in enumerate(zip(aps, FOLDS, strict=True))
    ]
    return CandidateResult(candidate, folds)


def probabilities(signal: np.ndarray, shift: float = 0.0, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    return 1 / (1 + np.exp(-(signal + shift + rng.normal(0, noise + 1e-9, len(signal)))))


def close_race(signal: np.ndarray) -> list[CandidateResult]:
    """Two logistic regressions 0.003 AP apart; the higher one has noisier scores, so
    worse probabilities even once calibrated."""
    return [
        result(
            "l1",
            "logistic_regression",
            "class_weight",
            [0.56, 0.50, 0.56],
            probabilities(signal, 2.5, 1.5),
        ),
        result("l2", "logistic_regression", "none", [0.55, 0.50, 0.56], probabilities(signal)),
    ]


def test_a_tie_goes_to_the_best_calibrated_brier() -> None:
    y, signal = labels()
    results = [
        *close_race(signal),
        result("dummy", "dummy", "none", [0.03, 0.03, 0.03], np.full(ROWS, y.mean())),
    ]
    decision = choose(results, y, SelectionParams(), CalibrationParams(method="sigmoid"))
    assert decision.winner.candidate.family == "l2/none"
    assert decision.tied == ["l1/class_weight", "l2/none"]
    assert "2 candidates are within 1 standard error(s)" in decision.reason
    assert "l2/none has the lowest calibrated out-of-fold brier" in decision.reason
    assert "next l1/class_weight" in decision.reason

    board = leaderboard(
        results, calibrated=decision.calibrated, tied=decision.tied, winner="l2/none"
    )
    assert board["model"].tolist() == ["l1", "l2", "dummy"]  # still ranked by AP
    assert board["selection"].tolist() == ["tied", "winner", ""]
    markdown = leaderboard_markdown(board, decision.reason)
    assert f"**Selection** (`train.selection`): {decision.reason}." in markdown
    assert "cal. Brier" in markdown
    assert "cal. ECE" in markdown


def test_no_tie_window_means_the_best_ap_wins() -> None:
    y, signal = labels()
    results = [
        *close_race(signal),
    ]
    params = SelectionParams(tie_standard_errors=0)
    decision = choose(results, y, params, CalibrationParams())
    assert decision.winner.candidate.family == "l1/class_weight"
    assert decision.tied == ["l1/class_weight"]
    assert "has the best CV AP; no other candidate is within 0 standard error(s)" in decision.reason


def test_equal_probabilities_go_to_the_simpler_model_and_strategy() -> None:
    y, signal = labels()
    same = probabilities(signal)
    results = [
        result("forest", "random_forest", "smote", [0.55, 0.50, 0.56], same),
        result("gbm", "lightgbm", "smote", [0.55, 0.50, 0.56], same),
        result("gbm", "lightgbm", "class_weight", [0.55, 0.50, 0.56], same),
    ]
    decision = choose(results, y, SelectionParams(tie_break="log_loss"), CalibrationParams())
    assert decision.winner.candidate.family == "gbm/class_weight"
    assert "is the simpler model" in decision.reason


def test_a_candidate_outside_one_standard_error_is_not_tied() -> None:
    y, signal = labels()
    best = result("gbm", "lightgbm", "none", [0.70, 0.72, 0.74], probabilities(signal, 1.0))
    error = standard_error(best)
    assert error == pytest.approx(0.02 / np.sqrt(3))
    below = 0.72 - 1.01 * error
    results = [
        best,
        result("l2", "logistic_regression", "none", [below] * 3, probabilities(signal)),
    ]
    decision = choose(results, y, SelectionParams(), CalibrationParams())
    assert decision.tied == ["gbm/none"]
    assert decision.winner is best


def test_uncalibrated_tie_breaks_say_so() -> None:
    y, signal = labels()
    results = [
        result(
            "a",
            "logistic_regression",
            "class_weight",
            [0.55, 0.50, 0.56],
            probabilities(signal, 2.5),
        ),
        result("b", "logistic_regression", "none", [0.55, 0.50, 0.56], probabilities(signal)),
    ]
    decision = choose(results, y, SelectionParams(), CalibrationParams(method="none"))
    # Without calibration the inflated scores lose on Brier.
    assert decision.winner.candidate.family == "b/none"
    assert "lowest uncalibrated out-of-fold brier" in decision.reason


def test_the_leaderboard_names_each_rows_calibration_and_keeps_raw_where_it_would_hurt() -> None:
    y, signal = labels()
    rng = np.random.default_rng(2)
    # Forest-like: exact zeros for most rows, calibrated scores for the rest.
    zero = rng.random(ROWS) < 0.9
    forest = np.where(zero, 0.0, 1 / (1 + np.exp(-signal)))
    results = [
        result("forest", "random_forest", "none", [0.55, 0.50, 0.56], forest),
        result(
            "l2",
            "logistic_regression",
            "class_weight",
            [0.55, 0.50, 0.56],
            probabilities(signal, 2.5),
        ),
    ]
    decision = choose(results, y, SelectionParams(), CalibrationParams())
    assert decision.methods["l2/class_weight"] == "sigmoid"
    board = leaderboard(
        results, calibrated=decision.calibrated, methods=decision.methods, tied=decision.tied
    )
    assert set(board["calibration"]) <= {"sigmoid", "none"}
    assert "calibration" in leaderboard_markdown(board)
