"""Measure the training pipeline's speed and quality figures, side by side in one run.

    python benchmarks/pipeline.py              # everything (about 10 minutes on 2 cores)
    python benchmarks/pipeline.py repro scale  # only some parts

Parts:
  repro    clean `dvc repro` with the default params in a scratch copy of the project,
           then a no-op `dvc repro`; the ceiling is the same five stage processes with
           the work removed (interpreter start-up and imports only).
  scale    the handbook's full size (5,000 customers, 10,000 terminals, 183 days):
           generation and the 15 features, timed in process and as stage processes
           with their peak memory; beside them a plain pandas rolling-window version
           of the features and the bare floor of the work (random draws, sorts).
  quality  the full-size pipeline (`dvc repro`): its champion's test metrics, and each
           handbook model fitted on the same training period and scored on the same
           test period, beside the handbook's published table.

Results go to benchmarks/results/pipeline.json and, as Markdown, pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fraud_detection.data.simulator import simulate  # noqa: E402
from fraud_detection.evaluation import holdout_report  # noqa: E402
from fraud_detection.features import transaction_features  # noqa: E402
from fraud_detection.params import EvaluateParams, FeatureParams, SimulatorParams  # noqa: E402
from fraud_detection.schema import FeatureSchema  # noqa: E402
from tests.pipelines.project import make_project, merged, repo_params  # noqa: E402
from tests.reference_features import rolling_features  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FULL_SIZE = {"data": {"simulator": {"start_date": "2018-04-01", "n_days": 183}}}
# The module each stage of dvc.yaml runs.
STAGES = {
    "data": "pipelines.data",
    "features": "pipelines.features",
    "split": "pipelines.split",
    "train": "pipelines.train",
    "evaluate": "pipelines.evaluate",
    "reference": "pipelines.reference",
    "monitor_baseline": "monitoring.baseline",
}
# Chapter 3 of the handbook, on its protocol: AUC ROC, AP, CP@100 on the test week.
HANDBOOK = {
    "Logistic regression": (0.871, 0.606, 0.291),
    "Decision tree, depth 2": (0.763, 0.496, 0.241),
    "Decision tree, unlimited depth": (0.788, 0.309, 0.243),
    "Random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.862, 0.639, 0.273),
    "Random scores": (0.5, 0.007, 0.017),
}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


# Runs a command and reports its wall time and peak memory. A fresh, small interpreter
# does the measuring: a child forked straight from this (large) process would report
# this process's memory as its own peak.
_MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(time.perf_counter() - started, peak)
sys.exit(code)
"""


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one child process."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}: {result.stderr[-2000:]}")
    seconds, peak_kb = result.stdout.split()
    return float(seconds), float(peak_kb) / 1024


# ------------------------------------------------------------------------------ repro


def bench_repro(scratch: Path) -> dict[str, Any]:
    project = make_project(scratch / "default", repo_params())
    clean, _ = timed(lambda: project.run("dvc", "repro"))
    noop, _ = timed(lambda: project.run("dvc", "repro"))
    imports_only: dict[str, float] = {}
    for stage, module in STAGES.items():
        started = time.perf_counter()
        project.run("python", "-c", f"import {module}")
        imports_only[stage] = time.perf_counter() - started
    metrics = json.loads(project.path("reports/evaluate/metrics.json").read_text())
    return {
        "clean_repro_s": clean,
        "noop_repro_s": noop,
        "ceiling_stage_startup_s": imports_only,
        "ceiling_total_startup_s": sum(imports_only.values()),
        "default_test_average_precision": metrics["average_precision"],
    }


# ------------------------------------------------------------------------------ scale


def floor_of_generation(n_rows: int) -> float:
    """The draws the simulator cannot avoid: five random numbers per transaction."""
    rng = np.random.default_rng(0)
    seconds, _ = timed(
        lambda: (
            [rng.normal(size=n_rows), rng.normal(size=n_rows)]
            + [rng.uniform(size=n_rows) for _ in range(3)]
        )
    )
    return seconds


def floor_of_features(frame: pd.DataFrame) -> float:
    """Two sorts by (group, time): every window method has to order the rows at least so."""
    seconds = frame["TX_TIME_SECONDS"].to_numpy()
    customer = frame["CUSTOMER_ID"].to_numpy()
    terminal = frame["TERMINAL_ID"].to_numpy()
    elapsed, _ = timed(lambda: (np.lexsort((seconds, customer)), np.lexsort((seconds, terminal))))
    return elapsed


def bench_scale(scratch: Path) -> dict[str, Any]:
    # The handbook's full size: the defaults (params.yaml's world) over its 183 days.
    params = SimulatorParams.model_validate(FULL_SIZE["data"]["simulator"])
    generation_s, frame = timed(lambda: simulate(params))
    features_s, _ = timed(lambda: transaction_features(frame, FeatureParams()))
    pandas_s, _ = timed(lambda: rolling_features(frame, FeatureParams()))
    project = make_project(scratch / "scale", merged(repo_params(), FULL_SIZE))
    stage_runs = {
        stage: run_measured(["python", "-m", f"pipelines.{stage}"], project.root, project.env)
        for stage in ("data", "features")
    }
    return {
        "rows": len(frame),
        "fraud_share": float(frame["TX_FRAUD"].mean()),
        "generation_s": generation_s,
        "generation_floor_s": floor_of_generation(len(frame)),
        "features_s": features_s,
        "features_floor_s": floor_of_features(frame),
        "features_pandas_rolling_s": pandas_s,
        "stage_wall_s": {k: v[0] for k, v in stage_runs.items()},
        "stage_peak_mb": {k: v[1] for k, v in stage_runs.items()},
        "this_process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------- quality


def handbook_models(seed: int) -> dict[str, Any]:
    """The handbook's baseline models, with library defaults where it used them."""
    models = {
        "Logistic regression": LogisticRegression(max_iter=2000, random_state=seed),
        "Decision tree, depth 2": DecisionTreeClassifier(max_depth=2, random_state=seed),
        "Decision tree, unlimited depth": DecisionTreeClassifier(random_state=seed),
        "Random forest": RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed),
        "XGBoost": XGBClassifier(n_jobs=-1, random_state=seed, tree_method="hist"),
    }
    return {name: make_pipeline(StandardScaler(), model) for name, model in models.items()}


def score_test_period(
    test: pd.DataFrame, schema: FeatureSchema, proba: np.ndarray
) -> dict[str, float]:
    """The handbook's three metrics, computed as the pipeline's evaluate stage does."""
    report, _ = holdout_report(test, schema, proba, 0.5, EvaluateParams(top_k_cards=100))
    return {
        "roc_auc": report["roc_auc"],
        "average_precision": report["average_precision"],
        "cp100": report["card_precision_top_100"],
    }


def bench_quality(scratch: Path) -> dict[str, Any]:
    project = make_project(scratch / "quality", merged(repo_params(), FULL_SIZE))
    project.run("dvc", "repro")
    metrics = json.loads(project.path("reports/evaluate/metrics.json").read_text())
    selection = json.loads(project.path("models/selection.json").read_text())
    schema = FeatureSchema.model_validate_json(
        project.path("data/features/schema.json").read_text()
    )
    names = schema.names
    train = pd.read_parquet(project.path("data/split/train.parquet"))
    test = pd.read_parquet(project.path("data/split/test.parquet"))
    table: dict[str, dict[str, float]] = {}
    for name, model in handbook_models(seed=0).items():
        model.fit(train[names], train["TX_FRAUD"])
        table[name] = score_test_period(test, schema, model.predict_proba(test[names])[:, 1])
        table[name]["train_average_precision"] = average_precision_score(
            train["TX_FRAUD"], model.predict_proba(train[names])[:, 1]
        )
    random_scores = np.random.default_rng(0).uniform(size=len(test))
    table["Random scores"] = score_test_period(test, schema, random_scores)
    return {
        "champion": selection["label"],
        "champion_cv_average_precision": selection["cv_average_precision"],
        "champion_test": {
            "roc_auc": metrics["roc_auc"],
            "average_precision": metrics["average_precision"],
            "cp100": metrics["card_precision_top_100"],
        },
        "handbook_models": table,
        "leaderboard": project.path("reports/train/leaderboard.md").read_text(),
    }


# --------------------------------------------------------------------------- reporting


def save_results(stem: str, results: dict[str, Any], report: str) -> None:
    """``results/<stem>.json`` (the raw figures) and ``<stem>.md`` (the report), printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(report)
    print(report)


def machine() -> str:
    """The machine a result was measured on, as the reports print it."""
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def repro_section(r: dict[str, Any]) -> list[str]:
    return [
        f"## `dvc repro`, default params ({r.get('when', 'date not recorded')})",
        "",
        row("run", "seconds", "target"),
        row("---", "---:", "---"),
        row("clean `dvc repro`", f"{r['clean_repro_s']:.1f}", "≤ 180"),
        row("no-op `dvc repro`", f"{r['noop_repro_s']:.1f}", "≤ 5"),
        row(
            f"ceiling: the {len(r['ceiling_stage_startup_s'])} stage processes with the work "
            "removed (start-up and imports)",
            f"{r['ceiling_total_startup_s']:.1f}",
            "",
        ),
        "",
    ]


def scale_section(s: dict[str, Any]) -> list[str]:
    pandas_ratio = s["features_pandas_rolling_s"] / s["features_s"]
    wall, peak = s["stage_wall_s"], s["stage_peak_mb"]
    return [
        f"## Handbook full size ({s['rows']:,} transactions, {s['fraud_share']:.2%} fraud)",
        "",
        row("work", "seconds", "side by side", "target"),
        row("---", "---:", "---", "---"),
        row(
            "generation, with the fraud scenarios",
            f"{s['generation_s']:.1f}",
            f"floor (the random draws alone) {s['generation_floor_s']:.2f} s",
            "≤ 20 s",
        ),
        row(
            "the 15 features",
            f"{s['features_s']:.1f}",
            f"pandas rolling windows {s['features_pandas_rolling_s']:.1f} s "
            f"({pandas_ratio:.0f} times slower); floor (two sorts) {s['features_floor_s']:.2f} s",
            "≤ 60 s",
        ),
        row("`data` stage process", f"{wall['data']:.1f}", f"peak {peak['data']:.0f} MB", "≤ 4 GB"),
        row(
            "`features` stage process",
            f"{wall['features']:.1f}",
            f"peak {peak['features']:.0f} MB",
            "≤ 4 GB",
        ),
        "",
    ]


def quality_section(q: dict[str, Any]) -> list[str]:
    c = q["champion_test"]
    lines = [
        "## Quality on the handbook protocol, full size",
        "",
        f"Champion selected by cross-validation: **{q['champion']}** "
        f"(CV AP {q['champion_cv_average_precision']:.3f}).",
        "",
        row(
            "model", "AUC ROC", "AP", "CP@100", "handbook AUC ROC", "handbook AP", "handbook CP@100"
        ),
        row("---", "---:", "---:", "---:", "---:", "---:", "---:"),
        row(
            f"**champion: {q['champion']}**",
            f"{c['roc_auc']:.3f}",
            f"{c['average_precision']:.3f}",
            f"{c['cp100']:.3f}",
            "",
            "(best: 0.658)",
            "",
        ),
    ]
    for name, ours in q["handbook_models"].items():
        auc, ap, cp = HANDBOOK[name]
        lines.append(
            row(
                name,
                f"{ours['roc_auc']:.3f}",
                f"{ours['average_precision']:.3f}",
                f"{ours['cp100']:.3f}",
                f"{auc:.3f}",
                f"{ap:.3f}",
                f"{cp:.3f}",
            )
        )
    lines += ["", "Training-set AP of the same models (overfitting in plain sight):", ""]
    lines += [
        f"- {name}: {ours['train_average_precision']:.3f}"
        for name, ours in q["handbook_models"].items()
        if "train_average_precision" in ours
    ]
    lines += ["", "### The full-size leaderboard", "", q["leaderboard"].split("\n\n", 2)[-1]]
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Pipeline benchmark ({results['when']}, {results['machine']})", ""]
    sections = {"repro": repro_section, "scale": scale_section, "quality": quality_section}
    for part, section in sections.items():
        if part in results:
            lines += section(results[part])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", help="repro, scale, quality (default: all)")
    benches = {"repro": bench_repro, "scale": bench_scale, "quality": bench_quality}
    parts = parser.parse_args().parts or list(benches)
    unknown = sorted(set(parts) - set(benches))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(benches)}")
    # Parts not run now keep their last results (each part records when it ran).
    saved = RESULTS / "pipeline.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    results |= {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        for part in parts:
            print(f"benchmark: {part} ...", flush=True)
            results[part] = benches[part](Path(folder)) | {"when": time.strftime("%Y-%m-%d %H:%M")}
    save_results("pipeline", results, markdown(results))


if __name__ == "__main__":
    main()
