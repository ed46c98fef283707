"""A PostgreSQL server of the tests' own, for the prediction log's PostgreSQL store.

The machine's server binaries (found as the stack finds them, ``stack.postgres``) run a
throw-away cluster: ``initdb`` into a temporary folder, ``postgres`` on a free loopback
port with its socket in that folder, passwords required (SCRAM), a ``fraud`` role that
owns the test databases. The fixtures (``tests/conftest.py``) start one server per
session and give each test a fresh database; a test may stop and start the server (same
port, same data folder) to play a restart. Only the process started here is ever
signalled.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import psycopg
from psycopg import sql

from monitoring.baseline import free_port
from stack.postgres import SUPERUSER, SYSTEM_USER, as_system_user

ROLE = "fraud"
START_SECONDS = 30.0
STOP_SECONDS = 30.0

# SIGINT is PostgreSQL's fast shutdown (clients are disconnected, a checkpoint is
# written); SIGQUIT its immediate one (no checkpoint: the next start recovers from the
# WAL, as after a crash).
_SIGNALS = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresServer:
    """A cluster in a folder of its own, and the one ``postgres`` process serving it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # Not under pytest's tmp_path: as root the server runs as the postgres user, whom
        # tmp_path's 0700 parents keep out. Nor where tempfile points now: the service
        # tests point it into tmp_path.
        root = os.environ.get("TMPDIR") or "/tmp"
        self.folder = Path(tempfile.mkdtemp(prefix="pg-test-", dir=root))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        # Letters and digits only, but a new one each session: the URLs carry a password.
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    # --------------------------------------------------------------------- the cluster

    def init(self) -> None:
        for folder in (self.data, self.socket_dir):
            folder.mkdir(mode=0o700)
            _own(folder)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        _own(pwfile)
        command = [
            *_as_system_user(),
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={SUPERUSER}",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",  # a throw-away cluster: no need to wait for the disk
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        """Start ``postgres`` (on the same port and data folder each time) and wait until
        it takes connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            *_as_system_user(),
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            # The OS keeps what a killed server wrote; only a power cut would lose it.
            "-c",
            "fsync=off",
        ]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.process.returncode}):\n{self.output()}")
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"postgres never took connections:\n{self.output()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server this object started (and nothing else); its children go with it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(_SIGNALS[mode])
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    # --------------------------------------------------------------------- connections

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            connect_timeout=3,
            autocommit=True,
        )

    def create_role(self) -> None:
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(self.password)
                )
            )

    def create_database(self) -> str:
        """A new, empty database owned by the ``fraud`` role; its URL (with the password)."""
        self._databases += 1
        name = f"log_{self._databases}"
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
        return self.url(name)

    def url(self, database: str) -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"


def start_server(bin_dir: Path) -> PostgresServer:
    server = PostgresServer(bin_dir)
    try:
        server.init()
        server.start()
        server.create_role()
    except BaseException:
        server.remove()
        raise
    return server


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def _as_system_user() -> list[str]:
    """As root, run as the postgres user, as the stack does; the server gets SIGQUIT if
    pytest dies without stopping it, so none is left behind."""
    return as_system_user(die_with_parent=True)
