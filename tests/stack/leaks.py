"""Canary secrets, and where they turn up: in files (also inside zip and gzip files and
git's compressed objects), in texts, in a git history, in a PostgreSQL database. What the
secrets test (test_teammate.py) greps with; a hit names the place and the canary's
setting, never the value."""

from __future__ import annotations

import base64
import contextlib
import gzip
import mmap
import os
import secrets
import stat
import subprocess
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from stack.settings import ENV_PREFIX, PIPELINE_USER, SERVING_USER, StackSettings

# Every value contains this: what a hit's message may show of it.
PREFIX = "canary-"
# The stack's secrets (STACK_* settings) that a test can set; the API keys once the
# settings have them.
SECRET_FIELDS = (
    "s3_access_key",
    "s3_secret_key",
    "postgres_password",
    "mlflow_admin_password",
    "mlflow_pipeline_password",
    "mlflow_serving_password",
    "mlflow_secret_key",
    "api_key",
    "api_probe_key",
)


def canary_settings() -> dict[str, str]:
    """A value for every secret setting that cannot occur by chance: ``canary-`` and the
    setting's name, then 16 random hex digits (lower case, letters, digits and dashes
    only: a URL quotes none of it, an API key and an MLflow password take it)."""
    fields = [name for name in SECRET_FIELDS if name in StackSettings.model_fields]
    return {
        f"{ENV_PREFIX}{name.upper()}": f"{PREFIX}{name.replace('_', '')}-{secrets.token_hex(8)}"
        for name in fields
    }


def needles(canaries: dict[str, str], admin_user: str = "admin") -> dict[str, bytes]:
    """What to look for, by name: each value, and the Authorization header MLflow's
    clients send with each user's password (base64 of user:password hides the value)."""
    found = {name: value.encode() for name, value in canaries.items()}
    users = {
        "STACK_MLFLOW_ADMIN_PASSWORD": admin_user,
        "STACK_MLFLOW_PIPELINE_PASSWORD": PIPELINE_USER,
        "STACK_MLFLOW_SERVING_PASSWORD": SERVING_USER,
    }
    for setting, user in users.items():
        token = base64.b64encode(f"{user}:{canaries[setting]}".encode())
        found[f"{setting} (as a basic-auth header)"] = token
    return found


@dataclass(frozen=True)
class Hit:
    where: str  # a path and line, a command, a run's param...
    secret: str  # the setting whose value was found

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} ({PREFIX}...)"


@dataclass
class Search:
    """Everything looked at so far, and what turned up."""

    needles: dict[str, bytes]
    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    size: int = 0  # bytes of the files
    texts: int = 0

    def text(self, where: str, value: str | bytes) -> list[Hit]:
        data = value.encode() if isinstance(value, str) else value
        self.texts += 1
        return self._record(where, data)

    def _record(self, where: str, data: bytes | mmap.mmap) -> list[Hit]:
        found = []
        for name, needle in self.needles.items():
            at = data.find(needle)
            while at >= 0:
                line = data[:at].count(b"\n") + 1
                found.append(Hit(f"{where}:{line}", name))
                at = data.find(needle, at + 1)
        self.hits += found
        return found

    def file(self, path: Path, label: str | None = None) -> list[Hit]:
        """``path``'s bytes; a zip's members and a gzip's content too, and a loose git
        object inflated (these compress what they hold)."""
        where = label or str(path)
        size = path.stat().st_size
        self.files += 1
        self.size += size
        if size == 0:
            return []
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
            found = self._record(where, m)
            head = m[:2]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        found += self._record(f"{where}!{member.filename}", archive.read(member))
        elif head == b"\x1f\x8b":
            with contextlib.suppress(OSError, EOFError):  # not gzip after all
                found += self._record(f"{where} (gunzipped)", gzip.decompress(path.read_bytes()))
        elif path.parent.parent.name == "objects" and len(path.parent.name) == 2:
            with contextlib.suppress(zlib.error):  # not a git object after all
                found += self._record(f"{where} (inflated)", zlib.decompress(path.read_bytes()))
        return found

    def folder(self, root: Path, *, skip: Iterable[Path] = ()) -> list[Hit]:
        """Every regular file under ``root`` (links not followed: a clone's .venv is a
        link to the repository's), but those in ``skip``."""
        skipped = {path.resolve() for path in skip}
        found = []
        for path in walk(root):
            if path.resolve() not in skipped:
                found += self.file(path)
        return found

    def git_history(self, repository: Path) -> list[Hit]:
        """Every commit's files (packed objects included), through git grep."""
        revisions = subprocess.run(
            ["git", "rev-list", "--all"],
            cwd=repository,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        found = []
        for name, needle in self.needles.items():
            grep = subprocess.run(
                ["git", "grep", "-l", "--text", "-F", "-e", needle.decode(), *revisions],
                cwd=repository,
                capture_output=True,
                text=True,
                check=False,
            )
            assert grep.returncode in (0, 1), grep.stderr  # 1: no match
            found += [Hit(f"{repository} git {line}", name) for line in grep.stdout.splitlines()]
        self.texts += len(revisions)
        self.hits += found
        return found

    def database(self, url: str, label: str) -> int:
        """Every row of every table of the database at ``url``, as text; the row count."""
        rows = 0
        with psycopg.connect(url, autocommit=True) as connection:
            tables = connection.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            for schema, table in tables:
                query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                for number, (row,) in enumerate(connection.execute(query), start=1):
                    self.text(f"{label} table {schema}.{table} row {number}", row)
                    rows += 1
        return rows


def walk(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):  # no links, sockets or pipes
                yield path
