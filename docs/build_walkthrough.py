"""Regenerate docs/walkthrough.md: its figures and every number in it (`make docs`).

    python docs/build_walkthrough.py

Reads the pipeline's outputs (run `make train` first): the training week
(data/split/train.parquet) and the feature schema. Fills docs/walkthrough.in.md's
{placeholders} with the numbers computed here and writes docs/walkthrough.md and the
figures under docs/images/walkthrough/. Edit the .in.md file, not the .md one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fraud_detection.gradient_descent import fit_logistic_regression  # noqa: E402
from fraud_detection.schema import FeatureSchema  # noqa: E402
from fraud_detection.walkthrough import (  # noqa: E402
    learning_rate_curves,
    regularization_paths,
    standardized,
)

TRAIN = REPO / "data" / "split" / "train.parquet"
SCHEMA = REPO / "data" / "features" / "schema.json"
TEMPLATE = REPO / "docs" / "walkthrough.in.md"
OUTPUT = REPO / "docs" / "walkthrough.md"
IMAGES = REPO / "docs" / "images" / "walkthrough"
RATES = [0.01, 0.1, 1.0, 10.0, 100.0]
STEPS = 300
STRENGTHS = [float(c) for c in np.logspace(-4, 1, 11)]


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

    started = time.perf_counter()
    ours = fit_logistic_regression(
        features, target, learning_rate=5.0, max_steps=50_000, tolerance=1e-7
    )
    seconds = time.perf_counter() - started
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(features, target)
    return {
        "gd_rows": len(target),
        "gd_steps": STEPS,
        "gd_loss_start": curves.iloc[0, 0],
        "gd_rate_table": _rate_table(curves),
        "gd_converged_steps": len(ours.losses) - 1,
        "gd_converged_seconds": seconds,
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


def main() -> None:
    if not TRAIN.is_file():
        sys.exit(f"{TRAIN} does not exist: run `make train` first")
    IMAGES.mkdir(parents=True, exist_ok=True)
    schema = FeatureSchema.model_validate_json(SCHEMA.read_text())
    train = pd.read_parquet(TRAIN)
    features = standardized(train[schema.names])
    target = train[schema.target].to_numpy(np.float64)
    numbers = gradient_descent(features, target) | regularization(features, target, schema.names)
    shown = {
        key: (f"{value:,}" if isinstance(value, int) else f"{value:.4g}")
        if not isinstance(value, str)
        else value
        for key, value in numbers.items()
    }
    OUTPUT.write_text(TEMPLATE.read_text().format(**shown))
    print(f"wrote {OUTPUT.relative_to(REPO)} and {len(list(IMAGES.glob('*.png')))} figures")


if __name__ == "__main__":
    main()
