"""The data and features stages on Dask, measured side by side with the local engine.

    python benchmarks/dask_scale.py                  # both parts (about 10 minutes on 2 cores)
    python benchmarks/dask_scale.py full             # only the side-by-side part
    python benchmarks/dask_scale.py ten --scale 2    # a smaller "ten times" run

Parts:
  full  the handbook's full size (5,000 customers, 10,000 terminals, 183 days): the real
        `data` and `features` stage processes of a scratch project, engine local and
        engine dask (a two-worker LocalCluster), one after the other; wall time, and
        peak memory of the stage process and of each worker.
  ten   ten times the handbook's payments (50,000 customers, 100,000 terminals with the
        radius cut so each customer reaches as many terminals as in the handbook, 183
        days: about 18 million payments), engine dask only, on two workers of 3 GB.
        Beside the peaks: the dataset's size in memory (one partition's pandas size
        times the partitions), which no process came near.

Peaks come from the stages' own last log line (fraud_detection.io.dask_cluster logs
each process's peak resident memory when it closes the cluster) and, for the local
engine, from a small wrapper process that waits for the stage (its RUSAGE_CHILDREN).

Results go to benchmarks/results/dask_scale.json and, as Markdown, dask_scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    import pyarrow.parquet as pq  # noqa: PLC0415

    files = sorted(folder.glob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    sample = pq.read_table(files[0]).to_pandas()
    per_row = sample.memory_usage(deep=True).sum() / len(sample)
    return per_row * rows / 2**20, rows


def bench_full(scratch: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for engine in ("local", "dask"):
        overrides = merged(FULL_SIZE, DASK) if engine == "dask" else FULL_SIZE
        project = make_project(scratch / f"full-{engine}", merged(repo_params(), overrides))
        runs[engine] = {stage: run_stage(project, stage) for stage in ("data", "features")}
    return runs


def bench_ten(scratch: Path, scale: float) -> dict[str, Any]:
    overrides = merged(ten_times(scale), DASK)
    project = make_project(scratch / "ten", merged(repo_params(), overrides))
    runs = {stage: run_stage(project, stage) for stage in ("data", "features")}
    memory_mb, rows = dataset_memory_mb(project.path("data/features/features.parquet"))
    return {
        "params": overrides,
        "rows": rows,
        "features_in_memory_mb": memory_mb,
        "stages": runs,
    }


# ---------------------------------------------------------------------------- report


def _peaks(run: dict[str, Any]) -> str:
    if "worker_peaks_mb" not in run:
        return f"{run['tree_peak_mb']:,.0f} (one process)"
    workers = " / ".join(f"{v:,.0f}" for v in run["worker_peaks_mb"])
    return f"stage {run['stage_process_peak_mb']:,.0f}; workers {workers}"


def full_section(r: dict[str, Any]) -> list[str]:
    local, dask = r["local"], r["dask"]
    lines = [
        "### The handbook's full size, local and Dask side by side",
        "",
        "| stage | local (s) | Dask (s) | Dask / local | local peak (MB) | Dask peaks (MB) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for stage in ("data", "features"):
        a, b = local[stage], dask[stage]
        lines.append(
            f"| `{stage}` | {a['wall_s']:.1f} | {b['wall_s']:.1f} | "
            f"{b['wall_s'] / a['wall_s']:.1f}x | {a['tree_peak_mb']:,.0f} | {_peaks(b)} |"
        )
    lines += ["", f"Rows: {dask['data']['summary']}.", ""]
    return lines


def ten_section(r: dict[str, Any]) -> list[str]:
    sim = r["params"]["data"]["simulator"]
    lines = [
        "### Ten times the handbook on two workers",
        "",
        f"{sim['n_customers']:,} customers, {sim['n_terminals']:,} terminals (radius "
        f"{sim['radius']}), {sim['n_days']} days: {r['rows']:,} payments; the features "
        f"table is {r['features_in_memory_mb']:,.0f} MB in pandas. Two workers of "
        f"{DASK['engine']['dask']['memory_limit_gb']} GB each.",
        "",
        "| stage | wall (s) | peak of the stage process (MB) | peak of each worker (MB) |",
        "|---|---:|---:|---|",
    ]
    for stage in ("data", "features"):
        run = r["stages"][stage]
        workers = " / ".join(f"{v:,.0f}" for v in run.get("worker_peaks_mb", []))
        lines.append(
            f"| `{stage}` | {run['wall_s']:.1f} | {run.get('stage_process_peak_mb', 0):,.0f} "
            f"| {workers} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="full, ten (default: both)")
    parser.add_argument("--scale", type=float, default=10.0, help="the 'ten' part's multiple")
    args = parser.parse_args(argv)
    parts = args.parts or ["full", "ten"]
    results: dict[str, Any] = {"machine": _machine(), "when": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory(prefix="dask-scale-", dir=REPO / ".bench") as scratch:
        if "full" in parts:
            results["full"] = bench_full(Path(scratch))
        if "ten" in parts:
            results["ten"] = bench_ten(Path(scratch), args.scale)
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
