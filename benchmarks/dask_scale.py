"""The pipeline on Dask, measured side by side with the local engine.

    python benchmarks/dask_scale.py                  # both parts (about 30 minutes on 2 cores)
    python benchmarks/dask_scale.py full             # only the side-by-side part
    python benchmarks/dask_scale.py ten --scale 2    # a smaller "ten times" run

Parts:
  full  the handbook's full size (5,000 customers, 10,000 terminals, 183 days): the real
        stage processes of a scratch project (data, features, split, train, evaluate,
        reference), engine local and engine dask (a two-worker LocalCluster), one after
        the other; and the local training stages again on the Dask engine's candidates
        alone. Wall time, peak memory of the stage process and of each worker, and each
        champion's test AP beside its CV AP's spread over the folds.
  ten   ten times the handbook's payments (50,000 customers, 100,000 terminals with the
        radius cut so each customer reaches as many terminals as in the handbook, 183
        days: about 18 million payments), engine dask only, on two workers of 3 GB,
        every stage up to the drift reference (XGBoost's grid cut to one point).
        Beside the peaks: the dataset's size in memory (one partition's pandas size
        times the partitions), which no process came near.

Peaks come from the stages' own last log line (fraud_detection.io.dask_cluster logs
each process's peak resident memory when it closes the cluster) and, for the local
engine, from a small wrapper process that waits for the stage (its RUSAGE_CHILDREN).

Results go to benchmarks/results/dask_scale.json and, as Markdown, dask_scale.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serving import _machine
from tests.pipelines.project import Project, make_project, merged, repo_params

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

FULL_SIZE: dict[str, Any] = {"data": {"simulator": {"start_date": "2018-04-01", "n_days": 183}}}
DASK: dict[str, Any] = {
    "engine": {
        "kind": "dask",
        "dask": {"workers": 2, "threads_per_worker": 1, "memory_limit_gb": 3.0},
    }
}
# The handbook's reach: 10,000 terminals within radius 5 of a customer on the 100 x 100
# square; with ten times the terminals, the radius that keeps the same expected count.
HANDBOOK_RADIUS = 5.0


def ten_times(scale: float) -> dict[str, Any]:
    terminals = int(10_000 * scale)
    return {
        "data": {
            "simulator": {
                "start_date": "2018-04-01",
                "n_days": 183,
                "n_customers": int(5_000 * scale),
                "n_terminals": terminals,
                "radius": round(HANDBOOK_RADIUS * math.sqrt(10_000 / terminals), 4),
            }
        }
    }


# Waits for the stage and prints its wall time and the peak of the stage's process tree.
_MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stdout.write(result.stdout + result.stderr)
print(f"MEASURED {time.perf_counter() - started} {peak}")
sys.exit(result.returncode)
"""

_PEAKS = re.compile(r"peak memory: this process (\d+) MB; workers ([\d, ]+) MB")


def run_stage(project: Project, stage: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, "python", "-m", f"pipelines.{stage}"],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{result.stdout[-4000:]}")
    seconds, peak_kb = result.stdout.rsplit("MEASURED ", 1)[1].split()
    out: dict[str, Any] = {"wall_s": float(seconds), "tree_peak_mb": float(peak_kb) / 1024}
    if found := _PEAKS.search(result.stdout):
        out["stage_process_peak_mb"] = float(found.group(1))
        out["worker_peaks_mb"] = [float(v) for v in found.group(2).split(",")]
    done = re.search(r"done in [\d.]+ s: (.*)", result.stdout)
    out["summary"] = done.group(1) if done else ""
    return out


def dataset_memory_mb(folder: Path) -> tuple[float, int]:
    """The features table's pandas size: one partition measured, times the partitions."""
    files = sorted(folder.glob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    sample = pq.read_table(files[0]).to_pandas()
    per_row = sample.memory_usage(deep=True).sum() / len(sample)
    return per_row * rows / 2**20, rows


DATA_STAGES = ("data", "features", "split")
TRAINING_STAGES = ("train", "evaluate", "reference")


def boosted_only(params: dict[str, Any]) -> dict[str, Any]:
    """The repo's models and strategies that the Dask engine trains (the rest it leaves
    out), for a local run of the same candidates."""
    models = {}
    for name, spec in params["train"]["models"].items():
        strategies = [s for s in spec["strategies"] if s != "smote"]
        if spec["kind"] in {"xgboost", "lightgbm"} and strategies:
            models[name] = {**spec, "strategies": strategies}
    return {"train": {"models": models}}


def _outcome(project: Project) -> dict[str, Any]:
    """The champion, its test AP and the spread of its CV AP over the folds."""
    metrics = json.loads(project.path("reports/evaluate/metrics.json").read_text())
    summary = json.loads(project.path("reports/train/cv_summary.json").read_text())
    return {
        "winner": summary["winner"],
        "cv_ap_mean": summary["average_precision_mean"],
        "cv_ap_std": summary["average_precision_std"],
        "test_ap": metrics["average_precision"],
        "left_out": summary.get("left_out", []),
    }


def bench_full(scratch: Path) -> dict[str, Any]:
    """Each engine's whole pipeline on the same data; and the local engine again on the
    Dask engine's candidates alone (its data copied, not made again)."""
    runs: dict[str, Any] = {}
    for engine in ("local", "dask"):
        overrides = merged(FULL_SIZE, DASK) if engine == "dask" else FULL_SIZE
        project = make_project(scratch / f"full-{engine}", merged(repo_params(), overrides))
        stages = (*DATA_STAGES, *TRAINING_STAGES)
        runs[engine] = {stage: run_stage(project, stage) for stage in stages}
        runs[engine]["outcome"] = _outcome(project)
        if engine == "local":
            same = merged(merged(repo_params(), FULL_SIZE), boosted_only(repo_params()))
            twin = make_project(scratch / "full-local-boosted", same)
            shutil.copytree(project.path("data"), twin.path("data"), dirs_exist_ok=True)
            twin.path("reports").mkdir(exist_ok=True)
            shutil.copy2(project.path("reports/split.json"), twin.path("reports/split.json"))
            runs["local_boosted"] = {s: run_stage(twin, s) for s in TRAINING_STAGES}
            runs["local_boosted"]["outcome"] = _outcome(twin)
    return runs


def bench_ten(scratch: Path, scale: float) -> dict[str, Any]:
    overrides = merged(merged(ten_times(scale), DASK), ten_times_grid())
    project = make_project(scratch / "ten", merged(repo_params(), overrides))
    runs = {stage: run_stage(project, stage) for stage in DATA_STAGES}
    memory_mb, rows = dataset_memory_mb(project.path("data/features/features.parquet"))
    train_rows = pq.read_metadata(project.path("data/split/train.parquet")).num_rows
    runs |= {stage: run_stage(project, stage) for stage in TRAINING_STAGES}
    return {
        "params": overrides,
        "rows": rows,
        "train_rows": train_rows,
        "features_in_memory_mb": memory_mb,
        "stages": runs,
        "outcome": _outcome(project),
    }


def ten_times_grid() -> dict[str, Any]:
    """The repo's models, XGBoost's grid cut to its deeper point: a grid point more is
    four more fits on 0.7 million rows, and says nothing more about scale."""
    models = copy.deepcopy(repo_params()["train"]["models"])
    models["xgboost"]["grid"] = {"max_depth": [6]}
    return {"train": {"models": models}}


# ---------------------------------------------------------------------------- report


def _peaks(run: dict[str, Any]) -> str:
    if "worker_peaks_mb" not in run:
        return f"{run['tree_peak_mb']:,.0f} (one process)"
    workers = " / ".join(f"{v:,.0f}" for v in run["worker_peaks_mb"])
    return f"stage {run['stage_process_peak_mb']:,.0f}; workers {workers}"


def _stage_row(stage: str, a: dict[str, Any], b: dict[str, Any]) -> str:
    return (
        f"| `{stage}` | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
        f"{b['wall_s'] / a['wall_s']:.1f}x | {a['tree_peak_mb']:,.0f} | {_peaks(b)} |"
    )


def _outcome_row(name: str, o: dict[str, Any]) -> str:
    return (
        f"| {name} | {o['winner']} | {o['cv_ap_mean']:.3f} ± {o['cv_ap_std']:.3f} | "
        f"{o['test_ap']:.3f} |"
    )


def full_section(r: dict[str, Any]) -> list[str]:
    local, dask = r["local"], r["dask"]
    lines = [
        "### The handbook's full size, local and Dask side by side",
        "",
        f"Measured {r.get('when', '')}.",
        "",
        "| stage | local (s) | Dask (s) | Dask / local | local peak (MB) | Dask peaks (MB) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [_stage_row(stage, local[stage], dask[stage]) for stage in DATA_STAGES]
    same = r.get("local_boosted")
    if same is not None:
        lines += [
            "",
            "Training, evaluation and the drift reference with the local engine on the same "
            "candidates the Dask engine trains (XGBoost and LightGBM without SMOTE), and on "
            "all of them (the repo's default):",
            "",
            "| stage | local, same candidates (s) | Dask (s) | Dask / local | "
            "local peak (MB) | Dask peaks (MB) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        lines += [_stage_row(stage, same[stage], dask[stage]) for stage in TRAINING_STAGES]
        lines += [
            "",
            "| stage | local, all candidates (s) | Dask (s) | Dask / local | "
            "local peak (MB) | Dask peaks (MB) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        lines += [_stage_row(stage, local[stage], dask[stage]) for stage in TRAINING_STAGES]
        o_local, o_dask = local["outcome"], dask["outcome"]
        gap = abs(o_dask["test_ap"] - o_local["test_ap"])
        spread = max(o_local["cv_ap_std"], o_dask["cv_ap_std"])
        lines += [
            "",
            "| run | champion | CV AP (mean ± std over folds) | test AP |",
            "|---|---|---:|---:|",
            _outcome_row("local, all candidates", o_local),
            _outcome_row("local, same candidates", same["outcome"]),
            _outcome_row("Dask", o_dask),
            "",
            f"The Dask champion's test AP is {gap:.3f} from the local champion's; the fold "
            f"spread (the larger CV AP standard deviation) is {spread:.3f}: "
            + ("within it." if gap <= spread else "outside it."),
            f"Left out on Dask: {', '.join(o_dask['left_out'])}.",
        ]
    lines += ["", f"Rows: {dask['data']['summary']}.", ""]
    return lines


def ten_section(r: dict[str, Any]) -> list[str]:
    sim = r["params"]["data"]["simulator"]
    lines = [
        "### Ten times the handbook on two workers",
        "",
        f"Measured {r.get('when', '')}.",
        "",
        f"{sim['n_customers']:,} customers, {sim['n_terminals']:,} terminals (radius "
        f"{sim['radius']}), {sim['n_days']} days: {r['rows']:,} payments; the features "
        f"table is {r['features_in_memory_mb']:,.0f} MB in pandas. Two workers of "
        f"{DASK['engine']['dask']['memory_limit_gb']} GB each. The training period holds "
        f"{r.get('train_rows', 0):,} rows.",
        "",
        "| stage | wall (s) | peak of the stage process (MB) | peak of each worker (MB) |",
        "|---|---:|---:|---|",
    ]
    for stage, run in r["stages"].items():
        workers = " / ".join(f"{v:,.0f}" for v in run.get("worker_peaks_mb", []))
        stage_peak = run.get("stage_process_peak_mb", run["tree_peak_mb"])
        lines.append(f"| `{stage}` | {run['wall_s']:.1f} | {stage_peak:,.0f} | {workers} |")
    if "outcome" in r:
        o = r["outcome"]
        lines += [
            "",
            f"Champion: {o['winner']}, CV AP {o['cv_ap_mean']:.3f} ± {o['cv_ap_std']:.3f}, "
            f"test AP {o['test_ap']:.3f}.",
        ]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="full, ten (default: both)")
    parser.add_argument("--scale", type=float, default=10.0, help="the 'ten' part's multiple")
    args = parser.parse_args(argv)
    parts = args.parts or ["full", "ten"]
    results: dict[str, Any] = {"machine": _machine(), "when": time.strftime("%Y-%m-%d %H:%M")}
    saved = RESULTS / "dask_scale.json"
    if saved.exists():  # a part not run this time keeps its last figures, with their date
        earlier = json.loads(saved.read_text())
        for part in {"full", "ten"} - set(parts):
            if part in earlier:
                results[part] = earlier[part] | {"when": earlier.get("when")}
    with tempfile.TemporaryDirectory(prefix="dask-scale-", dir=REPO / ".bench") as scratch:
        if "full" in parts:
            results["full"] = bench_full(Path(scratch)) | {"when": results["when"]}
        if "ten" in parts:
            results["ten"] = bench_ten(Path(scratch), args.scale) | {"when": results["when"]}
    results["this_process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dask_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["<!-- made by benchmarks/dask_scale.py -->", ""]
    if "full" in results:
        lines += full_section(results["full"])
    if "ten" in results:
        lines += ten_section(results["ten"])
    (RESULTS / "dask_scale.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
