"""The stack for real: `python -m stack up` (cold, again, warm), MLflow runs and artifacts
through the server into the bucket, `down` leaving no process and no port behind; the
server's logins: nothing without credentials, each user what it was granted, the users
kept (and passwords changed in the settings applied) across a restart."""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from stack.cli import all_services
from stack.processes import (
    StackError,
    State,
    is_ours,
    port_in_use,
    read_state,
    session_pids,
    start_time,
    stop,
)
from stack.s3 import SeaweedS3
from stack.settings import (
    PIPELINE_USER,
    SERVING_USER,
    StackSettings,
    api_url,
    load_secrets,
    tracking_uri,
)
from tests.stack.helpers import run_stack, stack_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# The default stack: the tracking services, two API replicas, the balancer.
SERVICES = all_services(StackSettings.model_construct())
NAMES = [service.name for service in SERVICES]
MODEL = "stack-test-model"
UP_LINE = re.compile(r"^(?P<name>[\w-]+): up in (?P<seconds>\d+\.\d) s \(port (?P<port>\d+), .+\)$")


def states(folder: Path) -> dict[str, State]:
    found = {name: read_state(folder / "run", name) for name in NAMES}
    return {name: state for name, state in found.items() if state is not None}


@dataclass
class Stack:
    """A stack of the test's own: its STACK_* variables, and every process it started."""

    env: dict[str, str]
    folder: Path
    seen: list[State] = field(default_factory=list)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_stack(self.env, *args)

    def remember(self) -> dict[str, State]:
        """The current state files, also kept for the finalizer."""
        found = states(self.folder)
        self.seen += found.values()
        return found


@pytest.fixture
def stack(servers_available: None, stack_folder: Path) -> Iterator[Stack]:
    """Whatever the test started is stopped at the end, found through the state files
    (those there now and those seen on the way): ours only, pid and start time checked."""
    started = Stack(stack_env(stack_folder), stack_folder)
    yield started
    for state in [*started.seen, *states(stack_folder).values()]:
        service = next(s for s in SERVICES if s.name == state.name)
        stop(state, service.stop_signal, group=service.signal_group, timeout=30)


def up_seconds(output: str) -> dict[str, float]:
    """Each service's start time from `up`'s lines (every one of them must have one)."""
    found = {m["name"]: float(m["seconds"]) for m in map(UP_LINE.match, output.splitlines()) if m}
    assert sorted(found) == sorted(NAMES), output
    return found


def listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets ``pids`` listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1].split(":")[0])
    return found


def log_in(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str = "") -> None:
    """What MLflow's client sends the server from now on (None: no credentials)."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


# MLflow's error codes for the server's 401 and 403.
UNAUTHENTICATED, PERMISSION_DENIED = "UNAUTHENTICATED", "PERMISSION_DENIED"


def refused(call: Callable[[], object]) -> str:
    """MLflow's error code for the server's refusal of ``call`` (it must refuse)."""
    with pytest.raises(MlflowException) as raised:
        call()
    return str(raised.value.error_code)


def check_logins(settings: StackSettings, monkeypatch: pytest.MonkeyPatch, run_id: str) -> None:
    """Without credentials, or with a wrong password, nothing; the replicas' user reads
    and may not move the champion."""
    client = MlflowClient(tracking_uri=tracking_uri(settings))
    experiment = client.get_run(run_id).info.experiment_id
    log_in(monkeypatch, None)
    assert refused(lambda: client.search_runs([experiment])) == UNAUTHENTICATED
    assert refused(lambda: client.get_run(run_id)) == UNAUTHENTICATED
    assert refused(lambda: client.set_registered_model_alias(MODEL, "champion", "2")) == (
        UNAUTHENTICATED
    )
    log_in(monkeypatch, PIPELINE_USER, "not-the-pipeline-password")
    assert refused(lambda: client.get_run(run_id)) == UNAUTHENTICATED
    log_in(monkeypatch, SERVING_USER, load_secrets(settings).mlflow_serving_password)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert refused(lambda: client.set_registered_model_alias(MODEL, "challenger", "1")) == (
        PERMISSION_DENIED
    )


# The restart's: the admin's and the pipeline's passwords changed, the serving user's not.
NEW_PASSWORDS = {
    "STACK_MLFLOW_ADMIN_PASSWORD": "a-new-admin-password",
    "STACK_MLFLOW_PIPELINE_PASSWORD": "a-new-pipeline-password",
}


def warm_up_with_new_passwords(stack: Stack) -> dict[str, float]:
    """`up` on the stopped stack, the passwords changed; each service's start time."""
    stack.env |= NEW_PASSWORDS
    warm = stack.run("up")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    stack.remember()
    assert stack.run("status").returncode == 0  # its health check logs every user in
    return up_seconds(warm.stdout)


def check_after_the_restart(
    settings: StackSettings, monkeypatch: pytest.MonkeyPatch, experiment: str, run_id: str
) -> None:
    """The data survived: the run and its artifact, through the restarted servers. The
    users and their grants are kept; the new passwords are the server's."""
    client = MlflowClient(tracking_uri=tracking_uri(settings))
    log_in(monkeypatch, PIPELINE_USER, NEW_PASSWORDS["STACK_MLFLOW_PIPELINE_PASSWORD"])
    assert client.get_run(run_id).info.experiment_id == experiment
    assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]
    client.set_registered_model_alias(MODEL, "challenger", "1")
    log_in(monkeypatch, SERVING_USER, load_secrets(settings).mlflow_serving_password)
    assert client.get_model_version_by_alias(MODEL, "challenger").version == "1"
    log_in(monkeypatch, PIPELINE_USER, load_secrets(settings).mlflow_pipeline_password)
    assert refused(lambda: client.get_run(run_id)) == UNAUTHENTICATED  # the old password
    admin = httpx.get(
        f"{tracking_uri(settings)}/api/2.0/mlflow/users/current",
        auth=(settings.mlflow_admin_username, NEW_PASSWORDS["STACK_MLFLOW_ADMIN_PASSWORD"]),
        timeout=10,
    )
    assert admin.status_code == 200, admin.text


def use_mlflow(settings: StackSettings, folder: Path) -> tuple[str, str]:
    """An experiment and a run with a metric and an artifact, through the server; the
    artifact must be in the bucket and on no local disk. The run's folder is registered
    as a model whose champion is its version 1."""
    client = MlflowClient(tracking_uri=tracking_uri(settings))
    experiment = client.create_experiment(f"stack-test-{time.time_ns()}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "auc", 0.91)
    with tempfile.TemporaryDirectory() as scratch:
        note = Path(scratch) / "note.txt"
        note.write_text("from the stack test\n")
        client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"auc": 0.91}
    client.create_registered_model(MODEL)
    source = f"{run.info.artifact_uri}/note.txt"
    version = client.create_model_version(MODEL, source, run_id=run.info.run_id).version
    client.set_registered_model_alias(MODEL, "champion", version)

    bucket = SeaweedS3(settings, load_secrets(settings)).client()
    listed = bucket.list_objects_v2(Bucket=settings.mlflow_bucket, Prefix="artifacts/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert f"artifacts/{experiment}/{run.info.run_id}/artifacts/note.txt" in keys, keys
    bucket.head_bucket(Bucket=settings.dvc_bucket)  # created by `up` too
    assert not list(folder.rglob("mlartifacts")), "artifacts stored on the server's disk"
    assert not list(REPO.glob(f"mlartifacts/*/{run.info.run_id}"))
    return experiment, run.info.run_id


def test_up_use_down_and_a_warm_restart(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    settings = StackSettings()

    cold = stack.run("up")
    assert cold.returncode == 0, cold.stdout + cold.stderr
    cold_seconds = up_seconds(cold.stdout)
    first = stack.remember()
    assert sorted(first) == sorted(NAMES)

    begun = time.monotonic()
    again = stack.run("up")
    again_seconds = time.monotonic() - begun
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        *(f"{name}: already up (pid {first[name].pid}, port {first[name].port})" for name in NAMES),
        f"the prediction API: {api_url(settings)} (docs: {api_url(settings)}/docs; "
        "its key: FRAUD_API_KEY in `python -m stack env`, sent as X-API-Key)",
    ]
    assert again_seconds < 15

    status = stack.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [line.split(":")[0] for line in status.stdout.splitlines()] == NAMES
    assert all("): healthy" in line for line in status.stdout.splitlines())
    # No champion is registered in this stack: the replicas run, the balancer routes to
    # none of them and says why.
    assert "not ready" in status.stdout
    assert f"{api_url(settings)} in front of 2 replicas (0 passing its /ready checks)" in (
        status.stdout
    )
    # ... so the balancer sends them nothing (/ready is its health check) and says why.
    answer = httpx.post(f"{api_url(settings)}/predict", json={}, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("no replica is ready to answer (503)")
    assert "python -m stack status shows them" in answer.json()["detail"]
    assert all(
        httpx.get(f"http://127.0.0.1:{settings.replica_port(i)}/health", timeout=5).status_code
        == 200
        for i in (1, 2)
    )
    assert "PostgreSQL 1" in status.stdout

    pids = {pid for state in first.values() for pid in session_pids(state.pid)}
    assert listening_addresses(pids) == {"0100007F"}  # 127.0.0.1 only
    log_in(monkeypatch, PIPELINE_USER, load_secrets(settings).mlflow_pipeline_password)
    experiment, run_id = use_mlflow(settings, stack.folder)
    check_logins(settings, monkeypatch, run_id)
    wrong = replace(load_secrets(settings), s3_secret_key="not-the-key")
    with pytest.raises(StackError, match="rejected the credentials"):
        SeaweedS3(settings, wrong).health()

    begun = time.monotonic()
    stopped = stack.run("down")
    down_seconds = time.monotonic() - begun
    assert stopped.returncode == 0, stopped.stderr
    assert [line.split(":")[0] for line in stopped.stdout.splitlines()] == NAMES[::-1]
    assert all(start_time(pid) is None for pid in pids), "a process outlived `down`"
    assert not any(port_in_use(port) for port, _ in settings.ports())
    assert states(stack.folder) == {}
    assert "nothing runs" in stack.run("down").stdout
    assert stack.run("status").returncode == 3

    warm_seconds = warm_up_with_new_passwords(stack)
    check_after_the_restart(settings, monkeypatch, experiment, run_id)
    assert stack.run("down").returncode == 0
    assert not any(is_ours(state) for state in stack.seen)
    print(
        f"\ncold up {cold_seconds}, warm up {warm_seconds}, "
        f"up when up {again_seconds:.2f} s, down {down_seconds:.1f} s"
    )
