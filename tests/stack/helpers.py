"""Free ports and a folder for a stack of a test's own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.settings import GRPC_OFFSET, StackSettings

REPO = Path(__file__).resolve().parents[2]

# The settings of every port the stack binds (weed's gRPC ports follow at +10000).
PORT_SETTINGS = (
    "STACK_POSTGRES_PORT",
    "STACK_S3_PORT",
    "STACK_WEED_MASTER_PORT",
    "STACK_WEED_VOLUME_PORT",
    "STACK_WEED_FILER_PORT",
    "STACK_MLFLOW_PORT",
    "STACK_API_PORT",
    "STACK_LB_ADMIN_PORT",
)
# Replica i listens on STACK_API_REPLICA_PORT + i: a base with this many free ports after it.
REPLICA_PORTS = 4


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` free ports whose +10000 (weed's gRPC ports) are free too and collide
    with none of the others."""
    chosen: list[int] = []
    while len(chosen) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        grpc = port + GRPC_OFFSET
        taken = {p + d for p in chosen for d in (0, GRPC_OFFSET, -GRPC_OFFSET)}
        if grpc < 65_536 and port not in taken and grpc not in taken and _free(grpc):
            chosen.append(port)
    return chosen


def stack_env(folder: Path) -> dict[str, str]:
    """STACK_* variables for a stack in ``folder`` on free ports."""
    chosen = free_ports(len(PORT_SETTINGS))
    ports = dict(zip(PORT_SETTINGS, chosen, strict=True))
    # The replicas' ports must miss weed's gRPC ports too (+10000), as the settings check.
    taken = [port + offset for port in chosen for offset in (0, GRPC_OFFSET)]
    ports["STACK_API_REPLICA_PORT"] = _free_run(REPLICA_PORTS, avoid=taken)
    return {"STACK_DIR": str(folder)} | {name: str(port) for name, port in ports.items()}


# The settings' own bound: macOS hands out ports up to 65535, above what they accept.
_HIGHEST_BASE: int = StackSettings.model_json_schema()["properties"]["api_replica_port"]["maximum"]


def _free_run(count: int, avoid: list[int]) -> int:
    """A port ``base`` with base + 1 ... base + count free and not in ``avoid``."""
    while True:
        base = free_ports(1)[0]
        wanted = range(base + 1, base + count + 1)
        if base <= _HIGHEST_BASE and all(p not in avoid and _free(p) for p in wanted):
            return base


@contextmanager
def reachable_folder() -> Iterator[Path]:
    """An empty folder for a stack, removed afterwards. Not under pytest's tmp_path: as
    root, PostgreSQL runs as the postgres user, whom tmp_path's 0700 parents keep out."""
    folder = Path(tempfile.mkdtemp(prefix="stack-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_stack(
    env: dict[str, str], *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m stack <args>`` with ``env`` on top of ours, without our STACK_* ones."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
    return subprocess.run(
        [sys.executable, "-m", "stack", *args],
        cwd=REPO,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_alone(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """stack/tracking_users.py as a script (as compose's mlflow-users job runs it), in an
    interpreter that sees the standard library only (-I -S: no site-packages)."""
    from stack import tracking_users  # noqa: PLC0415

    return subprocess.run(
        [sys.executable, "-I", "-S", tracking_users.__file__],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"} | env,
    )
