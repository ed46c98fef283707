"""Two API replicas behind HAProxy, logging to the stack's PostgreSQL: one is SIGKILLed in
the middle of a load and restarted; every prediction answered 2xx is in the log, once.
The balancer's own rules (API keys on its checks, body size, rate per client) are tested
through it here too."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest

from benchmarks.load import Load, run_load
from fraud_detection.schema import FeatureSchema, with_example
from stack.postgres import Postgres
from stack.processes import read_state, start_time
from stack.settings import StackSettings, api_url, load_secrets
from tests.model_helpers import fitted_pipeline, save_folder
from tests.stack.helpers import run_stack, stack_env

pytestmark = pytest.mark.slow
CLIENTS = 8
SECONDS = 14.0
KILL_AT, RESTART_AT = 3.0, 5.0
# After the restart is done (about 5 s on an idle 2-core machine, 9 s on a busy one) the
# load goes on until the restarted replica has answered, for at most this long.
AFTER_RESTART = 15.0
# A restart slower than this fails the test: the replica did not come back.
RESTART_DEADLINE = 30.0


@pytest.fixture(scope="module")
def model_folder(
    tmp_path_factory: pytest.TempPathFactory,
    small_features: pd.DataFrame,
    simulator_schema: FeatureSchema,
) -> tuple[Path, dict[str, float]]:
    """A small forest saved as the evaluate stage saves one, and a row to score."""
    schema = with_example(simulator_schema, small_features)
    X, y = small_features[schema.names], small_features[schema.target]
    pipeline = fitted_pipeline(X, y, schema, "random_forest", n_estimators=20, max_depth=6)
    folder = save_folder(pipeline, tmp_path_factory.mktemp("replicas") / "model", schema, X.head(5))
    return folder, {str(name): float(value) for name, value in X.iloc[0].items()}


@pytest.fixture
def replicas(
    servers_available: None, stack_folder: Path, model_folder: tuple[Path, dict[str, float]]
) -> Iterator[tuple[dict[str, str], StackSettings]]:
    """PostgreSQL, two replicas serving the model folder and the balancer; stopped after."""
    env = stack_env(stack_folder) | {
        "STACK_API_REPLICAS": "2",
        "SERVING_MODEL_URI": str(model_folder[0]),
        # The loads below come from one address, faster than the default limit allows:
        # the rate limit has its own test, which restarts the balancer with one.
        "STACK_LB_RATE_LIMIT": "0",
    }
    up = run_stack(env, "up", "--only", "postgres,api,lb")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            settings = StackSettings()
        yield env, settings
    finally:
        down = run_stack(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr


def key(settings: StackSettings) -> dict[str, str]:
    """The clients' API key header (the replicas require one, as in compose.yaml)."""
    return {"X-API-Key": load_secrets(settings).api_key}


def served_by_both(
    url: str, row: dict[str, float], headers: dict[str, str], deadline: float = 20.0
) -> set[str]:
    """Wait until the balancer has sent requests to both replicas (health checks passed)."""
    seen: set[str] = set()
    end = time.monotonic() + deadline
    while len(seen) < 2 and time.monotonic() < end:
        response = httpx.post(f"{url}/predict", json=row, timeout=10, headers=headers)
        if response.status_code == 200:
            seen.add(response.headers["x-served-by"])
        else:
            time.sleep(0.2)
    return seen


def stack_command(env: dict[str, str], *args: str) -> Callable[[], None]:
    """``python -m stack <args>`` as a load event: run later, in the load's thread; it
    must succeed."""

    def run() -> None:
        done = run_stack(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr

    return run


def logged_ids(settings: StackSettings, prefix: str) -> list[str]:
    url = Postgres(settings, load_secrets(settings)).prediction_log_url()
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT request_id FROM predictions WHERE request_id LIKE %s", [f"{prefix}-%"]
        ).fetchall()
    return [row[0] for row in rows]


def test_a_replica_killed_mid_load_loses_no_answered_prediction(
    replicas: tuple[dict[str, str], StackSettings], model_folder: tuple[Path, dict[str, float]]
) -> None:
    env, settings = replicas
    row = model_folder[1]
    url = api_url(settings)
    both = served_by_both(url, row, key(settings))
    assert len(both) == 2, f"the balancer did not route to both replicas: {both}"
    victim = read_state(settings.run_dir, "api-1")
    assert victim is not None
    victim_address = f"127.0.0.1:{settings.replica_port(1)}"

    def kill() -> None:
        os.kill(victim.pid, signal.SIGKILL)

    load = run_load(
        f"{url}/predict",
        row,
        clients=CLIENTS,
        seconds=SECONDS,
        after_events=AFTER_RESTART,
        until=lambda load: any(
            a.served_by == victim_address and a.sent > load.events["restart done"]
            for a in load.answers[-200:]
        ),
        prefix="kill",
        headers=key(settings),
        events=[
            (KILL_AT, "kill", kill),
            (RESTART_AT, "restart", stack_command(env, "up", "--only", "api-1")),
        ],
    )
    assert start_time(victim.pid) is None, "the killed replica is still there"
    check_nothing_answered_was_lost(load, logged_ids(settings, "kill"), "kill test")
    check_traffic_was_routed_around(load, victim_address)


def check_nothing_answered_was_lost(load: Load, logged: list[str], label: str) -> None:
    ok = {answer.request_id for answer in load.ok()}
    failed = {answer.request_id for answer in load.failed()}
    counted = Counter(logged)
    assert not [rid for rid, n in counted.items() if n > 1], "a row was logged twice"
    assert not ok - set(counted), f"{len(ok - set(counted))} answered predictions not logged"
    # A request can be committed and then lose its answer with the replica (502): in the
    # log, never answered 2xx. That is the only way a logged row may lack a 2xx.
    extra = set(counted) - ok
    assert extra <= failed, "rows in the log that nobody sent"
    print(
        f"\n{label}: {len(load.answers)} requests in {load.seconds:.1f} s, "
        f"{len(ok)} answered 2xx, {len(failed)} not, {len(counted)} rows logged "
        f"({len(extra)} of them for requests that got no 2xx)"
    )


def check_traffic_was_routed_around(load: Load, victim: str) -> None:
    killed, back = load.events["kill"], load.events["restart done"]
    failures = load.failed()
    # Only the requests the dead replica held fail (one per client at most), at once:
    # HAProxy tries the other replica for every new connection it cannot make.
    assert len(failures) <= CLIENTS, [(a.status, round(a.sent - killed, 3)) for a in failures]
    assert all(killed - 0.5 <= a.sent <= killed + 1.0 for a in failures), [
        round(a.sent - killed, 3) for a in failures
    ]
    # 502 on a new connection; on a kept-alive one HAProxy closes it without an answer
    # (status 0 here: httpx's "server disconnected"), as it does for any request after
    # the first on a connection whose server fails, so that the client may retry.
    assert {a.status for a in failures} <= {0, 502}, {a.status for a in failures}
    restart = back - load.events["restart"]
    assert restart < RESTART_DEADLINE, f"the replica took {restart:.1f} s to come back"
    returned = [a.sent for a in load.ok() if a.served_by == victim and a.sent > back]
    assert returned, (
        f"the restarted replica got no traffic: events {load.events}, answers after it was "
        f"up by replica: {Counter(a.served_by for a in load.answers if a.sent > back)}"
    )
    last_failure = max((a.sent + a.seconds for a in failures), default=killed) - killed
    print(
        f"kill test: last failed answer {last_failure * 1000:.0f} ms after the kill; the "
        f"restarted replica answered again {returned[0] - back:.2f} s after it was up; "
        f"{json.dumps({k: round(v, 2) for k, v in load.events.items()})}"
    )


def test_postgresql_restarted_mid_load_delays_answers_and_loses_or_doubles_nothing(
    replicas: tuple[dict[str, str], StackSettings], model_folder: tuple[Path, dict[str, float]]
) -> None:
    """The log's store goes away for a moment: requests wait for it (up to
    SERVING_LOG_TIMEOUT_SECONDS, then 503 naming it), the replicas warn and recover by
    themselves, and every answered prediction is logged exactly once."""
    env, settings = replicas
    row = model_folder[1]
    url = api_url(settings)
    assert len(served_by_both(url, row, key(settings))) == 2

    load = run_load(
        f"{url}/predict",
        row,
        clients=CLIENTS,
        seconds=8.0,
        prefix="restart",
        headers=key(settings),
        events=[
            (2.0, "stop", stack_command(env, "down", "--only", "postgres")),
            (3.0, "start", stack_command(env, "up", "--only", "postgres")),
        ],
    )
    logged = logged_ids(settings, "restart")
    check_nothing_answered_was_lost(load, logged, "postgres restart")
    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {200, 503}, statuses
    refused = {a.request_id for a in load.answers if a.status == 503}
    assert not refused & set(logged), "a request answered 503 was logged"
    slowest = max(a.seconds for a in load.ok())
    assert slowest > 0.2, "no request waited for the store: was it stopped at all?"
    # The replicas said which store failed, and that it came back.
    for index in (1, 2):
        text = (settings.log_dir / f"api-{index}.log").read_text(encoding="utf-8")
        store = f"prediction log postgresql://mlflow:***@127.0.0.1:{settings.postgres_port}/"
        assert store in text, text[-2000:]
        assert "is back; writing again" in text, text[-2000:]
        assert load_secrets(settings).postgres_password not in text
    ready = httpx.get(f"{url}/ready", timeout=10, headers=key(settings)).json()
    assert ready["prediction_log"] == "ok", ready
    print(
        f"\npostgres restart: {len(load.answers)} requests, {dict(statuses)}; slowest answer "
        f"{slowest:.2f} s; events {json.dumps({k: round(v, 2) for k, v in load.events.items()})}"
    )


def test_a_replica_without_a_model_gets_no_traffic(
    replicas: tuple[dict[str, str], StackSettings], model_folder: tuple[Path, dict[str, float]]
) -> None:
    """The balancer's health check is /ready: a replica that is alive but has no model (its
    /health 200, its /ready 503) is left out, and the other one answers everything."""
    env, settings = replicas
    row = model_folder[1]
    url = api_url(settings)
    assert len(served_by_both(url, row, key(settings))) == 2
    assert run_stack(env, "down", "--only", "api-2").returncode == 0
    no_model = env | {"SERVING_MODEL_URI": str(model_folder[0].parent / "no-such-model")}
    restarted = run_stack(no_model, "up", "--only", "api-2")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    second = f"http://127.0.0.1:{settings.replica_port(2)}"
    assert httpx.get(f"{second}/health", timeout=5).status_code == 200
    assert httpx.get(f"{second}/ready", timeout=5, headers=key(settings)).status_code == 503
    time.sleep(2.5)  # two of the balancer's health checks (every 1 s)
    answers = [
        httpx.post(f"{url}/predict", json=row, timeout=10, headers=key(settings)) for _ in range(40)
    ]
    assert {a.status_code for a in answers} == {200}
    assert {a.headers["x-served-by"] for a in answers} == {f"127.0.0.1:{settings.replica_port(1)}"}
    status = run_stack(env, "status", "--only", "api")
    api_2 = next(line for line in status.stdout.splitlines() if line.startswith("api-2: "))
    assert api_2.startswith("api-2: up"), status.stdout
    assert "not ready (GET" in api_2, status.stdout


def test_the_balancer_asks_for_the_key_and_stops_oversize_bodies(
    replicas: tuple[dict[str, str], StackSettings], model_folder: tuple[Path, dict[str, float]]
) -> None:
    """Through HAProxy: no key is a 401 from a replica (the balancer's own checks carry
    its key, so both are in rotation); a body over STACK_LB_MAX_BODY_MB is a 413 from the
    balancer that no replica saw; the largest batch a replica takes still passes."""
    _, settings = replicas
    row = model_folder[1]
    url = api_url(settings)
    assert len(served_by_both(url, row, key(settings))) == 2
    refused = httpx.post(f"{url}/predict", json=row, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'APIKey header="X-API-Key"'
    probe_key = {"X-API-Key": load_secrets(settings).api_probe_key}
    assert httpx.post(f"{url}/predict", json=row, timeout=10, headers=probe_key).is_success

    seen_before = replica_requests(settings)
    limit = settings.lb_max_body_mb * 1024 * 1024
    oversize = b'{"transactions": [' + b" " * limit + b"]}"
    too_large = httpx.post(
        f"{url}/predict/batch", content=oversize, timeout=60,
        headers=key(settings) | {"content-type": "application/json"},
    )  # fmt: skip
    assert too_large.status_code == 413, too_large.text[:300]
    assert too_large.json()["detail"].startswith("the request body is larger than the load")
    assert f"({limit} bytes)" in too_large.json()["detail"]
    assert replica_requests(settings) == seen_before, "a replica saw the oversize body"
    # Exactly the limit passes on (the replica then refuses it: it is not JSON).
    at_limit = b'{"transactions": [' + b" " * (limit - 20) + b"]}"
    assert len(at_limit) == limit
    passed = httpx.post(
        f"{url}/predict/batch", content=at_limit, timeout=60,
        headers=key(settings) | {"content-type": "application/json"},
    )  # fmt: skip
    assert passed.status_code == 422, passed.text[:300]
    # A body without a length (chunked) is refused before a replica: its size is unknown.
    chunked = httpx.post(
        f"{url}/predict", content=iter([json.dumps(row).encode()]), timeout=10,
        headers=key(settings) | {"content-type": "application/json"},
    )  # fmt: skip
    assert chunked.status_code == 411, chunked.text[:300]
    assert "Content-Length" in chunked.json()["detail"]
    # Requests without a body (GET) need no length.
    assert httpx.get(f"{url}/model", timeout=10, headers=key(settings)).status_code == 200
    seen_before = replica_requests(settings)

    # SERVING_MAX_BATCH_ROWS' default, 10,000 rows as objects: under the limit, answered.
    batch = {"transactions": [row] * 10_000}
    assert len(json.dumps(batch)) < limit
    answered = httpx.post(f"{url}/predict/batch", json=batch, timeout=120, headers=key(settings))
    assert answered.status_code == 200, answered.text[:300]
    assert len(answered.json()["predictions"]) == 10_000


# The rate limit of test_the_balancer_limits_each_clients_request_rate (a second).
RATE = 20


def test_the_balancer_limits_each_clients_request_rate(
    replicas: tuple[dict[str, str], StackSettings], model_folder: tuple[Path, dict[str, float]]
) -> None:
    """STACK_LB_RATE_LIMIT: one client address sending much faster than the limit gets
    the limit through and 429 (JSON, Retry-After) for the rest, which no replica sees;
    another address is not slowed by it; after Retry-After the first is let in again."""
    env, settings = replicas
    row = model_folder[1]
    url = api_url(settings)
    assert run_stack(env, "down", "--only", "lb").returncode == 0
    up = run_stack(env | {"STACK_LB_RATE_LIMIT": str(RATE)}, "up", "--only", "lb")
    assert up.returncode == 0, up.stdout + up.stderr
    assert len(served_by_both(url, row, key(settings))) == 2
    time.sleep(2.1)  # the rate is over the last second: let the checks above age out
    before = sum(replica_requests(settings, "/predict"))
    with httpx.Client(headers=key(settings), timeout=10) as client:
        begun = time.monotonic()
        answers = [client.post(f"{url}/predict", json=row) for _ in range(3 * RATE)]
        spent = time.monotonic() - begun
        other = httpx.Client(
            headers=key(settings),
            timeout=10,
            transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        )
        with other:
            elsewhere = [other.post(f"{url}/predict", json=row).status_code for _ in range(5)]
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) == {200, 429}, statuses
        if spent < 1.0:  # all within one second: exactly the limit got through
            assert statuses[200] == RATE, (statuses, spent)
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["detail"].startswith("too many requests from this address")
        assert f"at most {RATE} a second" in refused.json()["detail"]
        assert "x-served-by" not in refused.headers
        # Another client address has a limit of its own.
        assert elsewhere == [200] * 5
        passed = statuses[200] + len(elsewhere)
        assert sum(replica_requests(settings, "/predict")) - before == passed, (
            "a 429 reached a replica"
        )
        # The balancer counts what it refused, in its Prometheus metrics.
        metrics = httpx.get(f"http://127.0.0.1:{settings.lb_admin_port}/metrics", timeout=10)
        denied = re.search(r'^haproxy_frontend_requests_denied_total\{proxy="api"\} (\d+)$',
                           metrics.text, re.MULTILINE)  # fmt: skip
        assert denied, metrics.text[:500]
        assert int(denied[1]) == statuses[429]
        time.sleep(float(refused.headers["retry-after"]) + 1.0)
        assert client.post(f"{url}/predict", json=row).status_code == 200
    print(f"\nrate limit {RATE}/s: {dict(statuses)} of {len(answers)} in {spent:.2f} s")


def replica_requests(settings: StackSettings, path: str = "/predict/batch") -> list[float]:
    """Requests each replica counted on ``path`` (its own /metrics, asked directly)."""
    counts = []
    for index in (1, 2):
        metrics = httpx.get(
            f"http://127.0.0.1:{settings.replica_port(index)}/metrics",
            timeout=10,
            headers=key(settings),
        ).text
        counts.append(sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("http_requests_total{") and f'"{path}"' in line
        ))  # fmt: skip
    return counts
