"""The prediction log: every prediction, appended to SQLite for the drift monitor.

Why SQLite: one file, safe with several writers (uvicorn workers) in WAL mode, and the
monitor can read a time window or join labels by request id with plain SQL while the
service keeps writing. The request path only puts a record on an in-memory queue; a
background thread writes queued records in batches, one transaction each. Shutdown drains
the queue before it returns, and a failed write is retried, never dropped, so the log
holds exactly one row per prediction served.

Table ``predictions`` (one row per scored transaction):

    logged_at       ISO-8601 UTC time of the prediction (sorts as text)
    request_id      the request's id (X-Request-ID, or one the service made)
    row_index       position in a batch request (0 for /predict)
    model_name, model_version, schema_fingerprint
    model_fingerprint  the model's content fingerprint (its metadata's model_fingerprint;
                    '' for models older than it): which model answered, in any store
    features        JSON array of the feature values, in the order of the schema's
                    names (``schemas.feature_schema``): an array, not an object, keeps
                    the writer cheap (see ``_statement``)
    probability     P(fraud) from the model
    is_fraud        1 if probability >= threshold
    threshold       the model's decision threshold

Table ``schemas`` maps ``schema_fingerprint`` to the feature schema JSON, so the monitor
can check that logged rows match the reference it compares them with, and name the
values of ``features``.

Retention: the log grows about 600 bytes per prediction. Archive or delete old rows
with SQL (``DELETE FROM predictions WHERE logged_at < ...``); the service never prunes.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("serving.prediction_log")

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    logged_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    schema_fingerprint TEXT NOT NULL,
    features TEXT NOT NULL,
    probability REAL NOT NULL,
    is_fraud INTEGER NOT NULL,
    threshold REAL NOT NULL,
    model_fingerprint TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS predictions_logged_at ON predictions (logged_at);
CREATE TABLE IF NOT EXISTS schemas (
    schema_fingerprint TEXT PRIMARY KEY,
    feature_schema TEXT NOT NULL
);
"""
# One statement per request: SQLite expands the request's rows from one JSON payload
# (``[[features, probability, is_fraud], ...]``) in C. Inserting row by row from Python
# released and re-took the GIL for every row, which slowed the request thread down
# (a 1,000-row batch spent more time in the writer than in scoring).
_INSERT = """
INSERT INTO predictions (logged_at, request_id, row_index, model_name, model_version,
                         schema_fingerprint, model_fingerprint, features, probability,
                         is_fraud, threshold)
SELECT ?, ?, CAST(key AS INTEGER), ?, ?, ?, ?, value -> 0, value ->> 1, value ->> 2, ?
FROM json_each(?)
"""
_RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class ModelStamp:
    """What every record says about the model that made it."""

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


_STOP = object()


class PredictionLog:
    """Appends entries to a SQLite file from a background thread."""

    def __init__(self, path: Path, flush_seconds: float = 0.1) -> None:
        self.path = path
        self.flush_seconds = flush_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self.rows_written = 0
        self.write_failures = 0

    @property
    def pending_rows(self) -> int:
        return self._pending

    def start(self) -> None:
        """Create the file and tables (errors surface here, at start-up) and the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(self.path)
        with connection:
            connection.executescript(_SCHEMA_SQL)
            _add_missing_columns(connection)
        self._thread = threading.Thread(
            target=self._run, args=(connection,), name="prediction-log", daemon=True
        )
        self._thread.start()

    def record(self, entry: Entry) -> None:
        """Queue an entry; never blocks on disk."""
        with self._lock:
            self._pending += len(entry.rows)
        self._queue.put(entry)

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("prediction log: %d rows still unwritten at shutdown", self._pending)
        self._thread = None

    def _run(self, connection: sqlite3.Connection) -> None:
        stamps: set[str] = set()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                # Let a batch gather: one wake-up and one transaction per interval instead
                # of per request keeps this thread off the GIL the request path needs.
                time.sleep(self.flush_seconds)
            batch += _drain(self._queue)
            stopping = any(item is _STOP for item in batch)
            entries = [item for item in batch if isinstance(item, Entry)]
            if entries:
                try:
                    self._write(connection, entries, stamps)
                except Exception:  # a bug, not the disk: say so loudly, keep the writer alive
                    logger.exception(
                        "prediction log: %d entries could not be written", len(entries)
                    )
                    self.write_failures += 1
        connection.close()

    def _write(
        self, connection: sqlite3.Connection, entries: list[Entry], stamps: set[str]
    ) -> None:
        statements = []
        rows = 0
        for entry in entries:
            try:
                statements.append(_statement(entry))
                rows += len(entry.rows)
            except Exception:  # a bug in what was queued: drop that entry, say so, go on
                logger.exception(
                    "prediction log: entries could not be written (request %s)", entry.request_id
                )
                self.write_failures += 1
                self._done(len(entry.rows))
        new_stamps = {e.stamp.schema_fingerprint: e.stamp.schema_json for e in entries}
        new_stamps = {key: value for key, value in new_stamps.items() if key not in stamps}
        if not statements:
            return
        while True:
            try:
                with connection:
                    connection.executemany(
                        "INSERT OR IGNORE INTO schemas VALUES (?, ?)", new_stamps.items()
                    )
                    connection.executemany(_INSERT, statements)
                break
            except sqlite3.Error as error:
                # Disk full, file locked by a long reader, ...: keep the rows and retry.
                self.write_failures += 1
                logger.warning("prediction log: write failed (%s); retrying", error)
                time.sleep(_RETRY_SECONDS)
        stamps.update(new_stamps)
        self._done(rows)
        self.rows_written += rows

    def _done(self, rows: int) -> None:
        with self._lock:
            self._pending -= rows


def _drain(source: queue.SimpleQueue[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def _statement(entry: Entry) -> tuple[Any, ...]:
    """The parameters of one INSERT for ``entry``: its rows as one JSON payload.

    Rows are paired with their answers without copying, then encoded by one call to
    json's C encoder, and SQLite expands them in C. Per-row Python work here (dicts,
    number formatting) held the GIL in thousands of slices per batch and stalled the
    request thread for hundreds of milliseconds under load (docs/serving.md)."""
    stamp = entry.stamp
    logged_at = datetime.fromtimestamp(entry.logged_at, UTC).isoformat(timespec="microseconds")
    width = len(stamp.feature_names)
    if any(len(row) != width for row in entry.rows):
        raise ValueError(f"a row does not have the schema's {width} values")
    payload = json.dumps(
        list(zip(entry.rows, entry.probabilities, entry.decisions, strict=True)),
        separators=(",", ":"),
    )
    return (
        logged_at,
        entry.request_id,
        stamp.name,
        stamp.version,
        stamp.schema_fingerprint,
        stamp.fingerprint,
        stamp.threshold,
        payload,
    )


def _add_missing_columns(connection: sqlite3.Connection) -> None:
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


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: opened here, used only by the writer thread.
    connection = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    # WAL lets the monitor read while workers write; several workers may share the file.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection
