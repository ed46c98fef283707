"""Cross-validated comparison of candidates.

All (candidate, fold) fits go into one joblib pool, so both cores stay busy whatever the
mix of slow and fast models, and each finished fit is reported as it lands. Each fit
returns its validation-fold probabilities, which give out-of-fold predictions for the
threshold choice later on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit

from fraud_detection.errors import DataValidationError
from fraud_detection.evaluation import ECE_BINS, scores
from fraud_detection.modeling import Candidate
from fraud_detection.params import CrossValidationParams, ModelKind

Fold = tuple[NDArray[np.int64], NDArray[np.int64]]


@dataclass(frozen=True)
class FoldResult:
    candidate: int  # index into the candidate list
    fold: int
    metrics: dict[str, float]
    fit_seconds: float
    validation_rows: NDArray[np.int64]
    proba: NDArray[np.float64]


@dataclass
class CandidateResult:
    candidate: Candidate
    folds: list[FoldResult] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        rows = [{"fold": f.fold, **f.metrics, "fit_seconds": f.fit_seconds} for f in self.folds]
        return pd.DataFrame(rows).sort_values("fold").reset_index(drop=True)

    def summary(self) -> dict[str, float]:
        table = self.table().drop(columns="fold")
        result: dict[str, float] = {}
        for column in table.columns:
            result[f"{column}_mean"] = float(table[column].mean())
            result[f"{column}_std"] = float(table[column].std(ddof=0))
        return result

    @property
    def mean_average_precision(self) -> float:
        return float(np.mean([f.metrics["average_precision"] for f in self.folds]))

    def out_of_fold(self, n_rows: int) -> pd.DataFrame:
        """Validation-fold probabilities by row (rows in no validation fold are absent)."""
        parts = [
            pd.DataFrame({"row": f.validation_rows, "fold": f.fold, "proba": f.proba})
            for f in self.folds
        ]
        frame = pd.concat(parts).sort_values("row").reset_index(drop=True)
        assert frame["row"].max() < n_rows
        return frame


def scheme_for(params: CrossValidationParams, has_time: bool) -> Literal["time", "stratified"]:
    if params.scheme == "auto":
        return "time" if has_time else "stratified"
    return params.scheme


def make_folds(
    y: NDArray[np.int_],
    params: CrossValidationParams,
    *,
    has_time: bool,
    seed: int,
    min_train_positives: int = 1,
) -> list[Fold]:
    """Folds over rows already sorted by time (for the time scheme).

    Checks that every validation fold holds both classes and every training fold at least
    ``min_train_positives`` positive rows, so each metric is defined and every sampler can run.
    """
    scheme = scheme_for(params, has_time)
    positives = int(y.sum())
    if positives < params.n_splits:
        raise DataValidationError(
            f"the training set has {positives} positive row(s) (target 1), fewer than "
            f"train.cv.n_splits="
            f"{params.n_splits}; lower n_splits or use more data"
        )
    splitter: Any = (
        TimeSeriesSplit(n_splits=params.n_splits, gap=params.gap)
        if scheme == "time"
        else StratifiedKFold(n_splits=params.n_splits, shuffle=True, random_state=seed)
    )
    folds: list[Fold] = []
    placeholder = np.zeros(len(y))
    for number, (train_rows, validation_rows) in enumerate(splitter.split(placeholder, y)):
        validation_positives = int(y[validation_rows].sum())
        train_positives = int(y[train_rows].sum())
        if validation_positives in (0, len(validation_rows)):
            raise DataValidationError(
                f"{scheme} fold {number} has {validation_positives} positive row(s) in its "
                f"{len(validation_rows)} validation rows; it needs both classes. Lower "
                "train.cv.n_splits or lengthen the training period"
            )
        if train_positives < min_train_positives:
            why = " (SMOTE's k_neighbors + 1)" if min_train_positives > 1 else ""
            fix = " or train.smote.k_neighbors" if min_train_positives > 1 else ""
            raise DataValidationError(
                f"{scheme} fold {number} trains on {train_positives} positive row(s); at least "
                f"{min_train_positives} are needed{why}. Lower train.cv.n_splits{fix}"
            )
        folds.append((train_rows.astype(np.int64), validation_rows.astype(np.int64)))
    return folds


def _fit_one(
    task: tuple[int, int],
    estimator: Any,
    X: pd.DataFrame,
    y: NDArray[np.int_],
    fold: Fold,
    *,
    threshold: float,
) -> tuple[tuple[int, int], dict[str, float], float, NDArray[np.float64]]:
    train_rows, validation_rows = fold
    model = clone(estimator)
    started = time.perf_counter()
    model.fit(X.iloc[train_rows], y[train_rows])
    fit_seconds = time.perf_counter() - started
    proba = model.predict_proba(X.iloc[validation_rows])[:, 1]
    metrics = scores(y[validation_rows], proba, threshold)
    # Training-fold AP next to validation AP shows over- and underfitting.
    train_proba = model.predict_proba(X.iloc[train_rows])[:, 1]
    metrics["train_average_precision"] = float(average_precision_score(y[train_rows], train_proba))
    return task, metrics, fit_seconds, proba.astype(np.float64)


OnFit = Callable[[int, int, FoldResult, Candidate], None]
"""Called as ``on_fit(done, total, result, candidate)`` after each fit."""


def cross_validate(
    candidates: list[Candidate],
    build: Callable[[Candidate], Any],
    X: pd.DataFrame,
    y: NDArray[np.int_],
    folds: list[Fold],
    *,
    threshold: float,
    n_jobs: int,
    on_fit: OnFit | None = None,
) -> list[CandidateResult]:
    """Fit every candidate on every fold; results keep the candidates' order."""
    estimators = [build(candidate) for candidate in candidates]
    tasks = [(c, f) for c in range(len(candidates)) for f in range(len(folds))]
    # Slow families first, so the pool does not end with one long fit on one core.
    tasks.sort(key=lambda task: _expected_cost(candidates[task[0]]), reverse=True)

    outputs: Iterator[Any] = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
        delayed(_fit_one)(task, estimators[task[0]], X, y, folds[task[1]], threshold=threshold)
        for task in tasks
    )
    results = [CandidateResult(candidate) for candidate in candidates]
    for done, ((c, f), metrics, seconds, proba) in enumerate(outputs, start=1):
        result = FoldResult(c, f, metrics, seconds, folds[f][1], proba)
        results[c].folds.append(result)
        if on_fit is not None:
            on_fit(done, len(tasks), result, candidates[c])
    return results


# Rough relative fit times on the default data (the leaderboard's "fit s" column): the
# slowest fits start first, so the last worker is not left running one long fit alone.
_RELATIVE_FIT_COST: dict[ModelKind, int] = {
    "dummy": 0,
    "logistic_regression": 1,
    "decision_tree": 1,
    "lightgbm": 2,
    "xgboost": 2,
    "mlp": 3,
    "random_forest": 4,
}


def _expected_cost(candidate: Candidate) -> int:
    # SMOTE adds rows; undersampling removes most of them.
    resampling = {"smote": 1, "undersample": -1}.get(candidate.strategy, 0)
    return _RELATIVE_FIT_COST.get(candidate.kind, 4) * 3 + resampling


def by_family(results: list[CandidateResult]) -> dict[str, list[CandidateResult]]:
    """Results grouped by model/strategy: one leaderboard row, one MLflow child run each."""
    families: dict[str, list[CandidateResult]] = {}
    for result in results:
        families.setdefault(result.candidate.family, []).append(result)
    return families


def best_result(results: list[CandidateResult]) -> CandidateResult:
    """The selection rule: the highest mean average precision (the first one on a tie)."""
    return max(results, key=lambda result: result.mean_average_precision)


def leaderboard(
    results: list[CandidateResult],
    *,
    calibrated: dict[str, dict[str, float]] | None = None,
    methods: dict[str, str] | None = None,
    tied: list[str] | None = None,
    winner: str | None = None,
) -> pd.DataFrame:
    """The best grid point of each model/strategy, best mean average precision first.

    With the selection's figures: each row's calibrated out-of-fold scores (by family),
    and a ``selection`` column marking the winner and the rows tied with the best AP.
    """
    best = [best_result(members) for members in by_family(results).values()]
    table = all_grid_points(best)
    if calibrated is not None:
        extra = pd.DataFrame([calibrated[r.candidate.family] for r in best])
        table = pd.concat([table, extra], axis=1)
    families = [r.candidate.family for r in best]
    if methods is not None:
        table["calibration"] = [methods[f] for f in families]
    if tied is not None:
        table["selection"] = [
            "winner" if f == winner else "tied" if f in tied else "" for f in families
        ]
    table = table.sort_values("average_precision_mean", ascending=False, kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def settings_text(settings: dict[str, Any]) -> str:
    """A candidate's grid settings as the leaderboard's "settings" column shows them."""
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"


def _identity(candidate: Candidate) -> dict[str, str]:
    return {
        "model": candidate.model,
        "strategy": candidate.strategy,
        "settings": settings_text(candidate.settings),
    }


def all_grid_points(results: list[CandidateResult]) -> pd.DataFrame:
    """Mean and std of every metric for every candidate (grid points included)."""
    return pd.DataFrame([_identity(r.candidate) | r.summary() for r in results])


def all_folds(results: list[CandidateResult]) -> pd.DataFrame:
    """One row per candidate and fold: the spread behind each mean."""
    tables = [r.table().assign(**_identity(r.candidate)) for r in results]
    table = pd.concat(tables, ignore_index=True)
    first = ["model", "strategy", "settings", "fold"]
    return table[first + [c for c in table.columns if c not in first]]


LEADERBOARD_COLUMNS = {
    "average_precision": "AP",
    "roc_auc": "ROC AUC",
    "f1": "F1",
    "precision": "precision",
    "recall": "recall",
    "brier": "Brier",
    "calibrated_brier": "cal. Brier",
    "calibrated_log_loss": "cal. log loss",
    "calibrated_ece": "cal. ECE",
    "train_average_precision": "train AP",
    "fit_seconds": "fit s",
}
_DIGITS = {"fit_seconds": 1, "brier": 4, "calibrated_brier": 4, "calibrated_ece": 4}


def leaderboard_markdown(
    table: pd.DataFrame, decision: str | None = None, left_out: dict[str, str] | None = None
) -> str:
    """The leaderboard as a Markdown table of mean ± std per metric, with the decision and
    the model/strategy rows the engine could not train (``left_out``: family -> why)."""
    first = ["rank", "model", "strategy", "settings"]
    shown = table[first + [c for c in ("selection", "calibration") if c in table]].copy()
    for metric, title in LEADERBOARD_COLUMNS.items():
        if f"{metric}_mean" not in table:
            continue
        digits = _DIGITS.get(metric, 3)
        shown[title] = [
            f"{m:.{digits}f} ± {s:.{digits}f}"
            for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"], strict=True)
        ]
    header = (
        "# Cross-validated leaderboard\n\n"
        "Mean ± standard deviation over the validation folds; ranked by average precision "
        "(AP). F1, precision and recall use the fixed threshold `train.cv_threshold`. "
        "Brier is the raw scores'; the cal. columns score the same out-of-fold predictions "
        "after calibration (`train.calibration`), each fold calibrated on the others, with "
        "the method in the calibration column (none where it would not lower the Brier); "
        f"ECE uses {ECE_BINS} equal-width bins.\n\n"
    )
    if decision is not None:
        header += f"**Selection** (`train.selection`): {decision}.\n\n"
    footer = ""
    if left_out:
        footer = "\n**Left out on the Dask engine** (`engine.kind: dask`):\n\n" + "".join(
            f"- {family}: {reason}\n" for family, reason in sorted(left_out.items())
        )
    return header + shown.to_markdown(index=False) + "\n" + footer
