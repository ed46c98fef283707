"""PostgreSQL, the system's server, as MLflow's backend store: data in ``<stack>/postgres``."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from stack.processes import StackError, StartError, check_socket_path
from stack.service import NotReady, Service
from stack.settings import (
    AUTH_DATABASE,
    POSTGRES_ROLE,
    PREDICTIONS_DATABASE,
    prediction_log_url,
    variable,
    write_private,
)

ROLE = DATABASE = POSTGRES_ROLE
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root: as root, the server runs as this system user.
SYSTEM_USER = "postgres"
# Newest first within each pattern: Debian/Ubuntu, Fedora/RHEL (PGDG), Homebrew.
SEARCH_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
INSTALL_HINT = (
    "no PostgreSQL server found (initdb and postgres): apt-get install postgresql "
    "(Debian/Ubuntu) or brew install postgresql@16 (macOS), or set "
    f"{variable('postgres_bin_dir')} to the folder that holds them"
)


def has_server(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "postgres"))


def candidates() -> list[Path]:
    """Folders that hold a PostgreSQL server, in order of preference (newest first)."""
    found: list[Path] = []
    for pattern in SEARCH_GLOBS:
        found += sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True)
    if pg_config := shutil.which("pg_config"):
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        found += [Path(bindir)] if bindir else []
    if initdb := shutil.which("initdb"):
        # /usr/local/bin/initdb may be a link: the server sits beside its target.
        found.append(Path(initdb).resolve().parent)
    unique = dict.fromkeys(p.resolve() for p in found)
    return [folder for folder in unique if has_server(folder)]


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)


def server_version(bin_dir: Path) -> str:
    """`postgres --version`: "PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"."""
    text = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return "PostgreSQL " + text.partition("(PostgreSQL)")[2].strip()


def _major(version: str) -> str:
    return version.split()[1].split(".", maxsplit=1)[0]


def choose_bin_dir(explicit: Path | None, data: Path) -> Path:
    """The server to run: the explicit folder, else the newest found, except that a data
    folder already made keeps the major version it was made with."""
    if explicit is not None:
        if not has_server(explicit):
            raise StackError(f"{variable('postgres_bin_dir')}={explicit}: {INSTALL_HINT}")
        return explicit
    found = candidates()
    if not found:
        raise StackError(INSTALL_HINT)
    made_with = data / "PG_VERSION"
    if not made_with.is_file():
        return found[0]
    wanted = made_with.read_text(encoding="utf-8").strip()
    for folder in found:
        if _major(server_version(folder)) == wanted:
            return folder
    raise StackError(
        f"{data} was made by PostgreSQL {wanted}, which is not installed: install it "
        f"(apt-get install postgresql-{wanted}) or remove {data} to start afresh"
    )


class Postgres(Service):
    name = "postgres"
    port_field = "postgres_port"
    # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave);
    # the postmaster stops its own children.
    stop_signal = signal.SIGINT
    signal_group = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    @cached_property
    def bin_dir(self) -> Path:
        return choose_bin_dir(self.settings.postgres_bin_dir, self.data)

    def version(self) -> str:
        return server_version(self.bin_dir)

    def check_installed(self) -> None:
        self.bin_dir  # noqa: B018  (a missing server fails here, before anything starts)

    def prepare(self) -> None:
        check_socket_path(self.socket_dir / f".s.PGSQL.{self.port}")
        self.bin_dir  # noqa: B018  (fail on a missing server before creating anything)
        self.folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.data, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            self._own(folder)
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()

    def _initdb(self) -> None:
        pwfile = self.folder / "pwfile"
        write_private(pwfile, self.secrets.postgres_password + "\n")
        self._own(pwfile)
        command = [
            *as_system_user(),
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={SUPERUSER}",
            # Passwords (SCRAM) for every connection, the socket's included.
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            # UTF-8 and the C locale whatever LANG says: the same database everywhere.
            "--encoding=UTF8",
            "--no-locale",
        ]
        try:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as log:
                result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StartError(f"initdb failed (exit {result.returncode})", self.log)

    def _own(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        user = _system_user()
        os.chown(path, user.pw_uid, user.pw_gid)
        # Its parents must let the server's user through: root's folders often do not.
        reach = subprocess.run([*as_system_user(), "test", "-w", str(path)], check=False)
        if reach.returncode != 0:
            raise StackError(
                f"PostgreSQL runs as the {SYSTEM_USER} user (this is root), who cannot reach "
                f"{path}: let it through the parent folders (chmod o+x) or set "
                f"{variable('dir')} to a folder it can reach"
            )

    def command(self) -> list[str]:
        return [
            *as_system_user(),
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            # Not the system's /var/run/postgresql: the stack's own folder.
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]

    def _connect(self, user: str, database: str) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=user,
                password=self.secrets.postgres_password,
                dbname=database,
                connect_timeout=3,
                autocommit=True,  # CREATE DATABASE runs outside a transaction
            )
        except psycopg.OperationalError as error:
            message = str(error).strip().splitlines()[-1]
            if "password authentication failed" in message:
                raise StackError(
                    f"PostgreSQL rejected the password of {user!r}: "
                    f"{variable('postgres_password')} (or {self.settings.secrets_file}) is not "
                    f"the one {self.data} was made with"
                ) from None
            raise NotReady(message) from None

    def ready(self) -> None:
        self._connect(SUPERUSER, "postgres").close()

    def health(self) -> None:
        with self._connect(ROLE, DATABASE) as connection:
            connection.execute("SELECT 1")

    def after_start(self) -> None:
        self.create_role_and_databases()

    def create_role_and_databases(self) -> None:
        """The stack's role and its databases, those missing (MLflow's runs, its users,
        the prediction log)."""
        try:
            self._create_role_and_databases()
        except psycopg.Error as error:
            raise StackError(f"could not create the {ROLE} role and databases: {error}") from None

    def _create_role_and_databases(self) -> None:
        with self._connect(SUPERUSER, "postgres") as connection:
            if not connection.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]
            ).fetchone():
                connection.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ROLE), sql.Literal(self.secrets.postgres_password)
                    )
                )
            for database in (DATABASE, AUTH_DATABASE, PREDICTIONS_DATABASE):
                if not connection.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [database]
                ).fetchone():
                    connection.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(ROLE)
                        )
                    )

    def url(self, database: str = DATABASE, *, with_password: bool = True) -> str:
        """The SQLAlchemy URL MLflow stores its runs with (psycopg 3); without the
        password, for a file: the server then takes it from PGPASSWORD."""
        password = ":" + quote(self.secrets.postgres_password, safe="") if with_password else ""
        return f"postgresql+psycopg://{ROLE}{password}@127.0.0.1:{self.port}/{database}"

    def prediction_log_url(self) -> str:
        """SERVING_PREDICTION_LOG for the API replicas: one log they all write."""
        return prediction_log_url(self.settings, self.secrets)


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise StackError(
            f"PostgreSQL does not run as root and there is no {SYSTEM_USER!r} user to run it "
            f"as: useradd --system {SYSTEM_USER}, or run the stack as another user"
        ) from None


def as_system_user(*, die_with_parent: bool = False) -> list[str]:
    """The prefix that runs a command as the server's user: nothing unless this is root.
    setpriv execs (no child left between us and the server): the pid is the server's.
    ``die_with_parent``: the server gets SIGQUIT when the process that started it dies
    (a test's server; the stack's outlives `python -m stack up`)."""
    if os.geteuid() != 0:
        return []
    user = _system_user()
    orphaned = ["--pdeathsig=QUIT"] if die_with_parent else []
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--reset-env",
        *orphaned,
        "--",
    ]
