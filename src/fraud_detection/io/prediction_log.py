"""The prediction log's contract: its tables, how a store is chosen by URL, how rows are
written and read. The service (``serving/prediction_log.py``, the writer) and the drift
monitor (``monitoring/prediction_log.py``, the reader) both use this module and nothing
else, so the two cannot disagree about a column.

A store is chosen by URL (``SERVING_PREDICTION_LOG``, the monitor's ``log_path``):

    logs/predictions.db, sqlite:///logs/predictions.db   a SQLite file (the default):
        one machine, any number of uvicorn workers (WAL mode)
    postgresql://user:password@host:port/database        PostgreSQL: several replicas,
        on any number of machines, write one log

Table ``predictions`` (one row per scored transaction):

    logged_at       when the prediction was made (UTC; SQLite: ISO-8601 text, which sorts
                    as time; PostgreSQL: timestamptz)
    request_id      the request's id (X-Request-ID, or one the service made)
    row_index       position in a batch request (0 for /predict)
    model_name, model_version, schema_fingerprint
    model_fingerprint  the model's content fingerprint ('' for models older than it)
    features        JSON array of the feature values in the order of the schema's names:
                    an array, not an object, keeps the writer cheap (see ``_payload``)
    probability     P(fraud) from the model
    is_fraud        1 if probability >= threshold
    threshold       the model's decision threshold

``(request_id, row_index, logged_at)`` is unique, and a write that repeats a row is
ignored: a writer that lost its connection in the middle of a commit retries the whole
batch without knowing whether the commit happened, and no row is logged twice.

Table ``schemas`` maps ``schema_fingerprint`` to the feature schema JSON, so the monitor
can check that logged rows match its reference and name the values of ``features``.

Retention: about 600 bytes per prediction. Archive or delete old rows with SQL
(``DELETE FROM predictions WHERE logged_at < ...``); the service never prunes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson

# The columns a reader gets from ``LogStore.read``, in this order.
READ_COLUMNS = (
    "logged_at",
    "request_id",
    "row_index",
    "model_version",
    "model_fingerprint",
    "schema_fingerprint",
    "features",
    "probability",
    "is_fraud",
)
_WRITE_COLUMNS = (
    "logged_at, request_id, row_index, model_name, model_version, schema_fingerprint, "
    "model_fingerprint, features, probability, is_fraud, threshold"
)


class LogStoreError(RuntimeError):
    """The store cannot be reached, read or written; the message names it (no password)."""


class LogNotFoundError(LogStoreError):
    """There is no log at this location yet (no file, or no table)."""


@dataclass(frozen=True)
class ModelStamp:
    """What every row says about the model that made it."""

    name: str
    version: str
    schema_fingerprint: str
    schema_json: str
    feature_names: tuple[str, ...]
    threshold: float
    fingerprint: str = ""  # the model's content fingerprint; '' for models without one


@dataclass(frozen=True)
class Entry:
    """One request's predictions (one row for /predict, many for /predict/batch)."""

    logged_at: float  # time.time() when the prediction was made
    request_id: str
    stamp: ModelStamp
    rows: Sequence[Sequence[Any]]
    probabilities: Sequence[float]
    decisions: Sequence[bool]


class LogStore(Protocol):
    """One kind of store. ``connect`` and ``write`` raise LogStoreError when the store
    is unreachable or refuses the write (the caller retries); ValueError for an entry
    that can never be written."""

    location: str  # for messages: the file, or the URL without its password
    # A server that may be down at start-up and come back (the service waits for it); a
    # file that cannot be created is a setting to fix, reported at start-up.
    remote: bool

    def create_schema(self) -> None: ...
    def connect(self) -> Any: ...
    def write(self, connection: Any, entries: Sequence[Entry]) -> int: ...
    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]: ...


def open_store(url: str | Path) -> LogStore:
    """The store a URL names: ``postgresql://`` (or ``postgres://``), else a SQLite file
    (a path, or ``sqlite:///path``)."""
    text = str(url).strip()
    if not text:
        raise ValueError("the prediction log's location is empty: give a file or a URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in {"postgresql", "postgres"} or scheme.startswith("postgresql+"):
        return PostgresStore(text)
    if scheme == "sqlite" and text.lower().startswith("sqlite:///"):
        # As SQLAlchemy reads them: sqlite:///relative/path, sqlite:////absolute/path.
        return SqliteStore(Path(text[len("sqlite:///") :]))
    if scheme:
        raise ValueError(
            f"{redact(text)}: a prediction log is a SQLite file (a path or sqlite:///path) "
            "or postgresql://user:password@host:port/database"
        )
    return SqliteStore(Path(text))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # The host and port as written: parts.port raises on a port that is not a number (a
    # message about that URL must still be shown), parts.hostname drops an IPv6 address's
    # brackets.
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def rows_of(entries: Iterable[Entry]) -> int:
    return sum(len(entry.rows) for entry in entries)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")


def _payload(entry: Entry) -> str:
    """An entry's rows with their answers as one JSON text, which the database expands
    into rows in C (SQLite's json_each, PostgreSQL's json_array_elements).

    Rows are paired with their answers without copying and encoded by one call to
    orjson (a tenth of the time of json's C encoder: 0.24 against 2.1 ms for 1,000 rows,
    docs/benchmarks.md). Per-row Python work here (dicts, number formatting, one INSERT
    per row) held the GIL in thousands of slices per batch and stalled the request thread
    for hundreds of milliseconds under load (docs/serving.md)."""
    width = len(entry.stamp.feature_names)
    if any(len(row) != width for row in entry.rows):
        raise ValueError(f"a row does not have the schema's {width} values")
    pairs = list(zip(entry.rows, entry.probabilities, entry.decisions, strict=True))
    text = orjson.dumps(pairs)
    # orjson writes NaN and infinity as null. No logged value may be null (features are
    # finite numbers or non-empty text, answers numbers and booleans), so a null means
    # such a value, unless a text value merely contains the letters: then json decides.
    # NaN must not reach the database: its JSON parser would refuse the whole batch as
    # if the store had failed, again at every retry. A ValueError marks this one entry
    # as unwritable instead, and the others are written.
    if b"null" in text:
        return json.dumps(pairs, separators=(",", ":"), allow_nan=False)
    return text.decode()


def _statement(entry: Entry, logged_at: Any) -> tuple[Any, ...]:
    """The parameters of one INSERT for ``entry`` (both stores' statements take them in
    this order), its time in the store's own type."""
    stamp = entry.stamp
    return (
        logged_at,
        entry.request_id,
        stamp.name,
        stamp.version,
        stamp.schema_fingerprint,
        stamp.fingerprint,
        stamp.threshold,
        _payload(entry),
    )


def _stamps(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    return list({e.stamp.schema_fingerprint: e.stamp.schema_json for e in entries}.items())


# ------------------------------------------------------------------------ the tables

# The predictions table, defined once: each column's kind, in the table's order
# (model_fingerprint last: older SQLite files gained it by ALTER TABLE). Both stores'
# DDL are made from it.
_COLUMNS = (
    ("logged_at", "time"),
    ("request_id", "text"),
    ("row_index", "integer"),
    ("model_name", "text"),
    ("model_version", "text"),
    ("schema_fingerprint", "text"),
    ("features", "text"),
    ("probability", "real"),
    ("is_fraud", "flag"),
    ("threshold", "real"),
    ("model_fingerprint", "text"),
)
_DEFAULTS = {"model_fingerprint": "''"}
# Each kind in each store: times are ISO-8601 text in SQLite (it sorts as time).
_TYPES = {
    "sqlite": {
        "id": "INTEGER PRIMARY KEY",
        "time": "TEXT",
        "text": "TEXT",
        "integer": "INTEGER",
        "real": "REAL",
        "flag": "INTEGER",
    },
    "postgresql": {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "time": "TIMESTAMPTZ",
        "text": "TEXT",
        "integer": "INTEGER",
        "real": "DOUBLE PRECISION",
        "flag": "SMALLINT",
    },
}
_UNIQUE = (
    "CREATE UNIQUE INDEX IF NOT EXISTS predictions_once "
    "ON predictions (request_id, row_index, logged_at)"
)


def _schema_sql(store: str) -> str:
    """The tables and the time index, in ``store``'s types."""
    types = _TYPES[store]
    columns = [f"id {types['id']}"] + [
        f"{name} {types[kind]} NOT NULL"
        + (f" DEFAULT {_DEFAULTS[name]}" if name in _DEFAULTS else "")
        for name, kind in _COLUMNS
    ]
    body = ",\n    ".join(columns)
    return f"""CREATE TABLE IF NOT EXISTS predictions (
    {body}
);
CREATE INDEX IF NOT EXISTS predictions_logged_at ON predictions (logged_at);
CREATE TABLE IF NOT EXISTS schemas (
    schema_fingerprint TEXT PRIMARY KEY,
    feature_schema TEXT NOT NULL
);
"""


# ------------------------------------------------------------------------------ SQLite

_SQLITE_SCHEMA = _schema_sql("sqlite")
# Apart: made after an old file has gained the columns it lacks.
_SQLITE_UNIQUE = _UNIQUE
_SQLITE_INSERT = f"""
INSERT OR IGNORE INTO predictions ({_WRITE_COLUMNS})
SELECT ?, ?, CAST(key AS INTEGER), ?, ?, ?, ?, value -> 0, value ->> 1, value ->> 2, ?
FROM json_each(?)
"""


class SqliteStore:
    """A SQLite file, in WAL mode so the monitor reads while workers write."""

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        # Seconds a write waits for another writer's lock before it fails (and is retried).
        self.busy_timeout = busy_timeout
        self.location = str(path)
        self.remote = False

    def create_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self.connect()
        try:
            with connection:
                connection.executescript(_SQLITE_SCHEMA)
                _sqlite_add_missing_columns(connection)
                connection.execute(_SQLITE_UNIQUE)
        except sqlite3.Error as error:
            raise LogStoreError(f"prediction log {self.location}: {error}") from None
        finally:
            connection.close()

    def connect(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False: opened by the service, used only by its writer.
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, check_same_thread=False
            )
            # WAL lets the monitor read while workers write. synchronous=NORMAL: a commit
            # survives the process being killed (the OS has the pages), not a power cut.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as error:
            raise LogStoreError(f"prediction log {self.location}: {error}") from None
        return connection

    def write(self, connection: sqlite3.Connection, entries: Sequence[Entry]) -> int:
        statements = [_statement(entry, _iso(entry.logged_at)) for entry in entries]
        try:
            with connection:
                connection.executemany(
                    "INSERT OR IGNORE INTO schemas VALUES (?, ?)", _stamps(entries)
                )
                connection.executemany(_SQLITE_INSERT, statements)
        except sqlite3.Error as error:
            # Disk full, file locked by a long reader, ...: the caller keeps the rows.
            raise LogStoreError(f"prediction log {self.location}: {error}") from None
        return rows_of(entries)

    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
        if not self.path.is_file():
            raise LogNotFoundError(f"no prediction log at {self.location}")
        conditions, parameters = _window("?", start, end)
        try:
            # Read-only: the monitor must never lock out the service that writes the log.
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True)
            try:
                columns = _sqlite_read_columns(connection)
                # Only fixed text goes into the SQL; the window ends are bound parameters.
                query = f"SELECT {columns} FROM predictions{conditions} ORDER BY id"
                return connection.execute(query, [_iso_text(p) for p in parameters]).fetchall()
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            raise LogStoreError(
                f"{self.location} is not a readable prediction log ({error}); it should be "
                "the SQLite file the service writes"
            ) from None


def _sqlite_add_missing_columns(connection: sqlite3.Connection) -> None:
    """A log written before ``model_fingerprint`` existed gains the column ('' in old
    rows), so a new service keeps appending to the same file."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(predictions)")}
    if "model_fingerprint" in columns:
        return
    try:
        connection.execute(
            "ALTER TABLE predictions ADD COLUMN model_fingerprint TEXT NOT NULL DEFAULT ''"
        )
    except sqlite3.OperationalError as error:
        # Another worker starting at the same moment added it first.
        if "duplicate column" not in str(error):
            raise


def _sqlite_read_columns(connection: sqlite3.Connection) -> str:
    """The columns to select; a log older than ``model_fingerprint`` reads it as ''."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(predictions)")}
    columns = ", ".join(READ_COLUMNS)
    if "model_fingerprint" in present or not present:
        return columns
    return columns.replace("model_fingerprint", "'' AS model_fingerprint")


# -------------------------------------------------------------------------- PostgreSQL

_POSTGRES_SCHEMA = f"{_schema_sql('postgresql')}{_UNIQUE};\n"
# What _POSTGRES_SCHEMA makes, looked up without taking a lock on the tables.
_POSTGRES_PRESENT = (
    "SELECT to_regclass('predictions'), to_regclass('predictions_logged_at'), "
    "to_regclass('schemas'), to_regclass('predictions_once')"
)
# Replicas that start together would race on CREATE TABLE IF NOT EXISTS, which is not
# safe in PostgreSQL (a duplicate key on a system catalog): they take turns on this lock.
_SCHEMA_LOCK = 0x66726175  # any constant; "frau"
_POSTGRES_INSERT = f"""
INSERT INTO predictions ({_WRITE_COLUMNS})
SELECT %s, %s, (t.ordinality - 1)::int, %s, %s, %s, %s, (t.value -> 0)::text,
       (t.value ->> 1)::double precision, (t.value ->> 2)::boolean::int, %s
FROM json_array_elements(%s::json) WITH ORDINALITY AS t(value, ordinality)
ON CONFLICT DO NOTHING
"""
_POSTGRES_READ = """
SELECT to_char(logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
       request_id, row_index, model_version, model_fingerprint, schema_fingerprint,
       features, probability, is_fraud
FROM predictions{conditions} ORDER BY id
"""
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000


class PostgresStore:
    """A PostgreSQL database: the log every replica writes (psycopg 3)."""

    def __init__(self, url: str) -> None:
        # SQLAlchemy-style URLs (postgresql+psycopg://) mean the same database.
        scheme, rest = url.split("://", 1)
        self.url = f"postgresql://{rest}" if scheme != "postgresql" else url
        self.location = redact(self.url)
        self.remote = True
        try:
            urlsplit(self.url).port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            # A typo in the URL is a setting to fix now, not a server to wait for.
            raise ValueError(
                f"{self.location}: the port is not a number "
                "(postgresql://user:password@host:port/database)"
            ) from None

    def create_schema(self) -> None:
        connection = self.connect()
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                # CREATE INDEX IF NOT EXISTS locks the table against writes before it
                # looks for the index: on a live log, every replica's inserts would queue
                # behind a replica that starts. The DDL runs only where something is missing.
                present = connection.execute(_POSTGRES_PRESENT).fetchone()
                if not all(present):
                    connection.execute(_POSTGRES_SCHEMA)
        except _psycopg().Error as error:
            raise self._error(error) from None
        finally:
            connection.close()

    def connect(self) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.connect(
                self.url,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="fraud-detection",
                # A write blocked on a lock, or a server gone without closing the
                # connection, fails within seconds (and is retried) instead of holding
                # every waiting request for ever.
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            )
        except psycopg.Error as error:
            raise self._error(error) from None

    def write(self, connection: Any, entries: Sequence[Entry]) -> int:
        statements = [
            _statement(entry, datetime.fromtimestamp(entry.logged_at, UTC)) for entry in entries
        ]
        psycopg = _psycopg()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO schemas VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    _stamps(entries),
                )
                cursor.executemany(_POSTGRES_INSERT, statements)
        except psycopg.Error as error:
            raise self._error(error) from None
        return rows_of(entries)

    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
        psycopg = _psycopg()
        conditions, parameters = _window("%s", start, end)
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(_POSTGRES_READ.format(conditions=conditions), parameters)
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
        except psycopg.errors.UndefinedTable:
            raise LogNotFoundError(
                f"{self.location} has no predictions table yet (no service has written to it)"
            ) from None
        except psycopg.Error as error:
            raise self._error(error) from None
        finally:
            connection.close()

    def _error(self, error: Exception) -> LogStoreError:
        # psycopg's messages can quote the connection string; keep only the first line,
        # and never the password.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return LogStoreError(f"prediction log {self.location}: {reason}")


def _psycopg() -> Any:
    """psycopg, imported when a PostgreSQL log is used (SQLite users need not have it)."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the serve and monitor extras install it
        raise LogStoreError(
            "a postgresql:// prediction log needs psycopg: pip install 'psycopg[binary]'"
        ) from None
    return psycopg


# ----------------------------------------------------------------------------- shared


def _window(
    placeholder: str, start: datetime | None, end: datetime | None
) -> tuple[str, list[datetime]]:
    """The WHERE clause of a half-open time window, and its parameters."""
    conditions, parameters = [], []
    for moment, test in ((start, ">="), (end, "<")):
        if moment is None:
            continue
        if moment.tzinfo is None:
            raise ValueError(f"{moment} has no time zone; give window ends in UTC")
        conditions.append(f"logged_at {test} {placeholder}")
        parameters.append(moment)
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), parameters


def _iso_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
