"""Computations behind docs/walkthrough.md: interview questions answered on our own data.

Pure functions: arrays in, tables out. docs/build_walkthrough.py (`make docs`) feeds them
the pipeline's training week and turns the tables into the figures and numbers the
walkthrough shows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)
from sklearn.model_selection import (
    StratifiedKFold,
    TimeSeriesSplit,
    cross_val_score,
)
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

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


def depth_curve(
    train: tuple[FloatArray, FloatArray],
    test: tuple[FloatArray, FloatArray],
    depths: list[int | None],
    seed: int = 0,
) -> pd.DataFrame:
    """A decision tree's AP on its own training rows and on the later test week, per depth.

    Training AP rises with depth to 1.0 (the tree memorizes); test AP peaks, then falls:
    the overfit region. ``None`` is unlimited depth.
    """
    rows = []
    for depth in depths:
        tree = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(*train)
        rows.append(
            {
                "depth": "unlimited" if depth is None else depth,
                "leaves": int(tree.get_n_leaves()),
                "train_ap": float(
                    average_precision_score(train[1], tree.predict_proba(train[0])[:, 1])
                ),
                "test_ap": float(
                    average_precision_score(test[1], tree.predict_proba(test[0])[:, 1])
                ),
            }
        )
    return pd.DataFrame(rows)


def size_curve(
    estimator: Any,
    train: tuple[FloatArray, FloatArray],
    test: tuple[FloatArray, FloatArray],
    fractions: list[float],
) -> pd.DataFrame:
    """Learning curve in time: the estimator trained on the latest ``fraction`` of the
    training rows (rows in time order), scored on those rows and on the later test week.
    A wide gap that closes as rows are added is variance; two low lines are bias."""
    features, target = train
    rows = []
    for fraction in fractions:
        start = len(target) - round(fraction * len(target))
        model = clone(estimator).fit(features[start:], target[start:])
        rows.append(
            {
                "rows": len(target) - start,
                "train_ap": _ap(model, features[start:], target[start:]),
                "test_ap": _ap(model, *test),
            }
        )
    return pd.DataFrame(rows)


def _ap(model: Any, features: Any, target: FloatArray) -> float:
    return float(average_precision_score(target, model.predict_proba(features)[:, 1]))


def accuracy_paradox(
    target: FloatArray, scores: dict[str, FloatArray], threshold: float
) -> pd.DataFrame:
    """Accuracy against AP and recall: a model that never says fraud is 99% accurate."""
    rows = []
    for name, proba in scores.items():
        flagged = proba >= threshold
        rows.append(
            {
                "model": name,
                "accuracy": float(accuracy_score(target, flagged)),
                "average_precision": float(average_precision_score(target, proba)),
                "recall": float(recall_score(target, flagged, zero_division=0)),
                "flagged": int(flagged.sum()),
            }
        )
    return pd.DataFrame(rows)


def threshold_table(
    target: FloatArray, proba: FloatArray, thresholds: list[float], fp_cost: float, fn_cost: float
) -> pd.DataFrame:
    """Precision, recall, F1, the confusion matrix and the cost of errors per threshold."""
    rows = []
    for threshold in thresholds:
        flagged = proba >= threshold
        tn, fp, fn, tp = confusion_matrix(target, flagged, labels=[0, 1]).ravel()
        rows.append(
            {
                "threshold": threshold,
                "precision": float(precision_score(target, flagged, zero_division=0)),
                "recall": float(recall_score(target, flagged, zero_division=0)),
                "f1": float(f1_score(target, flagged, zero_division=0)),
                "tp": int(tp),
                "fp": int(fp),
                "fn": int(fn),
                "tn": int(tn),
                "cost": float(fp * fp_cost + fn * fn_cost),
            }
        )
    return pd.DataFrame(rows)


def cv_estimates(
    estimator: Any,
    train: tuple[Any, FloatArray],
    test: tuple[Any, FloatArray],
    n_splits: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated AP with shuffled k-fold and with time-ordered folds, beside the AP
    of the same recipe trained on the whole period and scored on the later test week.

    Features may be a DataFrame: a pipeline built from the schema selects its columns."""
    shuffled = cross_val_score(
        clone(estimator),
        *train,
        cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
        scoring="average_precision",
    )
    ordered = cross_val_score(
        clone(estimator), *train, cv=TimeSeriesSplit(n_splits=n_splits), scoring="average_precision"
    )
    test_ap = _ap(clone(estimator).fit(*train), *test)
    return {"shuffled": shuffled, "time_ordered": ordered, "test": test_ap}


def isolation_forest_ap(
    train_features: FloatArray, test: tuple[FloatArray, FloatArray], seed: int = 0
) -> float:
    """AP of an anomaly detector that never sees a label: fraud as the unusual payment."""
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(train_features)
    # score_samples is higher for normal rows: negate it to rank anomalies first.
    return float(average_precision_score(test[1], -forest.score_samples(test[0])))


def customer_segments(
    transactions: pd.DataFrame, customer: str, amount: str, k: int = 4, seed: int = 0
) -> pd.DataFrame:
    """K-Means on each customer's spending habits: mean amount, spread, payments a day.

    Returns one row per segment: its customers, centre, and the share of its payments
    that were fraud (which the clustering never saw).
    """
    days = max(1, transactions["TX_TIME_DAYS"].nunique()) if "TX_TIME_DAYS" in transactions else 1
    habits = transactions.groupby(customer).agg(
        mean_amount=(amount, "mean"), amount_spread=(amount, "std"), payments=(amount, "size")
    )
    habits["payments_per_day"] = habits.pop("payments") / days
    habits = habits.fillna(0.0)
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(
        StandardScaler().fit_transform(habits)
    )
    habits["segment"] = model.labels_
    fraud = transactions.groupby(customer)["TX_FRAUD"].agg(["sum", "size"])
    habits = habits.join(fraud)
    table = habits.groupby("segment").agg(
        customers=("mean_amount", "size"),
        mean_amount=("mean_amount", "mean"),
        payments_per_day=("payments_per_day", "mean"),
        frauds=("sum", "sum"),
        payments=("size", "sum"),
    )
    table["fraud_share"] = table["frauds"] / table["payments"]
    return table.sort_values("mean_amount").reset_index(drop=True)


def pca_projection(features: FloatArray, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """The first two principal components of standardized features, and the share of the
    variance each explains."""
    pca = PCA(n_components=2, random_state=seed).fit(features)
    projected: FloatArray = pca.transform(features)
    explained: FloatArray = pca.explained_variance_ratio_
    return projected, explained


def calibration_table(target: FloatArray, proba: FloatArray, edges: list[float]) -> pd.DataFrame:
    """Per band of predicted probability: payments, mean prediction, observed fraud rate.

    A calibrated model's 0.3 means three frauds in ten; the Brier score sums it up."""
    # Bands are [left, right); the top edge itself (a probability of 1) joins the last band.
    below_top = np.minimum(proba, np.nextafter(edges[-1], -np.inf))
    band = pd.cut(below_top, bins=edges, right=False)
    frame = pd.DataFrame({"band": band, "predicted": proba, "fraud": target})
    table = frame.groupby("band", observed=True).agg(
        payments=("fraud", "size"), mean_predicted=("predicted", "mean"), observed=("fraud", "mean")
    )
    table.index = [f"{interval.left:g} to {interval.right:g}" for interval in table.index]
    return table


def best_of_each_model(leaderboard: pd.DataFrame) -> pd.DataFrame:
    """Each model's best leaderboard row (its best strategy and settings), best first.

    ``leaderboard`` is the train stage's table: one row per model/strategy, ranked by
    cross-validated AP."""
    ranked = leaderboard.sort_values("average_precision_mean", ascending=False, kind="stable")
    return ranked.drop_duplicates("model").reset_index(drop=True)


def ap_by_period(
    estimators: dict[str, Any],
    train: tuple[Any, FloatArray],
    test: tuple[Any, FloatArray],
) -> dict[str, dict[str, float]]:
    """Each estimator fitted on the training period: its AP there and on the test period.

    The gap between the two is the overfitting the cross-validated train AP hints at."""
    found = {}
    for name, estimator in estimators.items():
        fitted = clone(estimator).fit(*train)
        found[name] = {"train_ap": _ap(fitted, *train), "test_ap": _ap(fitted, *test)}
    return found
