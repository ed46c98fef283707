"""Detached server processes the stack starts, finds again and stops: never one it did not start.

Each started process gets a state file, ``<stack dir>/run/<name>.json``, with its pid and
its start time as the kernel records it: a pid the system has since given to another
program has another start time, so it is never taken for ours (nor signalled).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_SECONDS = 0.1
# A Unix socket's path holds at most 107 bytes (sun_path) on Linux, 103 on macOS.
SOCKET_PATH_MAX = 103


class StackError(RuntimeError):
    """A problem the user can fix; the message says what and how."""


class StartError(StackError):
    """A server did not come up: its log tells more."""

    def __init__(self, message: str, log: Path) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class State:
    """What a state file records of one started process."""

    name: str
    pid: int
    start_time: str
    port: int
    command: list[str]
    log: str


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def read_state(run_dir: Path, name: str) -> State | None:
    try:
        return State(**json.loads(state_path(run_dir, name).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None  # none, or unreadable: nothing of ours we could stop safely


def write_state(run_dir: Path, state: State) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(run_dir, state.name)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    partial.replace(path)  # atomic: a reader never sees half a file


def remove_state(run_dir: Path, name: str) -> None:
    state_path(run_dir, name).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time on a stack folder (a second one waits)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ----------------------------------------------------------------------- processes


def start_time(pid: int) -> str | None:
    """When the process started (kernel clock ticks since boot); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return _ps_start_time(pid)  # no /proc (macOS)
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    fields = stat.rpartition(")")[2].split()
    state, ticks = fields[0], fields[19]
    return None if state in {"Z", "X"} else ticks  # a zombie has exited already


def _ps_start_time(pid: int) -> str | None:
    result = subprocess.run(
        ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def is_ours(state: State) -> bool:
    """The state file's process is alive and is the one we started."""
    return start_time(state.pid) == state.start_time


def spawn(
    name: str, command: list[str], *, log: Path, cwd: Path, env: dict[str, str], port: int
) -> tuple[subprocess.Popen[bytes], State]:
    """Start ``command`` detached from this process (its own session: a Ctrl-C or the
    end of this shell does not reach it), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        output.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}: start\n".encode())
        output.flush()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # An unreaped child keeps its pid: reading its start time now cannot race a reuse.
    started = start_time(process.pid) or ""
    return process, State(name, process.pid, started, port, command, str(log))


def stop(state: State, stop_signal: signal.Signals, *, group: bool, timeout: float) -> str:
    """Stop the state file's process if it is ours: ``stop_signal``, then SIGKILL to its
    process group after ``timeout`` s. Returns what happened, for the user."""
    if not is_ours(state):
        return f"not running (pid {state.pid} is gone or is not ours)"
    begun = time.monotonic()
    _signal(state, stop_signal, group=group)
    if _wait_gone(state, timeout):
        return f"stopped (pid {state.pid}) in {time.monotonic() - begun:.1f} s"
    _signal(state, signal.SIGKILL, group=True)
    _wait_gone(state, 5.0)
    return f"killed (pid {state.pid} ignored {stop_signal.name} for {timeout:.0f} s)"


def _signal(state: State, sig: signal.Signals, *, group: bool) -> None:
    # Checked again right before each signal: the pid must still be our process.
    if not is_ours(state):
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            # start_new_session made the server its group's leader: the group is its own.
            os.killpg(state.pid, sig)
        else:
            os.kill(state.pid, sig)


def _wait_gone(state: State, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_ours(state):
        if time.monotonic() > deadline:
            return False
        _reap(state.pid)
        time.sleep(POLL_SECONDS)
    return True


def _reap(pid: int) -> None:
    # A process this one started (a failed `up`) stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def session_pids(leader: int) -> list[int]:
    """The processes of the session ``leader`` started (a server and its workers)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text(encoding="utf-8").rpartition(")")[2].split()
            if int(fields[3]) == leader:  # field 6: the session id
                found.append(int(entry.name))
    return found


def rss_mb(leader: int) -> float | None:
    """Resident memory of the session's processes, in MB (None without /proc)."""
    if not sys.platform.startswith("linux"):
        return None
    total_kb = 0
    for pid in session_pids(leader):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


# ------------------------------------------------------------------------- ports


def port_in_use(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (or on every address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: a connection of a past run in TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno in {errno.EADDRINUSE, errno.EACCES}:
                return True
            raise
    return False


def check_socket_path(path: Path) -> None:
    if len(str(path)) > SOCKET_PATH_MAX:
        raise StackError(
            f"the socket path {path} is longer than {SOCKET_PATH_MAX} bytes: "
            "set STACK_DIR to a shorter folder"
        )


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
