"""The prediction log: one row per prediction served, none lost (shutdown, concurrency,
a locked database), and the request path never waits on the disk."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving import prediction_log
from serving.prediction_log import Entry, ModelStamp, PredictionLog

STAMP = ModelStamp(
    name="fraud-detector",
    version="3",
    schema_fingerprint="0123456789abcdef",
    schema_json='{"features": ["a", "b"]}',
    feature_names=("a", "b"),
    threshold=0.25,
    fingerprint="feedfacecafebeef",
)


def entry(request_id: str, rows: int = 1) -> Entry:
    values = [[float(i), i * 0.5] for i in range(rows)]
    probabilities = [min(1.0, 0.1 * i) for i in range(rows)]
    return Entry(
        time.time(), request_id, STAMP, values, probabilities, [p >= 0.25 for p in probabilities]
    )


def read(path: Path, sql: str = "SELECT * FROM predictions ORDER BY id") -> list[sqlite3.Row]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        return list(connection.execute(sql))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def log(tmp_path: Path):
    log = PredictionLog(tmp_path / "logs" / "predictions.db")
    yield log
    log.close()


def test_rows_hold_what_was_predicted(log):
    before = datetime.now(UTC)
    log.start()
    log.record(entry("one"))
    log.record(entry("batch", rows=3))
    log.close()
    assert (log.rows_written, log.pending_rows, log.write_failures) == (4, 0, 0)

    rows = read(log.path)
    assert [(r["request_id"], r["row_index"]) for r in rows] == [
        ("one", 0),
        ("batch", 0),
        ("batch", 1),
        ("batch", 2),
    ]
    last = rows[-1]
    # Values in the order of the stamp's feature names.
    assert json.loads(last["features"]) == [2.0, 1.0]
    assert last["probability"] == pytest.approx(0.2)
    assert last["is_fraud"] == 0
    assert rows[0]["is_fraud"] == 0
    assert (last["model_name"], last["model_version"]) == ("fraud-detector", "3")
    assert last["schema_fingerprint"] == STAMP.schema_fingerprint
    assert last["threshold"] == 0.25
    logged_at = datetime.fromisoformat(last["logged_at"])
    assert logged_at.tzinfo is not None
    assert before <= logged_at <= datetime.now(UTC)
    schemas = read(log.path, "SELECT * FROM schemas")
    assert [tuple(row) for row in schemas] == [(STAMP.schema_fingerprint, STAMP.schema_json)]


def test_start_creates_the_folder_and_tables_without_any_prediction(log):
    log.start()
    log.close()
    tables = read(log.path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {row["name"] for row in tables} == {"predictions", "schemas"}
    assert read(log.path) == []


def test_close_is_safe_before_start_and_twice(log):
    log.close()
    log.start()
    log.close()
    log.close()


def test_restarting_appends_to_the_same_file(tmp_path):
    for request_id in ("first", "second"):
        log = PredictionLog(tmp_path / "p.db")
        log.start()
        log.record(entry(request_id))
        log.close()
    assert [row["request_id"] for row in read(tmp_path / "p.db")] == ["first", "second"]


def test_a_log_older_than_the_model_fingerprint_gains_the_column(tmp_path):
    """A file written before ``model_fingerprint`` existed keeps its rows ('' there) and
    takes new rows with the stamp's fingerprint."""
    path = tmp_path / "p.db"
    log = PredictionLog(path)
    log.start()
    log.record(entry("old"))
    log.close()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE predictions DROP COLUMN model_fingerprint")
    log = PredictionLog(path)
    log.start()
    log.record(entry("new"))
    log.close()
    rows = [(row["request_id"], row["model_fingerprint"]) for row in read(path)]
    assert rows == [("old", ""), ("new", "feedfacecafebeef")]


def test_close_drains_everything_queued(log):
    log.start()
    for index in range(150):
        log.record(entry(f"r{index}", rows=100))
    assert log.pending_rows > 0  # most of it is still queued...
    log.close()
    # ... and all of it is on disk when close returns.
    assert log.rows_written == 15_000
    assert log.pending_rows == 0
    counts = read(log.path, "SELECT count(*), count(DISTINCT request_id) FROM predictions")
    assert tuple(counts[0]) == (15_000, 150)


def test_concurrent_writers_lose_nothing(log):
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)
    log.start()

    def work(worker: int) -> None:
        start.wait()
        for index in range(per_thread):
            log.record(entry(f"w{worker}-{index}", rows=1 + index % 3))

    workers = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    log.close()

    expected = {f"w{w}-{i}": 1 + i % 3 for w in range(threads) for i in range(per_thread)}
    found = Counter(row["request_id"] for row in read(log.path))
    assert found == expected
    assert log.rows_written == sum(expected.values())
    assert log.pending_rows == 0


@pytest.fixture
def impatient_sqlite(monkeypatch):
    """The writer gives up on a lock after 20 ms (not 30 s) and retries every 50 ms."""
    connect = prediction_log._connect

    def connect_impatiently(path: Path) -> sqlite3.Connection:
        connection = connect(path)
        connection.execute("PRAGMA busy_timeout = 20")
        return connection

    monkeypatch.setattr(prediction_log, "_connect", connect_impatiently)
    monkeypatch.setattr(prediction_log, "_RETRY_SECONDS", 0.05)


@pytest.mark.usefixtures("impatient_sqlite")
def test_a_locked_database_is_retried_until_it_clears(log, caplog):
    log.start()
    blocker = sqlite3.connect(log.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        started = time.perf_counter()
        for index in range(200):
            log.record(entry(f"r{index}", rows=2))
        # The request path only queues: it never waits for the lock.
        assert time.perf_counter() - started < 0.5
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
            wait_for(lambda: log.write_failures >= 3)
        assert log.rows_written == 0
        assert log.pending_rows == 400
        count = blocker.execute("SELECT count(*) FROM predictions").fetchone()[0]
        assert count == 0
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    wait_for(lambda: log.rows_written == 400)
    log.close()
    assert "write failed (database is locked); retrying" in caplog.text
    found = Counter(row["request_id"] for row in read(log.path))
    assert found == {f"r{index}": 2 for index in range(200)}  # each row once
    assert log.pending_rows == 0


@pytest.mark.usefixtures("impatient_sqlite")
def test_close_waits_for_a_lock_to_clear(log):
    log.start()
    blocker = sqlite3.connect(log.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    log.record(entry("late", rows=5))
    wait_for(lambda: log.write_failures >= 1)
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    log.close(timeout=15)  # returns once the lock clears and the rows are written
    release.join()
    blocker.close()
    assert [row["request_id"] for row in read(log.path)] == ["late"] * 5


def test_a_malformed_entry_is_reported_and_the_writer_keeps_going(log, caplog):
    log.start()
    broken = Entry(time.time(), "broken", STAMP, [[1.0, 2.0, 3.0]], [0.5], [True])  # 3 values
    with caplog.at_level(logging.ERROR, logger="serving.prediction_log"):
        log.record(broken)
        wait_for(lambda: log.write_failures == 1)
    assert "entries could not be written" in caplog.text
    log.record(entry("after"))
    log.close()
    assert [row["request_id"] for row in read(log.path)] == ["after"]


# --- through the service ---------------------------------------------------------------


def test_every_prediction_served_is_logged_once(make_app, served, tmp_path):
    sent: list[tuple[str, int, dict[str, Any], float]] = []
    with TestClient(make_app()) as client:
        for index in range(5):
            row = {**served.legit_row, "TX_AMOUNT": 10.0 + index}
            rid = f"single-{index}"
            body = client.post("/predict", json=row, headers={"X-Request-ID": rid}).json()
            sent.append((rid, 0, row, body["probability"]))
        rows = [served.fraud_row, served.legit_row, {**served.legit_row, "TX_AMOUNT": 1.5}]
        body = client.post("/predict/batch", json={"transactions": rows}).json()
        for index, (row, prediction) in enumerate(zip(rows, body["predictions"], strict=True)):
            sent.append((body["request_id"], index, row, prediction["probability"]))
        # Refused requests are not predictions: nothing is logged for them.
        assert client.post("/predict", json={}).status_code == 422
        assert client.post("/predict/batch", json={"transactions": []}).status_code == 422
        model = client.get("/model").json()
    # Leaving the client shuts the app down: the log is drained.

    logged = read(tmp_path / "predictions.db")
    assert len(logged) == len(sent) == 8
    for record, (rid, index, row, probability) in zip(logged, sent, strict=True):
        assert (record["request_id"], record["row_index"]) == (rid, index)
        # An array in schema order; the names come from the schemas table.
        assert json.loads(record["features"]) == [row[name] for name in served.schema.names]
        assert record["probability"] == probability
        assert record["is_fraud"] == int(probability >= 0.5)
        assert (record["model_name"], record["model_version"]) == ("model", "local")
        assert record["schema_fingerprint"] == model["schema_fingerprint"]
        assert record["model_fingerprint"] == (model["model_fingerprint"] or "")
        assert record["threshold"] == 0.5
    schemas = read(tmp_path / "predictions.db", "SELECT * FROM schemas")
    assert len(schemas) == 1
    assert json.loads(schemas[0]["feature_schema"]) == model["feature_schema"]
    names = [feature["name"] for feature in model["feature_schema"]["features"]]
    assert names == served.schema.names


def test_the_log_folder_is_created(make_app, served, tmp_path):
    path = tmp_path / "deep" / "er" / "log.db"
    with TestClient(make_app(prediction_log=path)) as client:
        assert client.post("/predict", json=served.legit_row).status_code == 200
    assert len(read(path)) == 1
