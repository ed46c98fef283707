"""Measure the prediction service side by side with `mlflow models serve` and the ceiling.

    python benchmarks/serving.py                 # everything (about 6 minutes on 2 cores)
    python benchmarks/serving.py --seconds 5     # shorter runs
    python benchmarks/serving.py --model build/model

Same champion model, same machine, one uvicorn worker each, load from wrk on loopback
(wrk must be installed: `apt-get install wrk`). Servers are measured one at a time, in
rounds that alternate between them, so a busy spell on this shared machine hits all of
them; the best round per server and load is reported, and ratios come from one round.

Servers:
  service   this project's service (`python -m serving`), compiled scorer
  mlflow    `mlflow models serve --env-manager local` on the same model folder
  ceiling   the issue's ceiling: a FastAPI endpoint with the same schema-built body and
            no model (benchmarks/ceiling_app.py)
  no-model  this service with its scorer replaced by a constant: what everything but the
            model costs (benchmarks/no_model_app.py)
  model-only  the ceiling plus the compiled scorer and nothing else: the best any
            service could do with this model (benchmarks/model_only_app.py)

Loads: single rows sequential (1 connection) and at 8 connections; batches of 1,000
rows sequential, as row objects (/predict/batch; MLflow's dataframe_records) and as a
table (/predict/split; MLflow's dataframe_split); ready time (process start to /ready
200); a 30 s soak at 100 connections, after which the prediction log must hold exactly
one row per prediction the service counted, and wrk must have seen no errors.

Results go to benchmarks/results/serving.json and, as Markdown, serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCRATCH = REPO / ".bench" / "serving"
BIN = Path(sys.executable).parent
SERVERS = ("service", "mlflow", "ceiling", "no-model", "model-only")

# wrk reports through this script: one JSON line at the end of a run.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "socket_errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    body_one: Path
    body_batch: Path | None
    batch_path: str = ""
    # The same 1,000 rows as a table (feature names once, an array per row): the
    # service's /predict/split, MLflow's dataframe_split.
    body_split: Path | None = None
    split_path: str = ""


def main() -> None:
    arguments = _arguments()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = _model_folder(arguments.model)
    bodies = _bodies(model)
    servers = _servers(model, bodies)
    results: dict[str, Any] = {
        "machine": _machine(),
        "model": _model_summary(model),
        "seconds_per_run": arguments.seconds,
        "rounds": {},
    }
    ready: dict[str, list[float]] = {}
    for round_index in range(arguments.rounds):
        for server in servers:
            print(f"round {round_index + 1}: {server.name}", flush=True)
            measured, ready_seconds = _measure(server, arguments.seconds)
            ready.setdefault(server.name, []).append(ready_seconds)
            results["rounds"].setdefault(server.name, []).append(measured)
    results["ready_seconds"] = ready
    print("soak: 100 connections", flush=True)
    results["soak"] = _soak(servers[0], arguments.soak_seconds)
    results["summary"] = _summary(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = _markdown(results)
    (RESULTS / "serving.md").write_text(markdown)
    print(markdown)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: export champion)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--soak-seconds", type=float, default=30.0)
    return parser.parse_args()


def _model_folder(given: Path | None) -> Path:
    if given is not None:
        return given.resolve()
    folder = SCRATCH / "model"
    subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.export_model", "--out", str(folder)],
        cwd=REPO,
        check=True,
    )
    return folder


def _bodies(model: Path) -> dict[str, Path]:
    schema = json.loads((model / "extra_files" / "feature_schema.json").read_text())
    example = schema["example"]
    files = {
        "one": {**example},
        "batch": {"transactions": [example] * 1000},
        "mlflow_one": {"dataframe_records": [example]},
        "mlflow_batch": {"dataframe_records": [example] * 1000},
        "split": {"columns": list(example), "data": [list(example.values())] * 1000},
        "mlflow_split": {
            "dataframe_split": {"columns": list(example), "data": [list(example.values())] * 1000}
        },
    }
    paths = {}
    for name, body in files.items():
        path = SCRATCH / f"{name}.json"
        path.write_text(json.dumps(body))
        paths[name] = path
    (SCRATCH / "post.lua").write_text(WRK_SCRIPT)
    return paths


def _servers(model: Path, bodies: dict[str, Path]) -> list[Server]:
    base = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    service_env = {
        **base,
        "SERVING_MODEL_URI": str(model),
        "SERVING_WORKERS": "1",
        "SERVING_LOG_LEVEL": "warning",
    }
    return [
        Server(
            "service",
            [str(BIN / "python"), "-m", "serving"],
            service_env,
            "/ready",
            "/predict",
            bodies["one"],
            bodies["batch"],
            "/predict/batch",
            bodies["split"],
            "/predict/split",
        ),
        Server(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                str(model),
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-w",
                "1",
            ],
            base,
            "/ping",
            "/invocations",
            bodies["mlflow_one"],
            bodies["mlflow_batch"],
            "/invocations",
            bodies["mlflow_split"],
            "/invocations",
        ),
        Server(
            "no-model",
            _uvicorn("benchmarks.no_model_app:create_app"),
            service_env,
            "/ready",
            "/predict",
            bodies["one"],
            bodies["batch"],
            "/predict/batch",
        ),
        Server(
            "model-only",
            _uvicorn("benchmarks.model_only_app:create_app"),
            {**base, "SERVING_MODEL_URI": str(model), "OMP_NUM_THREADS": "1"},
            "/health",
            "/predict",
            bodies["one"],
            None,
        ),
        Server(
            "ceiling",
            _uvicorn("benchmarks.ceiling_app:create_app"),
            {**base, "SERVING_MODEL_URI": str(model)},
            "/health",
            "/predict",
            bodies["one"],
            None,
        ),
    ]


def _uvicorn(factory: str) -> list[str]:
    """An app factory under uvicorn, configured like the service (one worker, no access
    log); the port is added when the server starts."""
    return [
        str(BIN / "uvicorn"), factory, "--factory", "--host", "127.0.0.1",
        "--no-access-log", "--log-level", "warning", "--workers", "1",
    ]  # fmt: skip


def _measure(server: Server, seconds: float) -> tuple[dict[str, Any], float]:
    with _running(server) as (port, ready_seconds):
        url = f"http://127.0.0.1:{port}{server.predict_path}"
        _wrk(url, server.body_one, connections=1, seconds=2)  # warm-up
        measured = {
            "single_sequential": _wrk(url, server.body_one, connections=1, seconds=seconds),
            "single_8_clients": _wrk(url, server.body_one, connections=8, seconds=seconds),
        }
        if server.body_batch is not None:
            batch_url = f"http://127.0.0.1:{port}{server.batch_path}"
            measured["batch_1000_sequential"] = _wrk(
                batch_url, server.body_batch, connections=1, seconds=seconds
            )
        if server.body_split is not None:
            split_url = f"http://127.0.0.1:{port}{server.split_path}"
            measured["batch_1000_split_sequential"] = _wrk(
                split_url, server.body_split, connections=1, seconds=seconds
            )
    return measured, ready_seconds


def _soak(server: Server, seconds: float) -> dict[str, Any]:
    log = SCRATCH / "soak-predictions.db"
    soaked = Server(
        **{**server.__dict__, "env": {**server.env, "SERVING_PREDICTION_LOG": str(log)}}
    )
    with _running(soaked) as (port, _):
        url = f"http://127.0.0.1:{port}{server.predict_path}"
        load = _wrk(url, server.body_one, connections=100, seconds=seconds, threads=2, strict=False)
        # Requests in flight when wrk stopped still finish (and log): let them.
        time.sleep(1.0)
        counted = _counted_predictions(port)
    rows = sqlite3.connect(log).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    return {
        **load,
        "predictions_counted_by_service": counted,
        "rows_in_prediction_log": rows,
        "log_matches": rows == counted,
        "errors": load["socket_errors"] + load["non_2xx"],
    }


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _counted_predictions(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("fraud_predictions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


@contextmanager
def _running(server: Server) -> Iterator[tuple[int, float]]:
    port = _free_port()
    env = {**server.env, "SERVING_PORT": str(port)}
    # A fresh log per run: a service starts with an empty file, and runs do not slow
    # each other down through a log that keeps growing.
    log = Path(env.setdefault("SERVING_PREDICTION_LOG", str(SCRATCH / f"{server.name}.db")))
    _remove_database(log)
    # The service reads SERVING_PORT; the others take --port.
    command = server.command if server.name == "service" else [*server.command, "--port", str(port)]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=output)
        try:
            ready_seconds = _wait_ready(port, server.ready_path, process, started)
            yield port, ready_seconds
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                output.seek(0)
                print(output.read().decode()[-3000:], file=sys.stderr)


def _wait_ready(port: int, path: str, process: subprocess.Popen[bytes], started: float) -> float:
    deadline = started + 180
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} not ready after 180 s")


def _wrk(
    url: str,
    body: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    strict: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run. ``strict``: any error or non-2xx answer fails the benchmark (a
    throughput of error responses is not a throughput). ``headers``: sent with each
    request, on top of the script's Content-Type."""
    header_options = [f"-H{name}: {value}" for name, value in (headers or {}).items()]
    completed = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRATCH / "post.lua"),
            *header_options,
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["requests_per_second"] = result["requests"] / result["seconds"]
    result["connections"] = connections
    if strict and (result["non_2xx"] or result["socket_errors"]):
        raise RuntimeError(
            f"{url}: {result['non_2xx']} non-2xx answers, "
            f"{result['socket_errors']} socket errors: {result}"
        )
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """Best round per server and load; ratios from the same round."""
    rounds = results["rounds"]
    best: dict[str, dict[str, Any]] = {}
    for server, measured_rounds in rounds.items():
        for load in measured_rounds[0]:
            runs = [measured[load] for measured in measured_rounds]
            best.setdefault(server, {})[load] = max(runs, key=lambda r: r["requests_per_second"])
    ratios = []
    for index in range(len(rounds["service"])):
        this_round = {name: rounds[name][index] for name in SERVERS}
        ratios.append({load: _ratios(this_round, load) for load in this_round["service"]})
    return {
        "best": best,
        "ratios_per_round": ratios,
        "ready_seconds_best": {
            name: min(values) for name, values in results["ready_seconds"].items()
        },
    }


def _ratios(measured: dict[str, dict[str, Any]], load: str) -> dict[str, float]:
    """The service against MLflow and the ceiling; the no-model and model-only servers
    against the ceiling (what everything but the model, and the model alone, leave)."""

    def rate(name: str) -> float:
        return float(measured[name][load]["requests_per_second"])

    ratios = {"vs_mlflow": rate("service") / rate("mlflow")}
    if load in measured["ceiling"]:
        ceiling = measured["ceiling"][load]
        ratios["vs_ceiling"] = rate("service") / ceiling["requests_per_second"]
        ratios["p99_vs_ceiling"] = measured["service"][load]["p99_us"] / ceiling["p99_us"]
        for name in ("no-model", "model-only"):
            if load in measured[name]:
                ratios[f"{name}_vs_ceiling"] = rate(name) / ceiling["requests_per_second"]
    return ratios


def _table(best: dict[str, dict[str, Any]], cell: Callable[[dict[str, Any]], str]) -> list[str]:
    """A Markdown table: a row per load, a column per server, ``cell`` of each best run."""
    lines = ["| load | " + " | ".join(SERVERS) + " |", "|---|" + "---:|" * len(SERVERS)]
    for load in best["service"]:
        row = [cell(best[name][load]) if load in best[name] else "-" for name in SERVERS]
        lines.append(f"| {load.replace('_', ' ')} | " + " | ".join(row) + " |")
    return lines


def _markdown(results: dict[str, Any]) -> str:
    summary = results["summary"]
    best = summary["best"]
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}. "
        f"Model: {results['model']['candidate']} ({results['model']['scoring']}). "
        f"One uvicorn worker per server; wrk on loopback; {results['seconds_per_run']:.0f} s "
        "per run; best of the rounds.",
        "",
        "Throughput, requests per second:",
        "",
        *_table(best, lambda run: f"{run['requests_per_second']:,.0f}"),
        "",
        "Latency, p50 / p99 in milliseconds (same runs):",
        "",
        *_table(best, lambda run: f"{run['p50_us'] / 1000:.2f} / {run['p99_us'] / 1000:.2f}"),
    ]
    lines += ["", "Ratios, round by round (service / other, same round):", ""]
    for index, ratios in enumerate(summary["ratios_per_round"], 1):
        parts = []
        for load, ratio in ratios.items():
            text = f"{load}: {ratio['vs_mlflow']:.1f}x mlflow"
            if "vs_ceiling" in ratio:
                text += (
                    f", {100 * ratio['vs_ceiling']:.0f}% of ceiling, "
                    f"p99 {ratio['p99_vs_ceiling']:.2f}x ceiling's (no-model "
                    f"{100 * ratio['no-model_vs_ceiling']:.0f}%, model-only "
                    f"{100 * ratio['model-only_vs_ceiling']:.0f}% of ceiling)"
                )
            parts.append(text)
        lines.append(f"- round {index}: " + "; ".join(parts))
    soak = results["soak"]
    ready = summary["ready_seconds_best"]
    lines += [
        "",
        "Ready after start (best): "
        + ", ".join(f"{name} {ready[name]:.2f} s" for name in SERVERS)
        + ".",
        "",
        f"Soak, 100 connections for {soak['seconds']:.0f} s: {soak['requests']:,} requests "
        f"({soak['requests_per_second']:,.0f} req/s), {soak['errors']} errors, p99 "
        f"{soak['p99_us'] / 1000:.1f} ms; the service counted "
        f"{soak['predictions_counted_by_service']:,} predictions and the log holds "
        f"{soak['rows_in_prediction_log']:,} rows "
        f"({'exactly one per prediction' if soak['log_matches'] else 'MISMATCH'}).",
        "",
    ]
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def _model_summary(model: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from fraud_detection.inference import compile_scorer  # noqa: PLC0415
    from fraud_detection.io.model_package import load_model_package  # noqa: PLC0415

    package = load_model_package(model)
    scorer = compile_scorer(package.pipeline, package.schema, package.example)
    return {
        "candidate": package.metadata.get("candidate"),
        "scoring": f"{scorer.method}: {scorer.detail}",
    }


if __name__ == "__main__":
    main()
