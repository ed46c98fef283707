"""`python -m stack up|down|status|env`: the shared services, started and stopped by the project.

Exit codes: 0 done (status: every service up and healthy); 1 a service failed to start
(the message and its log's last lines say why); 2 invalid settings or arguments;
3 (status only) some service is down or unhealthy.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import TextIO

from stack.api import ApiReplica, replica_class, replica_classes
from stack.balancer import LoadBalancer
from stack.mlflow_server import MlflowServer
from stack.postgres import Postgres
from stack.processes import (
    StackError,
    StartError,
    State,
    is_ours,
    locked,
    log_tail,
    port_in_use,
    read_state,
    remove_state,
    rss_mb,
    spawn,
    stop,
    write_state,
)
from stack.s3 import SeaweedS3
from stack.service import NotReady, Service
from stack.settings import (
    SettingsError,
    StackSettings,
    api_url,
    client_env,
    load_secrets,
    load_settings,
)

# In start order: MLflow stores its runs in PostgreSQL and its artifacts in S3; the API
# replicas log to PostgreSQL and load the champion from MLflow; the balancer goes last.
TRACKING: tuple[type[Service], ...] = (Postgres, SeaweedS3, MlflowServer)
# `--only` names: each service's own, and `api` for every replica.
NAMES = ("postgres", "s3", "mlflow", "api", "lb")


def all_services(settings: StackSettings) -> list[type[Service]]:
    """Every service of the stack the settings describe, in start order."""
    api: list[type[Service]] = [*replica_classes(settings), LoadBalancer]
    return [*TRACKING, *(api if settings.api_replicas else [])]


EXIT_FAILED, EXIT_USAGE, EXIT_DOWN = 1, 2, 3
WAIT_SECONDS = 0.25


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        services = _selected(args.only, settings)
    except (SettingsError, ValueError) as error:
        print(f"stack: {error}", file=sys.stderr)
        return EXIT_USAGE
    commands: dict[str, Callable[[StackSettings, list[type[Service]]], int]] = {
        "up": up,
        "down": down,
        "status": status,
        "env": env,
    }
    try:
        return commands[args.command](settings, services)
    except StackError as error:  # outside a start: a message, no log to show
        print(f"stack: {error}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    names = ",".join(NAMES)
    # No default list: with STACK_API_REPLICAS=0 there is no api or lb to name.
    parser.add_argument(
        "--only",
        help=f"comma-separated services, of {names} or api-N for one replica (default: all)",
    )
    return parser


def _selected(only: str | None, settings: StackSettings) -> list[type[Service]]:
    services = all_services(settings)
    if only is None:
        return services
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    if "api" in wanted:
        wanted |= {cls.name for cls in services if issubclass(cls, ApiReplica)}
    known = {cls.name for cls in services} | ({"api"} if settings.api_replicas else set())
    unknown = wanted - known
    if unknown or not wanted:
        raise ValueError(f"--only {only!r}: the services are {', '.join(sorted(known))}")
    return [cls for cls in services if cls.name in wanted]


# ------------------------------------------------------------------------------ up


def up(settings: StackSettings, classes: list[type[Service]]) -> int:
    """Start each service that is not up already, in order; on a failure, stop what this
    call started and exit 1."""
    secrets = load_secrets(settings)
    started: list[Started] = []
    services = [cls(settings, secrets) for cls in classes]
    with locked(settings.run_dir):
        # What can be known before anything starts (a port taken, a program missing)
        # fails here, so a missing balancer does not first start four servers.
        for service in services:
            try:
                _can_start(service)
            except StackError as error:
                print(f"{service.name}: {error}", file=sys.stderr)
                return EXIT_FAILED
        for service in services:
            try:
                print(_up_one(service, started), flush=True)
            except (StackError, KeyboardInterrupt) as error:
                print(f"{service.name}: {str(error) or 'interrupted'}", file=sys.stderr)
                if isinstance(error, StartError):
                    _show_log(error.log)
                _stop_all(settings, [(s.cls, s.state) for s in reversed(started)], sys.stderr)
                for each in started:
                    each.process.poll()  # reaped by the stop: let Popen know
                return EXIT_FAILED
    if LoadBalancer in classes:
        print(
            f"the prediction API: {api_url(settings)} (docs: {api_url(settings)}/docs; "
            "its key: FRAUD_API_KEY in `python -m stack env`, sent as X-API-Key)"
        )
    return 0


@dataclass(frozen=True)
class Started:
    """A server this `up` started."""

    cls: type[Service]
    state: State
    process: Popen[bytes]


def _up_one(service: Service, started: list[Started]) -> str:
    run_dir = service.settings.run_dir
    state = read_state(run_dir, service.name)
    if state and is_ours(state):
        try:
            _wait(service.health, service.settings.start_timeout, None)
        except StackError as error:  # not ours to stop: this call did not start it
            raise StackError(f"runs (pid {state.pid}) but {error}") from None
        return f"{service.name}: already up (pid {state.pid}, port {state.port})"
    remove_state(run_dir, service.name)  # stale: its process is gone
    _can_start(service)  # again: a port may have been taken since
    begun = time.monotonic()
    service.prepare()  # its errors need no log (no server installed) or name it (initdb)
    try:
        process, state = spawn(
            service.name,
            service.command(),
            log=service.log,
            cwd=service.folder,
            env=service.env(),
            port=service.port,
        )
        # Written before the wait: an `up` killed during it leaves a process `down` stops.
        write_state(run_dir, state)
        started.append(Started(type(service), state, process))
        _wait(service.ready, service.settings.start_timeout, process)
        service.after_start()
        _wait(service.health, service.settings.start_timeout, process)
    except StackError as error:
        raise StartError(str(error), service.log) from error
    except OSError as error:  # the program itself could not be run
        raise StackError(f"could not run {service.command()[0]}: {error}") from error
    elapsed = time.monotonic() - begun
    return f"{service.name}: up in {elapsed:.1f} s (port {service.port}, {service.version()})"


def _can_start(service: Service) -> None:
    """A service not up yet needs its ports free and its program installed."""
    state = read_state(service.settings.run_dir, service.name)
    if state and is_ours(state):
        return
    for port, setting in service.ports():
        if port_in_use(port):
            raise StackError(
                f"port {port} is taken by another program: stop it, or set {setting} to a free port"
            )
    service.check_installed()


def _wait(check: Callable[[], None], timeout: float, process: Popen[bytes] | None) -> None:
    """Until ``check`` passes; a StackError it raises (wrong credentials) ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise StackError(f"exited with code {process.returncode} while starting")
        try:
            check()
        except NotReady as error:
            if time.monotonic() > deadline:
                raise StackError(f"not healthy after {timeout:.0f} s: {error}") from None
            time.sleep(WAIT_SECONDS)
        else:
            return


def _show_log(log: Path) -> None:
    print(
        f"---- last lines of {log}:\n{log_tail(log)}\n---- (the whole log: {log})", file=sys.stderr
    )


def _stop_all(
    settings: StackSettings, states: Iterable[tuple[type[Service], State]], out: TextIO
) -> None:
    for cls, state in states:
        timeout = settings.stop_timeout
        outcome = stop(state, cls.stop_signal, group=cls.signal_group, timeout=timeout)
        if not is_ours(state):  # else (it survived SIGKILL) the state file keeps track of it
            remove_state(settings.run_dir, cls.name)
            cls.after_stop(settings)
        print(f"{cls.name}: {outcome}", file=out, flush=True)


# ---------------------------------------------------------------------------- down


def down(settings: StackSettings, classes: list[type[Service]]) -> int:
    """Stop the processes the state files name (ours only), last started first."""
    if not settings.run_dir.is_dir():
        print(f"nothing runs: no stack in {settings.dir}")
        return 0
    with locked(settings.run_dir):
        states = [
            (cls, state)
            for cls in reversed(_with_extra_replicas(settings, classes))
            if (state := read_state(settings.run_dir, cls.name))
        ]
        if any(is_ours(state) for _, state in states):
            _stop_all(settings, states, sys.stdout)
            return 0
        for cls, _ in states:
            remove_state(settings.run_dir, cls.name)
    stale = " (its stale state files removed)" if states else ""
    print(f"nothing runs in {settings.dir}{stale}")
    return 0


def _with_extra_replicas(
    settings: StackSettings, classes: list[type[Service]]
) -> list[type[Service]]:
    """``classes`` plus the replicas a larger STACK_API_REPLICAS started, when the
    replicas are among them: `down` stops what runs, not only what the settings name."""
    if not any(issubclass(cls, ApiReplica) for cls in classes):
        return classes
    if not all(cls in classes for cls in replica_classes(settings)):
        return classes  # some replicas by name (--only api-2): those alone
    extra: list[type[Service]] = []
    for path in sorted(settings.run_dir.glob("api-*.json")):
        index = path.stem.removeprefix("api-")
        if index.isdigit() and int(index) > settings.api_replicas:
            extra.append(replica_class(int(index)))
    # Before the balancer in the list, so they are stopped after it.
    balancer = [cls for cls in classes if cls is LoadBalancer]
    return [cls for cls in classes if cls is not LoadBalancer] + extra + balancer


# -------------------------------------------------------------------------- status


def status(settings: StackSettings, classes: list[type[Service]]) -> int:
    """One line per service; exit 0 when all are up and healthy, 3 otherwise."""
    states = {cls.name: read_state(settings.run_dir, cls.name) for cls in classes}
    live = {name: state for name, state in states.items() if state and is_ours(state)}
    # Secrets only when something runs: a status of nothing creates no files.
    secrets = load_secrets(settings) if live else None
    healthy = True
    for cls in classes:
        state = live.get(cls.name)
        if state is None or secrets is None:
            stale = states[cls.name]
            gone = f" (pid {stale.pid} is gone or not ours)" if stale else ""
            print(f"{cls.name}: down{gone}")
            healthy = False
            continue
        service = cls(settings, secrets)
        health = _health(service)
        healthy = healthy and health == "healthy"
        print(
            f"{cls.name}: up (pid {state.pid}, port {state.port}, {_version(service)}"
            f"{_rss(state)}): {health}{_detail(service)}"
        )
    return 0 if healthy else EXIT_DOWN


def _detail(service: Service) -> str:
    """A replica's readiness; the balancer's URL and how many replicas it routes to."""
    if isinstance(service, ApiReplica):
        return f", {service.readiness()}"
    if isinstance(service, LoadBalancer):
        try:
            upstreams = service.upstreams()
        except NotReady:
            return ""
        up = sorted(name for name, state in upstreams.items() if state == "UP")
        return (
            f", {api_url(service.settings)} in front of {len(upstreams)} replicas "
            f"({len(up)} passing its /ready checks{': ' + ', '.join(up) if up else ''})"
        )
    return ""


def _health(service: Service) -> str:
    try:
        service.health()
    except (NotReady, StackError) as error:
        return f"unhealthy: {error}"
    return "healthy"


def _version(service: Service) -> str:
    try:
        return service.version()
    except (StackError, OSError) as error:
        return f"version unknown: {error}"


def _rss(state: State) -> str:
    rss = rss_mb(state.pid)
    return "" if rss is None else f", {rss:.0f} MB resident"


# ----------------------------------------------------------------------------- env


def env(settings: StackSettings, classes: list[type[Service]]) -> int:
    """Shell lines for a client: eval "$(python -m stack env)"."""
    del classes  # every client needs all of them
    for name, value in client_env(settings).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0
