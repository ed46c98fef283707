"""``python -m serving``: check the settings, then run uvicorn with them.

``python -m serving create-log``: create the prediction log's tables (SERVING_PREDICTION_LOG)
and exit, so that replicas sharing one PostgreSQL log find them made (compose.yaml and the
Kubernetes manifests run it once, before the replicas)."""

from __future__ import annotations

import copy
import errno
import os
import socket
import sys
import tempfile
from typing import Any

from serving.metrics import MULTIPROCESS_ENV
from serving.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    args = argv or []
    if args not in ([], ["create-log"]):
        print("usage: python -m serving [create-log]", file=sys.stderr)
        return 2
    # One OpenMP thread per process, set before any library loads OpenMP: a request
    # scores a handful of rows, and waking a thread team for each (treelite, XGBoost)
    # cost more than the scoring itself (docs/serving.md). Workers are the parallelism.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"serving: {error}", file=sys.stderr)
        return 2
    if args == ["create-log"]:
        return _create_log(settings.prediction_log)
    if problem := _address_problem(settings.host, settings.port):
        print(f"serving: {problem}", file=sys.stderr)
        return 2
    if settings.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Each worker is a process: Prometheus needs a shared folder to add them up.
        os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="prometheus-")
    import uvicorn  # noqa: PLC0415  (after the settings check: a typo fails in milliseconds)

    uvicorn.run(
        "serving.app:create_app",
        # uvicorn configures logging in each worker process: the service's own logger
        # must be part of that configuration, or workers > 1 would drop its lines.
        log_config=_log_config(uvicorn.config.LOGGING_CONFIG, settings.log_level.upper()),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # One line per request costs a fifth of the throughput; /metrics counts requests.
        access_log=settings.access_log,
        timeout_graceful_shutdown=30,
    )
    return 0


def _address_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on ``host``:``port``, found before the model loads
    (seconds) and said with the setting to change; None when it can. The probe binds as
    uvicorn's Config.bind_socket does; uvicorn still reports a port taken in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn: a port left in TIME_WAIT by a service just stopped is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            return f"SERVING_HOST={host!r} is not a name or address this machine can resolve"
        except OSError as error:
            return _bind_problem(error.errno, host, port)
    return None


def _bind_problem(number: int | None, host: str, port: int) -> str:
    if number == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is in use by another program (another `make serve`?): "
            f"stop it, or set SERVING_PORT to a free port (make serve PORT={port + 1})"
        )
    if number == errno.EADDRNOTAVAIL:
        return (
            f"SERVING_HOST={host!r} is not an address of this machine: use 127.0.0.1 "
            "(this machine only) or 0.0.0.0 (every interface)"
        )
    if number == errno.EACCES:
        return f"SERVING_PORT={port}: this user may not listen on it; use a port from 1024 up"
    return f"cannot listen on {host}:{port} ({os.strerror(number or 0)})"


def _create_log(location: str) -> int:
    from fraud_detection.io.prediction_log import LogStoreError, open_store  # noqa: PLC0415

    store = open_store(location)
    try:
        store.create_schema()
    except LogStoreError as error:
        print(f"serving: {error}", file=sys.stderr)
        return 1
    print(f"prediction log {store.location}: tables ready")
    return 0


def _log_config(base: dict[str, Any], level: str) -> dict[str, Any]:
    config = copy.deepcopy(base)
    config["formatters"]["service"] = {"format": "%(asctime)s %(levelname)s %(name)s | %(message)s"}
    config["handlers"]["service"] = {
        "formatter": "service",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["serving"] = {"handlers": ["service"], "level": level, "propagate": False}
    return config


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
