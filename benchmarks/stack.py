"""The shared-services stack, measured: start times, the pipeline against the tracking
server beside SQLite, MLflow round trips per stage, and the teammate scenario.

    python benchmarks/stack.py                  # about 6 minutes on 2 cores (tiny params)
    python benchmarks/stack.py --params default --rounds 1   # params.yaml's (about 9 min)

1. Stack start: `python -m stack up` on an empty folder (cold: initdb, MLflow's database
   migrations), again (already up), `down`, then up again on the same data (warm).
2. The pipeline, stage by stage (`dvc repro --single-item`), in two copies of the project
   with the same params: one on the embedded SQLite store, one on the stack's server,
   alternated `--rounds` times. For the server, each stage's calls to MLflow are counted
   in the server's access log (tracking API and proxied artifact calls apart).
3. The teammate scenario: clone A trains and pushes; clone B is cloned, pulls, checks
   that nothing reruns and serves the champion from the shared registry: the time from
   `git clone` to a ready service, and the bytes pulled.

Results go to benchmarks/results/stack.json and, as Markdown, stack.md (with
`--params default`: stack_default.json and stack_default.md).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.pipeline import machine, row, save_results  # noqa: E402
from tests.pipelines.project import TINY_OVERRIDES, Project, merged, repo_params  # noqa: E402
from tests.stack.helpers import stack_env  # noqa: E402
from tests.stack.teammates import (  # noqa: E402
    client_env,
    first_clone,
    folder_bytes,
    second_clone,
    serving,
    stack,
)

STAGES = ("data", "features", "split", "train", "evaluate", "reference", "monitor_baseline")
UP_LINE = re.compile(r"^(?P<name>\w+): up in (?P<seconds>[\d.]+) s")
CALL = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/[^ ?"]*)')


def timed(command: list[str], settings: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    output = stack(command[0], settings)
    return time.perf_counter() - began, output


def start_times(settings: dict[str, str]) -> dict[str, Any]:
    """Cold up, up when up, down, warm up (the stack is left up)."""
    cold, cold_out = timed(["up"], settings)
    again, _ = timed(["up"], settings)
    down, _ = timed(["down"], settings)
    warm, warm_out = timed(["up"], settings)

    def parts(output: str) -> dict[str, float]:
        found = (UP_LINE.match(line) for line in output.splitlines())
        return {m["name"]: float(m["seconds"]) for m in found if m}

    return {
        "cold_s": cold,
        "cold_services_s": parts(cold_out),
        "already_up_s": again,
        "down_s": down,
        "warm_s": warm,
        "warm_services_s": parts(warm_out),
    }


def server_calls(log: Path, offset: int) -> tuple[dict[str, int], int]:
    """Calls in the server's access log after byte ``offset``: tracking API, artifacts."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    counts = {"tracking": 0, "artifacts": 0}
    for match in CALL.finditer(text):
        path = match["path"]
        if path.startswith("/api/2.0/mlflow-artifacts/"):
            counts["artifacts"] += 1
        elif path.startswith(("/api/", "/ajax-api/")):
            counts["tracking"] += 1
    return counts, log.stat().st_size


def stage_by_stage(project: Project, log: Path | None) -> dict[str, Any]:
    """Each stage's seconds (and, on the server, its MLflow calls), in pipeline order."""
    seconds: dict[str, float] = {}
    calls: dict[str, dict[str, int]] = {}
    offset = log.stat().st_size if log else 0
    for stage in STAGES:
        began = time.perf_counter()
        project.run("dvc", "repro", "--single-item", stage, timeout=1800)
        seconds[stage] = time.perf_counter() - began
        if log is not None:
            calls[stage], offset = server_calls(log, offset)
    return {"seconds": seconds, "total_s": sum(seconds.values()), "calls": calls}


def side_by_side(
    scratch: Path, env: dict[str, str], log: Path, params: dict[str, Any], rounds: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "server": []}
    for number in range(rounds):
        # Alternate which goes first: the machine is shared and noisy.
        order = ("sqlite", "server") if number % 2 == 0 else ("server", "sqlite")
        for store in order:
            root = scratch / f"{store}-{number}"
            project = first_clone(root, env if store == "server" else {})
            # A model name of its own: a rerun of the same model would be found in the
            # registry and not logged again, which would flatter the second round.
            project.write_params(
                merged(params, {"evaluate": {"registered_model_name": f"bench-{store}-{number}"}})
            )
            runs[store].append(stage_by_stage(project, log if store == "server" else None))
            shutil.rmtree(root, ignore_errors=True)
    return runs


def teammates(scratch: Path, env: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
    a = first_clone(scratch / "a", env)
    a.write_params(params)
    began = time.perf_counter()
    a.run("make", "train", timeout=3600)
    train_s = time.perf_counter() - began
    a.run("git", "add", "-A")
    a.run("git", "commit", "-q", "-m", "trained")
    began = time.perf_counter()
    a.run("make", "push", timeout=900)
    push_s = time.perf_counter() - began

    began = time.perf_counter()
    b = second_clone(a, scratch / "b", env)
    clone_s = time.perf_counter() - began
    b.run("make", "pull", timeout=900)
    pull_s = time.perf_counter() - began - clone_s
    pulled = folder_bytes(b.path(".dvc/cache"))
    repro = b.run("dvc", "repro", timeout=900)
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    repro_s = time.perf_counter() - began - clone_s - pull_s
    with serving(b):
        to_serving = time.perf_counter() - began
    return {
        "a_make_train_s": train_s,
        "a_make_push_s": push_s,
        "b_clone_s": clone_s,
        "b_pull_s": pull_s,
        "b_repro_noop_s": repro_s,
        "b_clone_to_serving_s": to_serving,
        "b_pulled_bytes": pulled,
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(results: dict[str, Any]) -> str:
    start, runs, team = results["start"], results["pipeline"], results["teammates"]
    lines = [
        "# The shared-services stack",
        "",
        f"{results['when']}, {results['machine']}, {results['params']} params; "
        f"{results['rounds']} round(s) of each store, alternated.",
        "",
        "## Start",
        "",
        row("", "seconds", "postgres", "s3", "mlflow"),
        row("---", "---:", "---:", "---:", "---:"),
    ]
    for label, total, parts in (
        ("cold `up` (empty folder)", start["cold_s"], start["cold_services_s"]),
        ("warm `up` (after `down`)", start["warm_s"], start["warm_services_s"]),
    ):
        cells = [f"{parts.get(name, float('nan')):.1f}" for name in ("postgres", "s3", "mlflow")]
        lines.append(row(label, f"{total:.1f}", *cells))
    lines += [
        row("`up` when already up", f"{start['already_up_s']:.1f}", "", "", ""),
        row("`down`", f"{start['down_s']:.1f}", "", "", ""),
        "",
        "## The pipeline on the server beside SQLite (median seconds per stage)",
        "",
        row("stage", "SQLite", "server", "ratio", "tracking calls", "artifact calls"),
        row("---", "---:", "---:", "---:", "---:", "---:"),
    ]
    for stage in [*STAGES, "total"]:

        def seconds(store: str, name: str = stage) -> float:
            key = "total_s"
            values = [r[key] if name == "total" else r["seconds"][name] for r in runs[store]]
            return median(values)

        calls = runs["server"][0]["calls"]
        tracking = sum(c["tracking"] for c in calls.values()) if stage == "total" else None
        artifacts = sum(c["artifacts"] for c in calls.values()) if stage == "total" else None
        if stage != "total":
            tracking, artifacts = calls[stage]["tracking"], calls[stage]["artifacts"]
        lite, server = seconds("sqlite"), seconds("server")
        lines.append(
            row(stage, f"{lite:.1f}", f"{server:.1f}", f"{server / lite:.2f}", tracking, artifacts)
        )
    lines += [
        "",
        "## The teammate scenario",
        "",
        row("step", "seconds"),
        row("---", "---:"),
        row("A: `make train` (on the server)", f"{team['a_make_train_s']:.1f}"),
        row("A: `make push` (to the object store)", f"{team['a_make_push_s']:.1f}"),
        row("B: `git clone`", f"{team['b_clone_s']:.1f}"),
        row(
            f"B: `make pull` ({team['b_pulled_bytes'] / 1e6:.1f} MB pulled)",
            f"{team['b_pull_s']:.1f}",
        ),
        row("B: `dvc repro` (nothing reruns)", f"{team['b_repro_noop_s']:.1f}"),
        row("B: from `git clone` to the champion served", f"{team['b_clone_to_serving_s']:.1f}"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--params", choices=("tiny", "default"), default="tiny")
    cli.add_argument("--rounds", type=int, default=2)
    args = cli.parse_args()
    params = repo_params() if args.params == "default" else merged(repo_params(), TINY_OVERRIDES)
    folder = Path(tempfile.mkdtemp(prefix="stack-bench-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as the postgres user
    settings = stack_env(folder / "stack")
    try:
        start = start_times(settings)
        env = client_env(settings) | {"DVC_REMOTE": "shared"}
        log = folder / "stack" / "logs" / "mlflow.log"
        with tempfile.TemporaryDirectory(prefix="runs-", dir=folder) as scratch:
            pipeline = side_by_side(Path(scratch), env, log, params, args.rounds)
        with tempfile.TemporaryDirectory(prefix="team-", dir=folder) as scratch:
            team = teammates(Path(scratch), env, params)
    finally:
        stack("down", settings)
        shutil.rmtree(folder, ignore_errors=True)
    results = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "params": args.params,
        "rounds": args.rounds,
        "start": start,
        "pipeline": pipeline,
        "teammates": team,
    }
    save_results("stack" if args.params == "tiny" else "stack_default", results, report(results))


if __name__ == "__main__":
    main()
