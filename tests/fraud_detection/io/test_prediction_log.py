"""The prediction log's contract: a store is chosen by URL, a password never reaches a
message, both stores read back what was written in the same columns, a repeated write
adds nothing, and a missing log is told apart from a broken one. The PostgreSQL tests run
a real server (tests/postgres.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from fraud_detection.io.prediction_log import (
    READ_COLUMNS,
    Entry,
    LogNotFoundError,
    LogStore,
    LogStoreError,
    ModelStamp,
    PostgresStore,
    SqliteStore,
    open_store,
    redact,
)
from monitoring.baseline import free_port
from tests.postgres import PostgresServer

STAMP = ModelStamp(
    name="fraud-detector",
    version="3",
    schema_fingerprint="0123456789abcdef",
    schema_json='{"features": ["a", "b"]}',
    feature_names=("a", "b"),
    threshold=0.25,
    fingerprint="feedfacecafebeef",
)
BASE = datetime(2026, 11, 30, 12, tzinfo=UTC)


def entry(request_id: str, at: datetime, rows: int = 1) -> Entry:
    values = [[float(i), i * 0.5] for i in range(rows)]
    probabilities = [0.125 * (i + 1) for i in range(rows)]
    return Entry(
        at.timestamp(), request_id, STAMP, values, probabilities, [p >= 0.25 for p in probabilities]
    )


def three_requests() -> list[Entry]:
    """At BASE, +10 min (a batch of 3 rows) and +20 min."""
    return [
        entry("first", BASE),
        entry("batch", BASE + timedelta(minutes=10), rows=3),
        entry("last", BASE + timedelta(minutes=20)),
    ]


def write(store: LogStore, entries: list[Entry]) -> int:
    connection = store.connect()
    try:
        return store.write(connection, entries)
    finally:
        connection.close()


def keys(rows: list[tuple[Any, ...]]) -> list[tuple[str, int]]:
    request_id, row_index = READ_COLUMNS.index("request_id"), READ_COLUMNS.index("row_index")
    return [(row[request_id], row[row_index]) for row in rows]


EXPECTED_ROWS = [
    (
        "2026-11-30T12:00:00.000000+00:00",
        "first",
        0,
        "3",
        "feedfacecafebeef",
        "0123456789abcdef",
        "[0.0,0.0]",
        0.125,
        0,
    ),
    (
        "2026-11-30T12:10:00.000000+00:00",
        "batch",
        0,
        "3",
        "feedfacecafebeef",
        "0123456789abcdef",
        "[0.0,0.0]",
        0.125,
        0,
    ),
    (
        "2026-11-30T12:10:00.000000+00:00",
        "batch",
        1,
        "3",
        "feedfacecafebeef",
        "0123456789abcdef",
        "[1.0,0.5]",
        0.25,
        1,
    ),
    (
        "2026-11-30T12:10:00.000000+00:00",
        "batch",
        2,
        "3",
        "feedfacecafebeef",
        "0123456789abcdef",
        "[2.0,1.0]",
        0.375,
        1,
    ),
    (
        "2026-11-30T12:20:00.000000+00:00",
        "last",
        0,
        "3",
        "feedfacecafebeef",
        "0123456789abcdef",
        "[0.0,0.0]",
        0.125,
        0,
    ),
]


# --- choosing a store ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("logs/predictions.db", Path("logs/predictions.db")),
        (Path("logs/predictions.db"), Path("logs/predictions.db")),
        ("  logs/predictions.db\n", Path("logs/predictions.db")),
        ("/var/log/fraud/predictions.db", Path("/var/log/fraud/predictions.db")),
        # As SQLAlchemy reads them: three slashes, then the path (a fourth: absolute).
        ("sqlite:///logs/predictions.db", Path("logs/predictions.db")),
        ("sqlite:////var/log/fraud/predictions.db", Path("/var/log/fraud/predictions.db")),
        ("SQLite:///logs/predictions.db", Path("logs/predictions.db")),
    ],
)
def test_a_path_or_a_sqlite_url_is_a_sqlite_file(url, path):
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path
    assert store.location == str(path)
    assert store.remote is False
    assert store.busy_timeout == 30.0


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("postgresql://fraud:secret@db:5432/log", "postgresql://fraud:secret@db:5432/log"),
        ("postgres://fraud:secret@db/log", "postgresql://fraud:secret@db/log"),
        # SQLAlchemy's spelling (what MLflow is given) names the same database.
        ("postgresql+psycopg://fraud:secret@db/log", "postgresql://fraud:secret@db/log"),
        ("PostgreSQL://fraud@db/log", "postgresql://fraud@db/log"),
    ],
)
def test_a_postgresql_url_is_a_server(url, normalised):
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert store.url == normalised
    assert store.remote is True
    assert "secret" not in store.location
    assert store.location == redact(normalised)


def test_opening_a_store_does_not_reach_it(tmp_path):
    open_store(f"postgresql://fraud:secret@127.0.0.1:{free_port()}/log")  # nothing listens
    open_store(tmp_path / "not" / "yet" / "p.db")
    assert not (tmp_path / "not").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://fraud:secret@db/log", "mysql://fraud:***@db/log"),
        ("https://example.com/log", "https://example.com/log"),
        # Two slashes: a host, which a SQLite file does not have.
        ("sqlite://logs/predictions.db", "sqlite://logs/predictions.db"),
    ],
)
def test_a_url_of_another_scheme_is_refused_without_its_password(url, shown):
    with pytest.raises(ValueError, match="a prediction log is a SQLite file") as caught:
        open_store(url)
    message = str(caught.value)
    assert message.startswith(f"{shown}: ")
    assert "postgresql://user:password@host:port/database" in message
    assert "secret" not in message


@pytest.mark.parametrize("url", ["", "   "])
def test_an_empty_location_is_refused(url):
    with pytest.raises(ValueError, match="location is empty"):
        open_store(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://fraud:secret@db:5432/log", "postgresql://fraud:***@db:5432/log"),
        ("postgresql://fraud:s%40cr%3At@db/log", "postgresql://fraud:***@db/log"),
        ("postgresql://fraud:p@ss@db/log", "postgresql://fraud:***@db/log"),  # '@' unescaped
        ("postgresql://:secret@db/log", "postgresql://:***@db/log"),
        ("postgresql://fraud:@db/log", "postgresql://fraud:***@db/log"),
        ("postgresql://fraud:secret@DB.example/log?sslmode=require#x", None),
        ("postgresql://fraud:secret@[::1]:5432/log", "postgresql://fraud:***@[::1]:5432/log"),
        # A port that is no number is shown as written (the message is about that URL).
        ("postgresql://fraud:secret@db:port/log", "postgresql://fraud:***@db:port/log"),
        ("postgresql://fraud@db/log", "postgresql://fraud@db/log"),
        ("postgresql://db/log", "postgresql://db/log"),
        ("logs/predictions.db", "logs/predictions.db"),
    ],
)
def test_redact_hides_only_the_password(url, shown):
    if shown is None:  # the host's case, the query and the fragment are kept
        shown = "postgresql://fraud:***@DB.example/log?sslmode=require#x"
    assert redact(url) == shown


# --- SQLite ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "logs" / "predictions.db")
    store.create_schema()  # the folder too
    return store


def test_sqlite_reads_back_what_was_written_in_the_read_columns(sqlite_store):
    assert write(sqlite_store, three_requests()) == 5
    assert sqlite_store.read(None, None) == EXPECTED_ROWS


def test_sqlite_reads_a_half_open_window(sqlite_store):
    check_window(sqlite_store)


def test_sqlite_writing_the_same_entries_again_adds_nothing(sqlite_store):
    check_no_duplicates(sqlite_store)
    with sqlite3.connect(sqlite_store.path) as connection:
        assert connection.execute("SELECT count(*) FROM schemas").fetchone() == (1,)


def test_sqlite_create_schema_twice_keeps_the_rows(sqlite_store):
    write(sqlite_store, three_requests())
    sqlite_store.create_schema()
    assert len(sqlite_store.read(None, None)) == 5


def test_sqlite_a_missing_file_is_not_found_and_not_created(tmp_path):
    store = SqliteStore(tmp_path / "absent.db")
    with pytest.raises(LogNotFoundError) as caught:
        store.read(None, None)
    assert str(caught.value) == f"no prediction log at {store.path}"
    assert not store.path.exists()


@pytest.mark.parametrize("end", [False, True])
def test_a_window_end_without_a_time_zone_is_refused(sqlite_store, end):
    naive = datetime(2026, 11, 30, 12)
    window = (None, naive) if end else (naive, None)
    with pytest.raises(ValueError, match="has no time zone; give window ends in UTC"):
        sqlite_store.read(*window)


@pytest.mark.parametrize(
    ("rows", "probability", "reason"),
    [
        ([[1.0, 2.0, 3.0]], 0.5, "does not have the schema's 2 values"),
        # Not JSON: the database would refuse the whole batch, at every retry.
        ([[1.0, 2.0]], float("nan"), "Out of range float values are not JSON compliant"),
        ([[float("inf"), 2.0]], 0.5, "Out of range float values are not JSON compliant"),
    ],
)
def test_an_entry_that_can_never_be_written_is_a_value_error_and_nothing_is_written(
    sqlite_store, rows, probability, reason
):
    good = entry("good", BASE)
    bad = Entry(BASE.timestamp(), "bad", STAMP, rows, [probability], [True])
    with pytest.raises(ValueError, match=reason):
        write(sqlite_store, [good, bad])
    assert sqlite_store.read(None, None) == []  # the caller can retry the good ones alone


def test_sqlite_a_locked_file_is_a_store_error_naming_it(tmp_path):
    store = SqliteStore(tmp_path / "p.db", busy_timeout=0.02)
    store.create_schema()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        connection = store.connect()
        with pytest.raises(LogStoreError) as caught:
            store.write(connection, [entry("locked", BASE)])
        assert str(caught.value) == f"prediction log {store.path}: database is locked"
        connection.close()
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert store.read(None, None) == []


def test_sqlite_a_file_that_is_not_a_log_is_a_store_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("hello")
    with pytest.raises(LogStoreError, match="is not a readable prediction log") as caught:
        SqliteStore(path).read(None, None)
    assert not isinstance(caught.value, LogNotFoundError)


# --- PostgreSQL (a real server) --------------------------------------------------------


@pytest.fixture
def postgres_store(postgres_url: str) -> PostgresStore:
    store = PostgresStore(postgres_url)
    store.create_schema()
    return store


def test_postgresql_reads_back_exactly_what_sqlite_does(postgres_store):
    assert write(postgres_store, three_requests()) == 5
    # The same rows, value for value and type for type: the monitor cannot tell them apart.
    rows = postgres_store.read(None, None)
    assert rows == EXPECTED_ROWS
    assert [[type(value) for value in row] for row in rows] == [
        [type(value) for value in row] for row in EXPECTED_ROWS
    ]


def test_postgresql_reads_a_half_open_window(postgres_store):
    check_window(postgres_store)


def test_postgresql_writing_the_same_entries_again_adds_nothing(postgres_store, postgres_url):
    check_no_duplicates(postgres_store)
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT count(*) FROM schemas").fetchone() == (1,)


def test_postgresql_without_the_table_is_not_found(postgres_url):
    with pytest.raises(LogNotFoundError, match="has no predictions table yet") as caught:
        PostgresStore(postgres_url).read(None, None)
    assert "secret" not in str(caught.value)
    assert redact(postgres_url) in str(caught.value)


def test_postgresql_a_replica_starting_does_not_wait_for_writes_in_flight(
    postgres_store, postgres_url
):
    """A replica that starts runs create_schema against a live log: it must not queue
    behind (nor block) the other replicas' inserts. CREATE INDEX IF NOT EXISTS on the
    existing table would wait here for the open insert, until the statement timeout."""
    with psycopg.connect(postgres_url) as writer:
        writer.execute("SELECT 1")  # a transaction the insert stays open in
        postgres_store.write(writer, three_requests()[:1])  # not yet committed
        started = time.perf_counter()
        postgres_store.create_schema()
        assert time.perf_counter() - started < 2.0
        writer.commit()
    assert len(postgres_store.read(None, None)) == len(three_requests()[0].rows)


def test_postgresql_create_schema_from_eight_threads_at_once(postgres_url):
    """Replicas that start together each create the tables: none of them fails."""
    store = PostgresStore(postgres_url)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            start.wait(timeout=10)
            store.create_schema()
        except BaseException as error:  # reported below, with the thread's failure
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert write(store, three_requests()) == 5
    assert keys(store.read(None, None)) == keys(EXPECTED_ROWS)


def test_postgresql_a_server_that_is_not_there_is_a_store_error_without_the_password():
    store = PostgresStore(f"postgresql://fraud:secret@127.0.0.1:{free_port()}/log")
    for attempt in (store.connect, store.create_schema, lambda: store.read(None, None)):
        with pytest.raises(LogStoreError) as caught:
            attempt()
        assert not isinstance(caught.value, LogNotFoundError)
        message = str(caught.value)
        assert message.startswith(f"prediction log {store.location}: ")
        assert "secret" not in message
        assert "\n" not in message


def test_postgresql_a_wrong_password_is_a_store_error_without_it(
    postgres_server: PostgresServer, postgres_url: str
):
    wrong = postgres_url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(LogStoreError, match="password authentication failed") as caught:
        PostgresStore(wrong).connect()
    assert "not-the-password" not in str(caught.value)


def test_postgresql_a_broken_connection_is_a_store_error(postgres_store):
    connection = postgres_store.connect()
    connection.close()
    with pytest.raises(LogStoreError) as caught:
        postgres_store.write(connection, [entry("late", BASE)])
    assert str(caught.value).startswith(f"prediction log {postgres_store.location}: ")
    assert postgres_store.read(None, None) == []


# --- shared checks ---------------------------------------------------------------------


def check_window(store: LogStore) -> None:
    write(store, three_requests())
    # [start, end): the start is in, the end is out.
    assert keys(store.read(minutes(10), minutes(20))) == [("batch", 0), ("batch", 1), ("batch", 2)]
    assert keys(store.read(minutes(10), None)) == [
        ("batch", 0),
        ("batch", 1),
        ("batch", 2),
        ("last", 0),
    ]
    assert keys(store.read(None, minutes(10))) == [("first", 0)]
    assert store.read(minutes(21), None) == []
    # Window ends in another time zone mean the same instant.
    paris = minutes(10).astimezone(ZoneInfo("Europe/Paris"))
    assert keys(store.read(paris, minutes(11))) == keys(store.read(minutes(10), minutes(11)))


def minutes(count: int) -> datetime:
    return BASE + timedelta(minutes=count)


def check_no_duplicates(store: LogStore) -> None:
    entries = three_requests()
    assert write(store, entries) == 5
    # A writer that lost its connection mid-commit retries the whole batch: no row twice,
    # whether the batch is the same, a part of it, or it comes on a new connection.
    write(store, entries)
    write(store, entries[1:2])
    connection = store.connect()
    try:
        store.write(connection, entries)
        store.write(connection, entries)
    finally:
        connection.close()
    assert store.read(None, None) == EXPECTED_ROWS
    # The same request id at another moment is another prediction, not a repeat.
    again = entry("first", BASE + timedelta(microseconds=1))
    write(store, [again])
    assert keys(store.read(None, None)).count(("first", 0)) == 2


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@h:abc/db", "postgres://u:hunter2@h:5x/db"])
def test_a_port_that_is_not_a_number_is_refused_at_once_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="the port is not a number") as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    assert ":***@" in str(caught.value)
