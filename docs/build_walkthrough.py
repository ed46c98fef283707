"""Regenerate docs/walkthrough.md: its figures and every number in it (`make docs`).

    python docs/build_walkthrough.py

Reads the pipeline's outputs (run `make train` first): the training week
(data/split/train.parquet) and the feature schema. Fills docs/walkthrough.in.md's
{placeholders} with the numbers computed here and writes docs/walkthrough.md and the
figures under docs/images/walkthrough/. Edit the .in.md file, not the .md one.
"""

from __future__ import annotations

import json
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from xgboost import XGBClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fraud_detection.calibration import without_calibration  # noqa: E402
from fraud_detection.gradient_descent import fit_logistic_regression  # noqa: E402
from fraud_detection.io.files import load_params  # noqa: E402
from fraud_detection.io.model_package import load_model_package  # noqa: E402
from fraud_detection.modeling import (  # noqa: E402
    Candidate,
    Selection,
    build_pipeline,
    candidates,
)
from fraud_detection.params import Params  # noqa: E402
from fraud_detection.schema import FeatureSchema  # noqa: E402
from fraud_detection.validation import settings_text  # noqa: E402
from fraud_detection.walkthrough import (  # noqa: E402
    accuracy_paradox,
    ap_by_period,
    best_of_each_model,
    calibration_table,
    customer_segments,
    cv_estimates,
    depth_curve,
    isolation_forest_ap,
    learning_rate_curves,
    pca_projection,
    regularization_paths,
    size_curve,
    standardized,
    threshold_table,
)

TRAIN = REPO / "data" / "split" / "train.parquet"
TEST = REPO / "data" / "split" / "test.parquet"
MODEL = REPO / "models" / "model"
SELECTION = REPO / "models" / "selection.json"
SCHEMA = REPO / "data" / "features" / "schema.json"
LEADERBOARD = REPO / "reports" / "train" / "leaderboard.csv"
METRICS = REPO / "reports" / "evaluate" / "metrics.json"
SERVING_RESULTS = REPO / "benchmarks" / "results" / "serving.json"
AUTH_RESULTS = REPO / "benchmarks" / "results" / "auth.json"
REPLICAS_RESULTS = REPO / "benchmarks" / "results" / "replicas.json"
TEMPLATE = REPO / "docs" / "walkthrough.in.md"
OUTPUT = REPO / "docs" / "walkthrough.md"
IMAGES = REPO / "docs" / "images" / "walkthrough"
RATES = [0.01, 0.1, 1.0, 10.0, 100.0]
STEPS = 300
STRENGTHS = [float(c) for c in np.logspace(-4, 1, 11)]
Split = tuple[np.ndarray, np.ndarray]


def gradient_descent(features: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    curves = learning_rate_curves(features, target, RATES, STEPS)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axis = figure.subplots()
    for rate in curves.columns:
        axis.plot(curves.index, curves[rate], label=f"learning rate {rate}")
    axis.set_xlabel("gradient step")
    axis.set_ylabel("mean log loss + L2 penalty")
    axis.set_yscale("log")
    axis.set_title("Logistic regression by gradient descent, our training week")
    axis.legend()
    figure.savefig(IMAGES / "gradient_descent.png", dpi=100)

    ours = fit_logistic_regression(
        features, target, learning_rate=5.0, max_steps=50_000, tolerance=1e-7
    )
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(features, target)
    return {
        "gd_rows": len(target),
        "gd_steps": STEPS,
        "gd_loss_start": curves.iloc[0, 0],
        "gd_rate_table": _rate_table(curves),
        "gd_converged_steps": len(ours.losses) - 1,
        "gd_max_coef_difference": float(np.abs(ours.coef - theirs.coef_[0]).max()),
        "gd_intercept_difference": abs(ours.intercept - float(theirs.intercept_[0])),
    }


def _rate_table(curves: pd.DataFrame) -> str:
    """One row per learning rate: the final loss, and what the curve did."""
    final = curves.iloc[-1]
    rows = []
    for rate in curves.columns:
        losses = curves[rate].to_numpy()
        if losses[-1] > 1.01 * losses.min():
            note = f"overshoots: back up after a low of {losses.min():.4g}"
        elif rate == final.idxmin():
            bumps = int(np.sum(np.diff(losses) > 0))
            note = "the lowest of the five" + (f" ({bumps} small bounces)" if bumps else "")
        else:
            note = f"still falling, {losses[-2] - losses[-1]:.1e} in the last step"
        rows.append(f"| {rate} | {final[rate]:.4g} | {note} |")
    return "\n".join(rows)


def regularization(features: np.ndarray, target: np.ndarray, names: list[str]) -> dict[str, Any]:
    paths = regularization_paths(features, target, names, STRENGTHS)
    figure = Figure(figsize=(10, 5), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    # Name the five largest coefficients of the weakest penalty; the rest in grey.
    weakest = paths[paths["penalty"] == "L2"].iloc[-1][names].abs()
    named = list(weakest.sort_values(ascending=False).index[:5])
    for axis, penalty in zip(axes, ("L1", "L2"), strict=True):
        path = paths[paths["penalty"] == penalty]
        for name in names:
            if name in named:
                axis.plot(path["C"], path[name], linewidth=1.5, label=name)
            else:
                axis.plot(path["C"], path[name], linewidth=0.8, color="0.7")
        axis.set_xscale("log")
        axis.set_xlabel("C (inverse penalty strength)")
        axis.set_title(f"{penalty} penalty")
    axes[0].set_ylabel("coefficient (standardized features)")
    axes[0].legend(fontsize="small", loc="lower left")
    figure.savefig(IMAGES / "regularization.png", dpi=100)
    l1 = paths[paths["penalty"] == "L1"].set_index("C")["zeros"]
    l2 = paths[paths["penalty"] == "L2"].set_index("C")["zeros"]
    table = "\n".join(f"| {c:.2g} | {int(l1[c])} | {int(l2[c])} |" for c in STRENGTHS)
    # The features L1 keeps under the strongest penalty that keeps any.
    l1_paths = paths[(paths["penalty"] == "L1") & (paths["zeros"] < len(names))]
    strongest = l1_paths.iloc[0]
    kept = [name for name in names if strongest[name] != 0.0]
    return {
        "features": len(names),
        "reg_zero_table": table,
        "reg_first_c": f"{strongest['C']:.2g}",
        "reg_first_kept": ", ".join(f"`{name}`" for name in kept),
    }


def overfitting(train: Split, test: Split) -> dict[str, Any]:
    depths: list[int | None] = [1, 2, 3, 4, 6, 8, 10, 14, 20, None]
    curve = depth_curve(train, test, depths)
    sizes = size_curve(
        XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=2),
        train,
        test,
        [0.1, 0.25, 0.5, 0.75, 1.0],
    )
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    labels = [str(depth) for depth in curve["depth"]]
    left.plot(labels, curve["train_ap"], marker="o", label="training week (seen)")
    left.plot(labels, curve["test_ap"], marker="o", label="test week (unseen)")
    best = int(np.argmax(curve["test_ap"].to_numpy()))
    left.axvspan(best + 0.5, len(labels) - 0.5, color="red", alpha=0.08, label="overfit")
    left.set_xlabel("decision tree max_depth")
    left.set_ylabel("average precision")
    left.set_title("Validation curve: model complexity")
    left.legend()
    right.plot(sizes["rows"], sizes["train_ap"], marker="o", label="training rows (seen)")
    right.plot(sizes["rows"], sizes["test_ap"], marker="o", label="test week (unseen)")
    right.set_xlabel("training rows (the latest of the week)")
    right.set_title("Learning curve: XGBoost, 200 trees of depth 6")
    right.legend()
    figure.savefig(IMAGES / "overfitting.png", dpi=100)
    unlimited = curve.iloc[-1]
    return {
        "depth_table": "\n".join(
            f"| {row.depth} | {row.leaves:,} | {row.train_ap:.3f} | {row.test_ap:.3f} |"
            for row in curve.itertuples()
        ),
        "best_depth": str(curve["depth"][best]),
        "best_depth_test_ap": curve["test_ap"][best],
        "unlimited_train_ap": unlimited["train_ap"],
        "unlimited_test_ap": unlimited["test_ap"],
        "size_first_rows": int(sizes["rows"].iloc[0]),
        "size_first_test_ap": sizes["test_ap"].iloc[0],
        "size_last_rows": int(sizes["rows"].iloc[-1]),
        "size_last_test_ap": sizes["test_ap"].iloc[-1],
        "size_train_ap_min": sizes["train_ap"].min(),
    }


def thresholds(test: Split, proba: np.ndarray, params: Params) -> dict[str, Any]:
    chosen = load_model_package(MODEL).threshold
    costs = params.evaluate.threshold
    grid = sorted({0.1, 0.2, 0.3, round(chosen, 3), 0.6, 0.8})
    table = threshold_table(
        test[1], proba, grid, costs.cost_false_positive, costs.cost_false_negative
    )
    curve = threshold_table(
        test[1], proba, [float(t) for t in np.linspace(0.02, 0.98, 49)], 1.0, 10.0
    )
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axis = figure.subplots()
    for column in ("precision", "recall", "f1"):
        axis.plot(curve["threshold"], curve[column], label=column)
    axis.axvline(chosen, color="black", linestyle="--", linewidth=1, label="chosen threshold")
    axis.set_xlabel("threshold on the fraud probability")
    axis.set_title("The champion on the test week")
    axis.legend()
    figure.savefig(IMAGES / "thresholds.png", dpi=100)
    return {
        "chosen_threshold": chosen,
        "fp_cost": costs.cost_false_positive,
        "fn_cost": costs.cost_false_negative,
        "threshold_table": "\n".join(
            f"| {row.threshold:.3g}{_chosen(row.threshold, chosen)}"
            f" | {row.precision:.3f} | {row.recall:.3f} | {row.f1:.3f} | {row.tp:,} | "
            f"{row.fp:,} | {row.fn:,} | {row.cost:,.0f} |"
            for row in table.itertuples()
        ),
    }


def _chosen(threshold: Any, chosen: float) -> str:
    return " (chosen)" if abs(threshold - round(chosen, 3)) < 1e-9 else ""


def calibration(test: Split, proba: np.ndarray) -> dict[str, Any]:
    table = calibration_table(test[1], proba, [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    return {
        "calibration_table": "\n".join(
            f"| {band} | {row.payments:,} | {row.mean_predicted:.3f} | {row.observed:.3f} |"
            for band, row in zip(table.index, table.itertuples(), strict=True)
        ),
        "brier": float(brier_score_loss(test[1], proba)),
        "brier_constant": float(brier_score_loss(test[1], np.full(len(proba), test[1].mean()))),
    }


def calibration_effects(
    test_frame: pd.DataFrame,
    schema: FeatureSchema,
    champion: Any,
    after: np.ndarray,
    params: Params,
) -> dict[str, Any]:
    """Before/after calibration: per strategy of the champion's model on the leaderboard,
    and the champion on the test week (metrics.json); ``after`` is its test scores."""
    board = pd.read_csv(LEADERBOARD)
    selection = Selection.model_validate_json(SELECTION.read_text())
    family = board[board["model"] == selection.model]
    metrics = json.loads(METRICS.read_text())
    raw = without_calibration(champion.pipeline)
    before = raw.predict_proba(test_frame[schema.names])[:, 1]
    cost = params.evaluate.threshold
    return {
        "calibration_model": selection.model,
        "calibration_strategies_table": "\n".join(
            f"| {row.strategy} | {row.average_precision_mean:.3f} | {row.brier_mean:.5f} | "
            f"{row.calibrated_brier_mean:.5f} | {row.ece_mean:.5f} | "
            f"{row.calibrated_ece_mean:.5f} |"
            for row in family.itertuples()
        ),
        "calibrator": str(champion.metadata["calibration"]),
        "base_rate": metrics["base_rate"],
        "test_rate": float(test_frame[schema.target].mean()),
        "mean_before": float(before.mean()),
        "mean_after": float(after.mean()),
        "base_rate_brier": metrics["base_rate_brier"],
        "brier_before": metrics["uncalibrated_brier"],
        "brier_after": metrics["brier"],
        "log_loss_before": metrics["uncalibrated_log_loss"],
        "log_loss_after": metrics["log_loss"],
        "ece_bins": int(metrics["ece_bins"]),
        "ece_before": metrics["uncalibrated_ece"],
        "ece_after": metrics["ece"],
        "ap_before": metrics["uncalibrated_average_precision"],
        "ap_after": metrics["average_precision"],
        "ap_change": metrics["average_precision"] - metrics["uncalibrated_average_precision"],
        "cv_ap_std": float(
            board.loc[board["selection"] == "winner", "average_precision_std"].iloc[0]
        ),
        "threshold": metrics["threshold"],
        "bayes_threshold": cost.cost_false_positive
        / (cost.cost_false_positive + cost.cost_false_negative),
        "selection_reason": selection.decision,
    }


def imbalance(train: Split, test: Split, proba: np.ndarray, threshold: float) -> dict[str, Any]:
    dummy = DummyClassifier(strategy="prior").fit(*train).predict_proba(test[0])[:, 1]
    paradox = accuracy_paradox(
        test[1],
        {"dummy: always the fraud share": dummy, "the champion": proba},
        threshold,
    )
    return {
        "fraud_share": float(test[1].mean()),
        "paradox_table": "\n".join(
            f"| {row.model} | {row.accuracy:.4f} | {row.average_precision:.3f} | "
            f"{row.recall:.3f} | {row.flagged:,} |"
            for row in paradox.itertuples()
        ),
        "isolation_forest_ap": isolation_forest_ap(train[0], test),
        "champion_ap": float(paradox["average_precision"].iloc[1]),
    }


def cross_validation(
    train_frame: pd.DataFrame, test_frame: pd.DataFrame, schema: FeatureSchema
) -> dict[str, Any]:
    selection = Selection.model_validate_json(SELECTION.read_text())
    train = (train_frame[schema.names], train_frame[schema.target].to_numpy())
    test = (test_frame[schema.names], test_frame[schema.target].to_numpy())
    estimates = cv_estimates(selection.unfitted_pipeline(schema), train, test)
    shuffled, ordered = estimates["shuffled"], estimates["time_ordered"]
    return {
        "cv_recipe": selection.label,
        "cv_shuffled": f"{shuffled.mean():.3f} ± {shuffled.std():.3f}",
        "cv_shuffled_folds": ", ".join(f"{v:.3f}" for v in shuffled),
        "cv_ordered": f"{ordered.mean():.3f} ± {ordered.std():.3f}",
        "cv_ordered_folds": ", ".join(f"{v:.3f}" for v in ordered),
        "cv_test": estimates["test"],
        "cv_shuffled_gap": shuffled.mean() - estimates["test"],
        "cv_ordered_gap": ordered.mean() - estimates["test"],
    }


# One line per model kind for the algorithm tour: what it does, in our words.
ALGORITHMS = {
    "dummy": "predicts the fraud share for every payment: the floor any model must beat",
    "logistic_regression": "a weighted sum of the standardized features through a sigmoid; "
    "a straight boundary, coefficients you can read, L1 or L2 penalty",
    "decision_tree": "if-then splits on one feature at a time; readable when shallow, "
    "memorizes when deep (high variance)",
    "random_forest": "many deep trees on bootstrap samples and random feature subsets, "
    "averaged: bagging cuts the variance of one deep tree",
    "xgboost": "shallow trees added one after another, each fitting what the previous ones "
    "got wrong: boosting cuts the bias; regularized, second-order gradients",
    "lightgbm": "boosting as well, with features binned into histograms and trees grown "
    "leaf by leaf: faster on large tables",
    "mlp": "a small neural network: two hidden layers of 32 and 16 ReLU units, trained by "
    "Adam (a stochastic gradient descent), early stopping on a validation slice",
}


def algorithms(
    train_frame: pd.DataFrame, test_frame: pd.DataFrame, schema: FeatureSchema, params: Params
) -> dict[str, Any]:
    board = pd.read_csv(LEADERBOARD, keep_default_na=False)
    best = best_of_each_model(board)
    found: dict[tuple[str, Any, str], Candidate] = {
        (c.model, c.strategy, settings_text(c.settings)): c for c in candidates(params.train)
    }
    share = float(train_frame[schema.target].mean())
    estimators: dict[str, Any] = {}
    for model, strategy, settings in best[["model", "strategy", "settings"]].itertuples(
        index=False
    ):
        candidate = found[(str(model), strategy, str(settings))]
        estimators[str(model)] = build_pipeline(
            candidate, params.train, schema, positive_share=share
        )
    train = (train_frame[schema.names], train_frame[schema.target].to_numpy(np.float64))
    test = (test_frame[schema.names], test_frame[schema.target].to_numpy(np.float64))
    scores = ap_by_period(estimators, train, test)
    lines = []
    for row in best.itertuples():
        kind = params.train.models[str(row.model)].kind
        score = scores[str(row.model)]
        lines.append(
            f"| {row.model} | {row.strategy} | {row.settings} | "
            f"{row.average_precision_mean:.3f} ± {row.average_precision_std:.3f} | "
            f"{score['train_ap']:.3f} | {score['test_ap']:.3f} | {row.fit_seconds_mean:.1f} | "
            f"{ALGORITHMS[kind]} |"
        )
    no_resampling = board[board["strategy"] == "none"].iloc[0]
    return {
        "algorithms_table": "\n".join(lines),
        "n_candidates": len(candidates(params.train)),
        "n_models": len(params.train.models),
        "n_families": len(board),
        "best_recipe": f"{best.iloc[0]['model']}/{best.iloc[0]['strategy']}",
        "best_recipe_ap": float(best.iloc[0]["average_precision_mean"]),
        "best_plain": f"{no_resampling['model']}/none",
        "best_plain_ap": float(no_resampling["average_precision_mean"]),
    }


def rule_baseline(
    test_frame: pd.DataFrame,
    schema: FeatureSchema,
    params: Params,
    proba: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """The hand-written rule a team might start with (flag every large amount), beside
    the champion at its threshold."""
    limit = params.data.simulator.scenarios.large_amount.threshold
    fraud = test_frame[schema.target].to_numpy() == 1
    found: dict[str, Any] = {
        "rule_limit": limit,
        "label_delay_days": params.features.label_delay_days,
    }
    for name, flagged in (
        ("rule", test_frame["TX_AMOUNT"].to_numpy() > limit),
        ("champion", proba >= threshold),
    ):
        caught = int((flagged & fraud).sum())
        found[f"{name}_flagged"] = int(flagged.sum())
        found[f"{name}_recall"] = caught / max(int(fraud.sum()), 1)
        found[f"{name}_precision"] = caught / max(int(flagged.sum()), 1)
    return found


def measured_elsewhere() -> dict[str, Any]:
    """Figures the benchmarks measured (`make bench-serving`, `benchmarks/auth.py`,
    `make bench-replicas`), quoted in the deployment and design sections."""
    serving = json.loads(SERVING_RESULTS.read_text())
    rate = serving["summary"]["best"]["service"]["single_sequential"]["requests_per_second"]
    auth = json.loads(AUTH_RESULTS.read_text())
    limited = json.loads(REPLICAS_RESULTS.read_text())["limits"]["rate"]["HAProxy"]
    return {
        "serving_rps": f"{round(rate, -2):,.0f}",
        "key_check_us": auth["check_alone_us"]["2 key(s)"],
        "key_cost_share": auth["in_process_us"]["cost_share"],
        "rate_seconds": limited["sustained_seconds"],
        "rate_passed": limited["sustained"]["200"],
        "rate_per_second": limited["sustained_2xx_per_second"],
        "rate_refused": limited["sustained"]["429"],
    }


def unsupervised(
    train_frame: pd.DataFrame, features: np.ndarray, target: np.ndarray
) -> dict[str, Any]:
    segments = customer_segments(train_frame, "CUSTOMER_ID", "TX_AMOUNT")
    projected, explained = pca_projection(features)
    rng = np.random.default_rng(0)
    genuine = np.flatnonzero(target == 0)
    shown = np.concatenate([rng.choice(genuine, 5000, replace=False), np.flatnonzero(target == 1)])
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    axis = figure.subplots()
    for value, label, color in ((0, "genuine (5,000 of them)", "0.6"), (1, "fraud", "red")):
        rows = shown[target[shown] == value]
        axis.scatter(projected[rows, 0], projected[rows, 1], s=6, c=color, label=label, alpha=0.6)
    axis.set_xlabel(f"first component ({explained[0]:.0%} of the variance)")
    axis.set_ylabel(f"second component ({explained[1]:.0%})")
    axis.set_title("PCA of the 15 standardized features, training week")
    axis.legend()
    figure.savefig(IMAGES / "pca.png", dpi=100)
    return {
        "segments_table": "\n".join(
            f"| {i + 1} | {row.customers:,} | {row.mean_amount:.1f} | "
            f"{row.payments_per_day:.2f} | {row.fraud_share:.2%} |"
            for i, row in enumerate(segments.itertuples())
        ),
        "pca_first": explained[0],
        "pca_second": explained[1],
    }


class Numbers(string.Formatter):
    """Template fields: an explicit spec ({share:.2%}) wins; otherwise four significant
    digits for floats and thousands separators for ints."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if not format_spec and isinstance(value, bool | str):
            return str(value)
        if not format_spec and isinstance(value, int | np.integer):
            return f"{value:,}"
        if not format_spec and isinstance(value, float | np.floating):
            return f"{value:.4g}"
        return str(super().format_field(value, format_spec))


def main() -> None:
    for needed in (TRAIN, TEST, MODEL, SELECTION, LEADERBOARD):
        if not needed.exists():
            sys.exit(f"{needed} does not exist: run `make train` first")
    IMAGES.mkdir(parents=True, exist_ok=True)
    schema = FeatureSchema.model_validate_json(SCHEMA.read_text())
    params = load_params(REPO / "params.yaml")
    train_frame, test_frame = pd.read_parquet(TRAIN), pd.read_parquet(TEST)
    features = standardized(train_frame[schema.names])
    target = train_frame[schema.target].to_numpy(np.float64)
    train = (train_frame[schema.names].to_numpy(np.float64), target)
    test = (
        test_frame[schema.names].to_numpy(np.float64),
        test_frame[schema.target].to_numpy(np.float64),
    )
    champion = load_model_package(MODEL)
    proba = champion.pipeline.predict_proba(test_frame[schema.names])[:, 1]
    numbers: dict[str, Any] = {}
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("gradient descent", lambda: gradient_descent(features, target)),
        ("regularization", lambda: regularization(features, target, schema.names)),
        ("overfitting", lambda: overfitting(train, test)),
        ("thresholds", lambda: thresholds(test, proba, params)),
        ("calibration", lambda: calibration(test, proba)),
        (
            "calibration effects",
            lambda: calibration_effects(test_frame, schema, champion, proba, params),
        ),
        ("imbalance", lambda: imbalance(train, test, proba, champion.threshold)),
        ("cross-validation", lambda: cross_validation(train_frame, test_frame, schema)),
        ("unsupervised", lambda: unsupervised(train_frame, features, target)),
        ("algorithms", lambda: algorithms(train_frame, test_frame, schema, params)),
        ("benchmarks", measured_elsewhere),
        (
            "rule baseline",
            lambda: rule_baseline(test_frame, schema, params, proba, champion.threshold),
        ),
    ]
    for name, section in sections:
        started = time.perf_counter()
        numbers |= section()
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
    OUTPUT.write_text(Numbers().format(TEMPLATE.read_text(), **numbers))
    print(f"wrote {OUTPUT.relative_to(REPO)} and {len(list(IMAGES.glob('*.png')))} figures")


if __name__ == "__main__":
    main()
