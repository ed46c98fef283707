"""Measure the drift monitor: its run time on 100,000 logged rows, and how its gate decides.

    python benchmarks/monitoring.py              # everything (about 12 minutes on 2 cores)
    python benchmarks/monitoring.py --seeds 3    # fewer seeded replays per scenario
    python benchmarks/monitoring.py --skip-gate  # the timing only

Everything runs as in production: the service (`python -m serving`, the pipeline's model
in models/model) scores replayed traffic and writes its prediction log; the monitor reads
only that log, the reference and the labels.

Timing: 100,000 rows replayed in batches, then `python -m monitoring` timed as a whole
process (interpreter start, Evidently's import, reading the log, the reports, the files),
with and without labels, in alternating rounds. Beside it, the floor no monitor can go
below: a process that imports Evidently and reads the same window of the log, and
nothing else.

Gate: ten seeded replays with no drift scenario, and ten with each scenario; replay n
draws its rows with seed n from the n-th week after the test week (so the ten cover ten
weeks), gets its own window of the log and one monitor run. The gate should pass at
least 9 of the no-drift runs and fail every drift run, naming the features the scenario
changes.

Results go to benchmarks/results/monitoring.json and, as Markdown, monitoring.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fraud_detection.io.files import load_params  # noqa: E402
from fraud_detection.params import DriftScenarios, Params  # noqa: E402
from monitoring.baseline import free_port, start_service, stop_service, wait_ready  # noqa: E402
from monitoring.inputs import Window  # noqa: E402
from monitoring.monitor import run_monitor  # noqa: E402
from monitoring.replay import replay  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
KEEP = REPO / ".bench" / "monitoring"
MODEL = REPO / "models" / "model"
REFERENCE = REPO / "data" / "reference" / "reference.parquet"
SCENARIOS = ("amount_shift", "new_fraud_pattern", "broken_feature", "customer_mix")
# What each scenario changes, so the report must name at least one of these.
EXPECTED = {
    "amount_shift": {"TX_AMOUNT"},
    "new_fraud_pattern": {"TX_DURING_NIGHT", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"},
    "broken_feature": {"CUSTOMER_ID_NB_TX_7DAY_WINDOW"},
    "customer_mix": {"CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"},
}
FLOOR = """
import sys, time
from pathlib import Path
import evidently  # noqa: F401
from fraud_detection.reference import ReferenceInfo
from monitoring.prediction_log import read_predictions
info = ReferenceInfo.model_validate_json(Path(sys.argv[2]).read_text())
frame = read_predictions(Path(sys.argv[1]), info.feature_schema).frame
print(len(frame))
"""


@contextlib.contextmanager
def service(log: Path) -> Iterator[str]:
    port = free_port()
    output = log.with_suffix(".out")
    process = start_service(MODEL, log, port, output)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, output)
        yield url
    finally:
        stop_service(process)


def send(params: Params, url: str, labels: Path, **update: Any) -> None:
    replay_params = params.replay.model_copy(
        update={"url": url, "batch_size": 500, "concurrency": 2} | update
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = replay(params, replay_params, labels_path=labels, show_progress=False)
    if code != 0:
        raise RuntimeError("a replayed request failed")


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    return time.perf_counter() - started, result


def timing(params: Params, scratch: Path, rounds: int) -> dict[str, Any]:
    log, labels = scratch / "timing.db", scratch / "timing-labels.parquet"
    with service(log) as url:
        send(params, url, labels, rows=100_000, days=14, batch_size=1000)
    python = sys.executable
    common = [python, "-m", "monitoring", "--log", str(log), "--labels", str(labels)]
    runs: dict[str, list[float]] = {"with labels": [], "drift only": [], "floor": []}
    for _ in range(rounds):
        for name, command in (
            ("with labels", [*common, "--labels-as-of", "all", "--out", str(scratch / "a")]),
            ("drift only", [*common, "--out", str(scratch / "b")]),
            ("floor", [python, "-c", FLOOR, str(log), str(REFERENCE.with_suffix(".json"))]),
        ):
            seconds, result = timed(command)
            if result.returncode not in (0, 1):
                raise RuntimeError(f"{name} failed:\n{result.stderr}")
            runs[name].append(seconds)
    return {
        "rows": 100_000,
        "rounds": rounds,
        "seconds": {name: sorted(values) for name, values in runs.items()},
        "median": {name: statistics.median(values) for name, values in runs.items()},
    }


def gate(
    params: Params, scratch: Path, seeds: int, workspace: Path | None = None
) -> list[dict[str, Any]]:
    log, labels = scratch / "gate.db", scratch / "gate-labels.parquet"
    monitor = params.monitor.model_copy(update={"keep_reports": 1})
    runs = []
    with service(log) as url:
        for scenario in ("none", *SCENARIOS):
            for seed in range(1, seeds + 1):
                scenarios = DriftScenarios()
                if scenario != "none":
                    switched = getattr(scenarios, scenario).model_copy(update={"enabled": True})
                    scenarios = scenarios.model_copy(update={scenario: switched})
                start = datetime.now(UTC)
                # Seed n: rows drawn with seed n from the n-th week after the test week.
                week = 7 * (seed - 1)
                send(params, url, labels, seed=seed, scenarios=scenarios, days_after_test=week)
                # Answered means logged (SERVING_LOG_COMMIT=before_answer); the pause
                # only lets the window end fall after the last logged_at.
                time.sleep(0.3)
                end = datetime.now(UTC) + timedelta(milliseconds=1)
                started = time.perf_counter()
                result = run_monitor(
                    monitor,
                    window=Window(start, end),
                    log_path=log,
                    reference_path=REFERENCE,
                    out_dir=scratch / "gate-reports",
                    labels_path=labels,
                    labels_as_of=None,
                    workspace=workspace,
                )
                summary = result.summary
                quality = summary["labels"]["quality"] or {}
                if seed == 1:  # kept for benchmarks/screenshots.py
                    KEEP.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(
                        summary["reports"]["latest_html"], KEEP / f"{scenario}-drift.html"
                    )
                runs.append(
                    {
                        "scenario": scenario,
                        "seed": seed,
                        "week": seed,
                        "passed": result.exit_code == 0,
                        "rows": summary["rows"],
                        "drifted_features": summary["drifted_features"],
                        "score_drift": summary["score_drift"],
                        "max_feature_drift": max(summary["feature_drift"].values()),
                        "average_precision": quality.get("average_precision"),
                        "named_expected": bool(
                            EXPECTED.get(scenario, set()) & set(summary["drifted_features"])
                        ),
                        "monitor_seconds": time.perf_counter() - started,
                    }
                )
                print(
                    f"{scenario:>17} seed {seed:>2}: "
                    f"{'pass' if runs[-1]['passed'] else 'FAIL'} {summary['drifted_features']} "
                    f"score drift {summary['score_drift']:.3f}",
                    flush=True,
                )
    return runs


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Drift monitor benchmark ({results['when']}, {results['machine']})", ""]
    if "timing" in results:
        t = results["timing"]
        median = t["median"]
        lines += [
            f"`python -m monitoring` on {t['rows']:,} logged rows against the "
            f"{results['reference_rows']:,}-row reference; whole process, median of "
            f"{t['rounds']} alternating rounds (all runs: seconds, sorted).",
            "",
            "| run | median s | runs |",
            "|---|---:|---|",
        ]
        for name in ("with labels", "drift only", "floor"):
            shown = ", ".join(f"{s:.1f}" for s in t["seconds"][name])
            lines.append(f"| {name} | {median[name]:.1f} | {shown} |")
        lines += [
            "",
            "floor: a process that imports Evidently and reads the same log window, nothing else.",
            "",
        ]
    if "gate" in results:
        lines += [
            "| replay | gate passed | gate failed | expected feature named | "
            "drifted features (runs naming them) | score drift (median) | AP (median) |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for scenario in ("none", *SCENARIOS):
            runs = [run for run in results["gate"] if run["scenario"] == scenario]
            if runs:
                lines.append(_gate_row(scenario, runs))
    return "\n".join(lines) + "\n"


def _gate_row(scenario: str, runs: list[dict[str, Any]]) -> str:
    named: dict[str, int] = {}
    for run in runs:
        for feature in run["drifted_features"]:
            named[feature] = named.get(feature, 0) + 1
    top = ", ".join(
        f"{name} ({count})" for name, count in sorted(named.items(), key=lambda x: -x[1])[:4]
    )
    aps = [run["average_precision"] for run in runs if run["average_precision"] is not None]
    expected = sum(run["named_expected"] for run in runs) if scenario != "none" else "-"
    return (
        f"| {scenario} | {sum(run['passed'] for run in runs)} | "
        f"{sum(not run['passed'] for run in runs)} | {expected} | {top or '-'} | "
        f"{statistics.median(run['score_drift'] for run in runs):.3f} | "
        f"{f'{statistics.median(aps):.3f}' if aps else '-'} |"
    )


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--seeds", type=int, default=10)
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--skip-gate", action="store_true")
    cli.add_argument("--skip-timing", action="store_true")
    cli.add_argument("--results", type=Path, default=RESULTS, help="where the results go")
    cli.add_argument(
        "--workspace", type=Path, help="also add every run to this Evidently UI workspace"
    )
    args = cli.parse_args()
    params = load_params(REPO / "params.yaml")
    results: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "reference_rows": len(pd.read_parquet(REFERENCE)),
    }
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as folder:
        scratch = Path(folder)
        if not args.skip_timing:
            results["timing"] = timing(params, scratch, args.rounds)
            print(json.dumps(results["timing"]["median"]), flush=True)
        if not args.skip_gate:
            results["gate"] = gate(params, scratch, args.seeds, args.workspace)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "monitoring.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results / "monitoring.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
