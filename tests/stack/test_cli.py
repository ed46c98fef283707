"""`python -m stack`'s failure paths, which need no server: each fails fast, in one line
naming the fix, and starts or stops nothing that is not the stack's."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import balancer, postgres
from stack.cli import main
from stack.processes import State, read_state, start_time, write_state
from stack.settings import read_env_file
from tests.stack.helpers import free_ports, stack_env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A stack folder of the test's own on free ports, set in the environment."""
    settings = stack_env(tmp_path / "stack")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def listener(env: dict[str, str]) -> Iterator[socket.socket]:
    """Another program's server on a free port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_a_taken_port_is_named_with_its_setting(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = listener.getsockname()[1]
    monkeypatch.setenv("STACK_POSTGRES_PORT", str(port))
    assert main(["up"]) == 1
    assert errors(capsys) == [
        f"postgres: port {port} is taken by another program: stop it, or set "
        "STACK_POSTGRES_PORT to a free port"
    ]


@pytest.fixture
def no_haproxy_cache() -> Iterator[None]:
    """haproxy_version() is cached per process: a test that fakes HAProxy starts and ends
    with an empty cache."""
    balancer.haproxy_version.cache_clear()
    yield
    balancer.haproxy_version.cache_clear()


# A fake `haproxy -v` (None: no haproxy at all), what `up` runs, and what it must say.
BALANCERS = {
    "missing": (
        None,
        "api,lb",
        ["lb: no haproxy found (the stack's load balancer): apt-get install", "brew install"],
    ),
    "too old": (
        "HAProxy version 2.2.9 2021/01/07",
        "lb",
        ["lb: haproxy 2.2.9 is older than 2.4, the oldest that reads", "install a newer one"],
    ),
}


@pytest.mark.usefixtures("no_haproxy_cache")
@pytest.mark.parametrize("case", list(BALANCERS))
def test_a_missing_or_old_balancer_is_named_before_anything_starts(
    case: str,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    version, only, said = BALANCERS[case]
    path = tmp_path / "bin"
    path.mkdir()
    if version is not None:
        (path / "haproxy").write_text(f"#!/bin/sh\necho '{version}'\n")
        (path / "haproxy").chmod(0o755)
    monkeypatch.setattr(balancer, "SEARCH", ())
    monkeypatch.setenv("PATH", str(path))
    assert main(["up", "--only", only]) == 1
    (line,) = errors(capsys)
    assert line.startswith(said[0]), line
    assert said[1] in line, line
    # Refused before the replicas started (they come first in the order).
    assert not list((Path(env["STACK_DIR"]) / "run").glob("*.json"))


def test_a_taken_grpc_port_names_the_setting_it_follows(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # weed's gRPC ports are its HTTP ports + 10000: another program holds the S3 gateway's.
    (port,) = free_ports(1)
    monkeypatch.setenv("STACK_S3_PORT", str(port))
    with socket.socket() as server:
        server.bind(("127.0.0.1", port + 10_000))
        server.listen()
        assert main(["up", "--only", "s3"]) == 1
    assert errors(capsys) == [
        f"s3: port {port + 10_000} is taken by another program: stop it, or set "
        "STACK_S3_PORT + 10000 (its gRPC port) to a free port"
    ]


def test_no_postgresql_server_names_the_packages(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(postgres, "SEARCH_GLOBS", (f"{empty}/*/bin",))
    monkeypatch.setenv("PATH", str(empty))  # no pg_config, no initdb
    assert main(["up"]) == 1
    (line,) = errors(capsys)
    assert "apt-get install postgresql (Debian/Ubuntu)" in line
    assert "brew install postgresql@16 (macOS)" in line
    assert not (Path(env["STACK_DIR"]) / "postgres" / "data").exists()


def test_an_explicit_folder_without_a_server_is_named(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STACK_POSTGRES_BIN_DIR", str(tmp_path))
    assert main(["up", "--only", "postgres"]) == 1
    (line,) = errors(capsys)
    assert line.startswith(f"postgres: STACK_POSTGRES_BIN_DIR={tmp_path}: no PostgreSQL server")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not the stack's."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_down_leaves_a_process_alone_whose_start_time_differs(
    env: dict[str, str],
    bystander: subprocess.Popen[bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = Path(env["STACK_DIR"]) / "run"
    # Its pid, as a reused pid would be, with another start time than ours.
    stale = State("postgres", bystander.pid, "1", 5432, ["postgres"], "postgres.log")
    write_state(run_dir, stale)
    code = main(["down"])
    said = capsys.readouterr()
    assert (code, "nothing runs" in said.out) == (0, True), said  # what down said, if not
    assert bystander.poll() is None  # still running
    assert read_state(run_dir, "postgres") is None


# Writes the signal it was stopped with: `down` reaps a child of its own process (this
# test's), so the exit status Popen sees can be 0 rather than -15 depending on timing.
_TELLS_ITS_SIGNAL = (
    "import signal, sys, time\n"
    "def told(number, frame):\n"
    "    open(sys.argv[1], 'w').write(signal.Signals(number).name)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, told)\n"
    "signal.signal(signal.SIGINT, told)\n"
    "open(sys.argv[1] + '.ready', 'w').close()\n"
    "time.sleep(60)\n"
)


def test_down_stops_a_process_the_state_file_names_exactly(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    told = tmp_path / "signal"
    process = subprocess.Popen(
        [sys.executable, "-c", _TELLS_ITS_SIGNAL, str(told)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{told}.ready").exists():
            assert time.monotonic() < deadline, "the stand-in process did not start"
            time.sleep(0.05)
        run_dir = Path(env["STACK_DIR"]) / "run"
        ours = State("mlflow", process.pid, start_time(process.pid) or "", 1, ["py"], "x.log")
        write_state(run_dir, ours)
        assert main(["down"]) == 0
        assert capsys.readouterr().out.startswith(f"mlflow: stopped (pid {process.pid}) in ")
        assert told.read_text() == "SIGTERM"
        assert read_state(run_dir, "mlflow") is None
    finally:
        process.kill()
        process.wait()


def test_down_and_status_with_nothing_there(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["down"]) == 0
    assert "nothing runs" in capsys.readouterr().out
    assert main(["status"]) == 3
    assert capsys.readouterr().out.splitlines() == [
        f"{name}: down" for name in ("postgres", "s3", "mlflow", "api-1", "api-2", "lb")
    ]
    assert not Path(env["STACK_DIR"]).exists()  # neither created anything


def test_env_prints_what_a_client_needs(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["env"]) == 0
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in capsys.readouterr().out.splitlines()
    )
    s3 = f"http://127.0.0.1:{env['STACK_S3_PORT']}"
    assert exports["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{env['STACK_MLFLOW_PORT']}"
    assert exports["AWS_ENDPOINT_URL"] == exports["MLFLOW_S3_ENDPOINT_URL"] == s3
    stored = read_env_file(Path(env["STACK_DIR"]) / "secrets.env")  # generated once
    assert exports["AWS_ACCESS_KEY_ID"] == stored["STACK_S3_ACCESS_KEY"]
    assert exports["AWS_SECRET_ACCESS_KEY"] == stored["STACK_S3_SECRET_KEY"]


def test_bad_settings_and_arguments_exit_2(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STACK_MLFLOW_PROT", "1")
    assert main(["status"]) == 2
    assert "STACK_MLFLOW_PROT is not a setting (did you mean STACK_MLFLOW_PORT?)" in (
        capsys.readouterr().err
    )
    monkeypatch.delenv("STACK_MLFLOW_PROT")
    assert main(["up", "--only", "redis"]) == 2
    assert "the services are api, api-1, api-2, lb, mlflow, postgres, s3" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("STACK_API_REPLICAS", "0")  # no API: its names are not services
    assert main(["up", "--only", "api"]) == 2
    assert "the services are mlflow, postgres, s3" in capsys.readouterr().err


def test_python_dash_m_stack_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack", "--help"], capture_output=True, text=True, check=True
    )
    assert "up" in result.stdout
    assert "down" in result.stdout


FAKE_INITDB = """#!/bin/sh
for arg in "$@"; do
  case "$arg" in --pgdata=*) echo 15 > "${arg#--pgdata=}/PG_VERSION" ;; esac
done
"""
FAKE_POSTGRES = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "postgres (PostgreSQL) 15.0"; exit 0; fi
echo "fake postgres: {then}"
{then}
"""


@pytest.mark.parametrize(
    ("then", "reason"),
    [("exec sleep 60", "not healthy after 1 s"), ("exit 3", "exited with code 3 while starting")],
)
def test_a_failed_start_shows_the_log_and_stops_what_it_started(
    stack_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    then: str,
    reason: str,
) -> None:
    # A server that never answers (or exits), in a folder its user can reach when root.
    fake = stack_folder / "bin"
    fake.mkdir()
    for tool, text in (("initdb", FAKE_INITDB), ("postgres", FAKE_POSTGRES)):
        (fake / tool).write_text(text.replace("{then}", then))
        (fake / tool).chmod(0o755)
    for name, value in stack_env(stack_folder / "stack").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STACK_POSTGRES_BIN_DIR", str(fake))
    monkeypatch.setenv("STACK_START_TIMEOUT", "1")
    # No API: the balancer (HAProxy, which a machine may lack) is checked before any start.
    monkeypatch.setenv("STACK_API_REPLICAS", "0")
    assert main(["up"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing came up
    log = stack_folder / "stack/logs/postgres.log"
    assert f"postgres: {reason}" in captured.err
    assert f"fake postgres: {then}" in captured.err  # the log's last lines
    assert f"(the whole log: {log})" in captured.err
    assert read_state(stack_folder / "stack/run", "postgres") is None
    stopped = re.search(r"postgres: (stopped|not running) \(pid (\d+)", captured.err)
    assert stopped, captured.err
    assert start_time(int(stopped[2])) is None


def test_down_takes_the_replicas_it_is_given_and_those_beyond_the_count(tmp_path: Path) -> None:
    """`down --only api-2` stops api-2 alone; `down` (or --only api) also stops a replica
    that a larger STACK_API_REPLICAS started, before the balancer."""
    from stack.api import replica_class  # noqa: PLC0415
    from stack.balancer import LoadBalancer  # noqa: PLC0415
    from stack.cli import _with_extra_replicas, all_services  # noqa: PLC0415
    from stack.settings import StackSettings  # noqa: PLC0415

    settings = StackSettings(dir=tmp_path, api_replicas=2)
    settings.run_dir.mkdir(parents=True)
    for index in (1, 2, 3):
        (settings.run_dir / f"api-{index}.json").write_text("{}")
    assert _with_extra_replicas(settings, [replica_class(2)]) == [replica_class(2)]
    every = _with_extra_replicas(settings, all_services(settings))
    names = [cls.name for cls in every]
    assert names[-3:] == ["api-2", "api-3", "lb"], names
    assert every[-1] is LoadBalancer


def test_without_replicas_the_default_is_the_tracking_services(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # STACK_API_REPLICAS=0: no api, no lb; commands without --only must still work.
    monkeypatch.setenv("STACK_API_REPLICAS", "0")
    assert main(["env"]) == 0
    printed = capsys.readouterr().out
    assert "MLFLOW_TRACKING_URI=" in printed
    assert main(["status"]) == 3  # nothing runs: down, and it says so
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["postgres", "s3", "mlflow"]
    assert main(["status", "--only", "lb"]) == 2  # not a service of this stack
