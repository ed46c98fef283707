"""Calibration and the selection rule, measured on three datasets side by side.

    python benchmarks/calibration.py            # about 8 minutes on 2 cores

For each dataset, a clean `dvc repro` (timed) with the repository's params in a scratch
copy of the project: the default simulator data, and two CSV tables the tests make (a
credit-default table, `loans`, and a creditcard.csv-shaped one), 10,000 rows each. From
each run's outputs:

- the selection: the pure highest-AP candidate beside the one the tie rule chose;
- the champion on the test rows with its raw scores and each calibration method
  (none, sigmoid, isotonic), each calibrator fitted on the same out-of-fold scores the
  evaluate stage uses: Brier, log loss, ECE and AP, against always answering the
  training base rate;
- the same methods on the out-of-fold scores, cross-fitted (each fold calibrated on
  the others), which is what the stage's tie-break sees.

Results go to benchmarks/results/calibration.json and, as Markdown, calibration.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn.metrics import average_precision_score, brier_score_loss  # noqa: E402

from benchmarks.pipeline import machine, row, save_results  # noqa: E402
from fraud_detection.calibration import (  # noqa: E402
    cross_fitted,
    fit_calibrator,
    without_calibration,
)
from fraud_detection.evaluation import ECE_BINS, probability_scores  # noqa: E402
from fraud_detection.io.model_package import load_model_package  # noqa: E402
from fraud_detection.schema import FeatureSchema  # noqa: E402
from tests.pipelines.project import Project, make_project, merged, repo_params  # noqa: E402
from tests.pipelines.test_csv_pipeline import LOAN_NAMES, creditcard_like, loans  # noqa: E402

METHODS = ("none", "sigmoid", "isotonic")
CSV_ROWS = 10_000
DATASETS: dict[str, dict[str, Any]] = {
    "simulator (default)": {},
    "loans (CSV)": {
        "data": {
            "source": "csv",
            "csv": {
                "path": "data/external/table.csv",
                "target": "default",
                "positive_label": "Yes",
            },
            **LOAN_NAMES,
        },
    },
    "creditcard-shaped (CSV)": {
        "data": {
            "source": "csv",
            "csv": {"path": "data/external/table.csv", "target": "Class", "time_column": "Time"},
        },
    },
}
MAKERS = {"loans (CSV)": loans, "creditcard-shaped (CSV)": creditcard_like}


def run_dataset(name: str, root: Path) -> dict[str, Any]:
    params = merged(repo_params(), DATASETS[name] | {"train": {"experiment_name": "calibration"}})
    project = make_project(root, params)
    if name in MAKERS:
        MAKERS[name](CSV_ROWS, seed=3).to_csv(project.path("data/external/table.csv"), index=False)
    started = time.perf_counter()
    project.run("dvc", "repro")
    repro_seconds = time.perf_counter() - started
    return {"repro_seconds": repro_seconds} | measure(project)


def measure(project: Project) -> dict[str, Any]:
    schema = FeatureSchema.model_validate_json(
        project.path("data/features/schema.json").read_text()
    )
    board = pd.read_csv(project.path("reports/train/leaderboard.csv"))
    selection = json.loads(project.path("models/selection.json").read_text())
    oof = pd.read_parquet(project.path("models/out_of_fold.parquet"))
    test = pd.read_parquet(project.path("data/split/test.parquet"))
    metrics = json.loads(project.path("reports/evaluate/metrics.json").read_text())
    package = load_model_package(project.path("models/model"))
    raw_test = without_calibration(package.pipeline).predict_proba(test[schema.names])[:, 1]
    y_test = test[schema.target].to_numpy()
    base_rate = float(selection["positive_share"])
    test_by_method, oof_by_method = {}, {}
    for method in METHODS:
        calibrator = fit_calibrator(method, oof["proba"], oof["y"])
        scored = calibrator.predict(raw_test)
        test_by_method[method] = probability_scores(y_test, scored) | {
            "average_precision": float(average_precision_score(y_test, scored))
        }
        crossed = cross_fitted(method, oof["proba"], oof["y"], oof["fold"])
        oof_by_method[method] = probability_scores(oof["y"], crossed)
    top = board.iloc[0]
    return {
        "rows": {"train": len(oof), "test": len(test)},
        "test_positive_rate": float(y_test.mean()),
        "base_rate_brier": float(brier_score_loss(y_test, np.full(len(y_test), base_rate))),
        "highest_ap": f"{top['model']}/{top['strategy']}",
        "highest_ap_cv": float(top["average_precision_mean"]),
        "highest_ap_brier_raw": float(top["brier_mean"]),
        "winner": selection["label"],
        "winner_cv_ap": float(selection["cv_average_precision"]),
        "cv_ap_std": float(
            board.loc[board["selection"] == "winner", "average_precision_std"].iloc[0]
        ),
        "decision": selection["decision"],
        "tied": selection["tied"],
        "method": selection["calibration"]["method"],
        "threshold": metrics["threshold"],
        "cost_false_positives": metrics["cost_false_positives"],
        "cost_false_negatives": metrics["cost_false_negatives"],
        "shipped": {k: metrics[k] for k in ("brier", "log_loss", "ece", "average_precision")},
        "test": test_by_method,
        "out_of_fold": oof_by_method,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Calibration and selection",
        "",
        f"Measured {results['when']} on {results['machine']}: `python benchmarks/calibration.py`. "
        f"ECE over {ECE_BINS} equal-width bins. Each calibrator is fitted on the champion's "
        "out-of-fold scores and applied to its test scores; out-of-fold figures are cross-fitted.",
        "",
    ]
    for name, r in results["datasets"].items():
        lines += [
            f"## {name}",
            "",
            f"Clean `dvc repro`: {r['repro_seconds']:.0f} s. "
            f"Out-of-fold rows {r['rows']['train']:,}, "
            f"test rows {r['rows']['test']:,}, test positive rate {r['test_positive_rate']:.4f}. "
            f"Highest CV AP: {r['highest_ap']} ({r['highest_ap_cv']:.4f}, raw out-of-fold Brier "
            f"{r['highest_ap_brier_raw']:.5f}). Shipped: **{r['winner']}** (CV AP "
            f"{r['winner_cv_ap']:.4f} ± {r['cv_ap_std']:.4f}), calibration `{r['method']}`, "
            f"threshold {r['threshold']:.4f}, test cost FP {r['cost_false_positives']:.0f} + "
            f"FN {r['cost_false_negatives']:.0f}.",
            "",
            f"Selection: {r['decision']}.",
            "",
            "| calibration | test Brier | test log loss | test ECE | test AP "
            "| out-of-fold Brier | out-of-fold ECE |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method in METHODS:
            t, o = r["test"][method], r["out_of_fold"][method]
            lines.append(
                row(
                    method,
                    f"{t['brier']:.5f}",
                    f"{t['log_loss']:.4f}",
                    f"{t['ece']:.5f}",
                    f"{t['average_precision']:.4f}",
                    f"{o['brier']:.5f}",
                    f"{o['ece']:.5f}",
                )
            )
        lines += [
            row("always the base rate", f"{r['base_rate_brier']:.5f}", "", "", "", "", ""),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "datasets": {},
    }
    with tempfile.TemporaryDirectory(prefix="calibration-bench-") as folder:
        for index, name in enumerate(DATASETS):
            print(f"{name}: dvc repro ...", flush=True)
            results["datasets"][name] = run_dataset(name, Path(folder) / str(index))
    save_results("calibration", results, report(results))


if __name__ == "__main__":
    main()
