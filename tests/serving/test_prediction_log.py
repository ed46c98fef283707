"""The prediction log: one row per prediction served, none lost (shutdown, concurrency,
a locked database, a PostgreSQL restart), none twice. Before answering (the default) a
prediction is committed when its answer arrives, or refused with 503 and never logged;
in the background the request path never waits on the store."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fraud_detection.io.prediction_log import (
    READ_COLUMNS,
    Entry,
    LogStore,
    LogStoreError,
    ModelStamp,
    SqliteStore,
    open_store,
    redact,
)
from monitoring.prediction_log import read_predictions
from serving import prediction_log
from serving.prediction_log import LogUnavailableError, PredictionLog
from serving.state import state_of

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


async def write_together(log: PredictionLog, entries: list[Entry]) -> list[BaseException | None]:
    """``log.write`` of each entry at once, as concurrent requests do; what each got."""
    results: list[BaseException | None] = await asyncio.gather(
        *(log.write(item) for item in entries), return_exceptions=True
    )
    return results


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "predictions.db"


@pytest.fixture
def log(path: Path):
    log = PredictionLog(SqliteStore(path))
    yield log
    log.close()


def test_rows_hold_what_was_predicted(log, path):
    before = datetime.now(UTC)
    log.start()
    log.record(entry("one"))
    log.record(entry("batch", rows=3))
    log.close()
    assert (log.rows_written, log.pending_rows, log.write_failures) == (4, 0, 0)

    rows = read(path)
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
    schemas = read(path, "SELECT * FROM schemas")
    assert [tuple(row) for row in schemas] == [(STAMP.schema_fingerprint, STAMP.schema_json)]


def test_start_creates_the_folder_and_tables_without_any_prediction(log, path):
    log.start()
    log.close()
    tables = read(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {row["name"] for row in tables} == {"predictions", "schemas"}
    assert read(path) == []


def test_close_is_safe_before_start_and_twice(log):
    log.close()
    log.start()
    log.close()
    log.close()


def test_restarting_appends_to_the_same_file(tmp_path):
    for request_id in ("first", "second"):
        log = PredictionLog(SqliteStore(tmp_path / "p.db"))
        log.start()
        log.record(entry(request_id))
        log.close()
    assert [row["request_id"] for row in read(tmp_path / "p.db")] == ["first", "second"]


def test_a_log_older_than_the_model_fingerprint_gains_the_column(tmp_path):
    """A file written before ``model_fingerprint`` existed keeps its rows ('' there) and
    takes new rows with the stamp's fingerprint."""
    path = tmp_path / "p.db"
    log = PredictionLog(SqliteStore(path))
    log.start()
    log.record(entry("old"))
    log.close()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE predictions DROP COLUMN model_fingerprint")
    log = PredictionLog(SqliteStore(path))
    log.start()
    log.record(entry("new"))
    log.close()
    rows = [(row["request_id"], row["model_fingerprint"]) for row in read(path)]
    assert rows == [("old", ""), ("new", "feedfacecafebeef")]


def test_close_drains_everything_queued(log, path):
    log.start()
    for index in range(150):
        log.record(entry(f"r{index}", rows=100))
    assert log.pending_rows > 0  # most of it is still queued...
    log.close()
    # ... and all of it is on disk when close returns.
    assert log.rows_written == 15_000
    assert log.pending_rows == 0
    counts = read(path, "SELECT count(*), count(DISTINCT request_id) FROM predictions")
    assert tuple(counts[0]) == (15_000, 150)


def test_concurrent_writers_lose_nothing(log, path):
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
    found = Counter(row["request_id"] for row in read(path))
    assert found == expected
    assert log.rows_written == sum(expected.values())
    assert log.pending_rows == 0


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer retries a failed write every 50 ms (not 0.5 s)."""
    monkeypatch.setattr(prediction_log, "_RETRY_SECONDS", 0.05)


def outage(log: PredictionLog) -> str | None:
    """``log.outage`` now (a call: mypy would keep an earlier assertion's narrowing)."""
    return log.outage


def retrying(store: str) -> str:
    return f"{store}; keeping the rows and retrying every 0.05 s"


def back(store: object) -> str:
    return f"prediction log {store} is back; writing again"


@pytest.mark.usefixtures("quick_retries")
def test_a_locked_database_is_retried_until_it_clears(path, caplog):
    # The writer gives up on a lock after 20 ms (not 30 s), then retries.
    log = PredictionLog(SqliteStore(path, busy_timeout=0.02), commit="background")
    log.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):

            async def answer_all() -> None:
                for index in range(100):
                    log.record(entry(f"r{index}", rows=2))
                for index in range(100, 200):
                    await log.write(entry(f"r{index}", rows=2))

            started = time.perf_counter()
            asyncio.run(answer_all())
            # The request path only queues (record, or write in the background): it never
            # waits for the lock.
            assert time.perf_counter() - started < 0.5
            wait_for(lambda: log.write_failures >= 3)
            assert log.rows_written == 0
            assert log.pending_rows == 400
            assert outage(log) == f"prediction log {path}: database is locked"
            count = blocker.execute("SELECT count(*) FROM predictions").fetchone()[0]
            assert count == 0
            blocker.execute("COMMIT")
            wait_for(lambda: log.rows_written == 400)
    finally:
        if blocker.in_transaction:
            blocker.execute("COMMIT")
        blocker.close()
    log.close()
    # Warned once for the whole outage, and once when it ended.
    assert caplog.text.count(retrying(f"prediction log {path}: database is locked")) == 1
    assert caplog.text.count(back(path)) == 1
    found = Counter(row["request_id"] for row in read(path))
    assert found == {f"r{index}": 2 for index in range(200)}  # each row once
    assert (log.pending_rows, log.rows_withdrawn) == (0, 0)
    assert outage(log) is None


@pytest.mark.usefixtures("quick_retries")
def test_close_waits_for_a_lock_to_clear(path):
    log = PredictionLog(SqliteStore(path, busy_timeout=0.02))
    log.start()
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    log.record(entry("late", rows=5))
    wait_for(lambda: log.write_failures >= 1)
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    log.close(timeout=15)  # returns once the lock clears and the rows are written
    release.join()
    blocker.close()
    assert [row["request_id"] for row in read(path)] == ["late"] * 5


@pytest.mark.parametrize(
    ("rows", "probability"),
    [([[1.0, 2.0, 3.0]], 0.5), ([[1.0, 2.0]], float("nan"))],
    ids=["three values", "NaN probability"],
)
def test_a_malformed_entry_is_reported_and_the_writer_keeps_going(
    log, path, caplog, rows, probability
):
    log.start()
    broken = Entry(time.time(), "broken", STAMP, rows, [probability], [True])
    with caplog.at_level(logging.ERROR, logger="serving.prediction_log"):
        log.record(broken)
        wait_for(lambda: log.write_failures == 1)
        # A request waiting for it gets the error (a 500), the others in its batch their
        # commit.
        results = asyncio.run(write_together(log, [entry("before"), broken, entry("beside")]))
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)
    assert caplog.text.count("prediction log: request broken cannot be logged") == 2
    assert log.write_failures == 2
    assert log.outage is None  # a bad entry is not a store outage
    log.record(entry("after"))
    log.close()
    assert [row["request_id"] for row in read(path)] == ["before", "beside", "after"]


# --- before answering: group commit ---------------------------------------------------


class GatedStore:
    """A SQLite store whose writes are recorded and wait for ``gate``."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)
        self.location, self.remote = self.inner.location, False
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def create_schema(self) -> None:
        self.inner.create_schema()

    def connect(self) -> sqlite3.Connection:
        return self.inner.connect()

    def write(self, connection: sqlite3.Connection, entries: Sequence[Entry]) -> int:
        self.batches.append([item.request_id for item in entries])
        assert self.gate.wait(timeout=10), "the test never opened the gate"
        return self.inner.write(connection, entries)

    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
        return self.inner.read(start, end)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_requests_wait_for_their_commit_and_those_waiting_share_the_next_one(path):
    store = GatedStore(path)
    log = PredictionLog(store)
    log.start()

    async def requests() -> None:
        first = asyncio.create_task(log.write(entry("first")))
        await wait_until(lambda: store.batches == [["first"]])  # being written, held
        others = [asyncio.create_task(log.write(entry(f"r{i}", rows=2))) for i in range(9)]
        await wait_until(lambda: log.pending_rows == 1 + 18)
        await asyncio.sleep(0.05)
        # Nobody has an answer: every request waits for its rows' commit.
        assert not any(task.done() for task in [first, *others])
        assert read(path) == []
        store.gate.set()
        await asyncio.wait_for(first, 10)
        assert "first" in {row["request_id"] for row in read(path)}
        await asyncio.wait_for(asyncio.gather(*others), 10)
        assert len(read(path)) == 19  # all committed when the last answer arrives

    asyncio.run(requests())
    log.close()
    # The nine that queued while the first was written went in one transaction.
    assert store.batches == [["first"], [f"r{i}" for i in range(9)]]
    assert (log.rows_written, log.pending_rows, log.rows_withdrawn) == (19, 0, 0)


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("busy_timeout", [0.02, 1.0])
def test_a_request_whose_rows_cannot_be_committed_in_time_is_refused_and_never_logged(
    path, caplog, busy_timeout
):
    """503 after timeout_seconds, whether its rows wait in the queue (the store fails
    fast) or are being written when the time is up (a write that hangs on the lock longer
    than the request may wait, and then fails)."""
    log = PredictionLog(SqliteStore(path, busy_timeout=busy_timeout), timeout_seconds=0.3)
    log.start()
    asyncio.run(log.write(entry("before")))
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    # Whatever happens, the lock goes after 8 s: a request that hangs fails the test.
    release = threading.Timer(8.0, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
            started = time.monotonic()
            with pytest.raises(LogUnavailableError) as caught:
                asyncio.run(log.write(entry("refused", rows=3)))
            waited = time.monotonic() - started
            assert 0.3 <= waited < 0.3 + busy_timeout + 1.0
            assert str(caught.value) == (
                f"prediction log unavailable, prediction not served: prediction log {path}: "
                "database is locked (waited 0.3 s, SERVING_LOG_TIMEOUT_SECONDS); retry later"
            )
            assert (log.rows_withdrawn, log.pending_rows) == (3, 0)
            release.cancel()
            blocker.execute("COMMIT")
            asyncio.run(log.write(entry("after")))  # the writer recovered by itself
    finally:
        release.cancel()
        if blocker.in_transaction:
            blocker.execute("COMMIT")
        blocker.close()
    log.close()
    assert [row["request_id"] for row in read(path)] == ["before", "after"]
    assert caplog.text.count(back(path)) == 1
    assert log.outage is None


def test_a_request_gets_a_503_when_the_writer_never_started(path):
    log = PredictionLog(SqliteStore(path), timeout_seconds=0.05)
    with pytest.raises(LogUnavailableError, match="the store is slow to commit"):
        asyncio.run(log.write(entry("lost")))
    assert (log.rows_withdrawn, log.pending_rows) == (1, 0)


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


def impatient(app: FastAPI) -> Path:
    """The app's SQLite log gives up on a lock after 20 ms (not 30 s); its path."""
    store = state_of(app).log.store
    assert isinstance(store, SqliteStore)
    store.busy_timeout = 0.02  # read when the writer connects, after start-up
    return store.path


def logged_ids(path: Path) -> list[tuple[str, int]]:
    rows = read(path, "SELECT request_id, row_index FROM predictions ORDER BY id")
    return [(row["request_id"], row["row_index"]) for row in rows]


def test_before_answering_every_answered_prediction_is_in_the_file(make_app, served, tmp_path):
    path = tmp_path / "predictions.db"
    app = make_app()
    with TestClient(app) as client:
        assert state_of(app).log.commit_mode == "before_answer"  # the default
        for index in range(3):
            rid = f"single-{index}"
            response = client.post("/predict", json=served.legit_row, headers={"X-Request-ID": rid})
            assert response.status_code == 200
            # Read right after the answer, the service still running: already committed.
            assert logged_ids(path)[-1] == (rid, 0)
        rows = {"transactions": [served.fraud_row, served.legit_row, served.legit_row]}
        response = client.post("/predict/batch", json=rows, headers={"X-Request-ID": "batch"})
        assert response.status_code == 200
        assert logged_ids(path)[-3:] == [("batch", 0), ("batch", 1), ("batch", 2)]

        # Concurrent requests (committed together): each is in the file when answered.
        missing: list[str] = []

        def one(rid: str) -> None:
            answer = client.post("/predict", json=served.legit_row, headers={"X-Request-ID": rid})
            assert answer.status_code == 200
            if (rid, 0) not in logged_ids(path):
                missing.append(rid)

        workers = [threading.Thread(target=one, args=(f"c{n}",)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert missing == []
        assert len(logged_ids(path)) == 3 + 3 + 8
    assert Counter(logged_ids(path)).most_common(1)[0][1] == 1  # and none twice


@pytest.mark.usefixtures("quick_retries")
def test_a_store_that_fails_makes_predictions_503_until_it_is_back(
    make_app, served, tmp_path, caplog
):
    app = make_app(log_timeout_seconds=0.3)
    path = impatient(app)
    with TestClient(app) as client:
        assert client.post("/predict", json=served.legit_row).status_code == 200
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
                for endpoint, body in [
                    ("/predict", served.legit_row),
                    ("/predict/batch", {"transactions": [served.legit_row] * 4}),
                ]:
                    started = time.monotonic()
                    response = client.post(endpoint, json=body, headers={"X-Request-ID": "no"})
                    assert 0.3 <= time.monotonic() - started < 3.0
                    assert response.status_code == 503
                    detail = response.json()["detail"]
                    assert detail.startswith("prediction log unavailable, prediction not served")
                    assert f"prediction log {path}: database is locked" in detail
                    assert "SERVING_LOG_TIMEOUT_SECONDS" in detail
                ready = client.get("/ready")
                assert ready.status_code == 200  # the model is fine; the answer says why
                assert ready.json()["prediction_log"] == (
                    f"unavailable: prediction log {path}: database is locked"
                )
                blocker.execute("COMMIT")
                # Back by itself: the next prediction is served (and logged).
                response = client.post(
                    "/predict", json=served.legit_row, headers={"X-Request-ID": "yes"}
                )
                assert response.status_code == 200
                assert logged_ids(path)[-1] == ("yes", 0)
                assert client.get("/ready").json()["prediction_log"] == "ok"
        finally:
            if blocker.in_transaction:
                blocker.execute("COMMIT")
            blocker.close()
        log = state_of(app).log
        assert (log.rows_withdrawn, log.pending_rows) == (5, 0)
        metrics = client.get("/metrics").text
    assert caplog.text.count(back(path)) == 1
    # The refused requests were not predictions: nothing of them was logged, then or later.
    assert [rid for rid, _ in logged_ids(path)][1:] == ["yes"]
    assert 'fraud_predictions_total{decision="legit"} 2.0' in metrics


@pytest.mark.usefixtures("quick_retries")
def test_in_the_background_answers_do_not_wait_for_the_store(make_app, served, tmp_path):
    app = make_app(log_commit="background", log_timeout_seconds=0.3)
    path = impatient(app)
    with TestClient(app) as client:
        log = state_of(app).log
        assert client.post("/predict", json=served.legit_row).status_code == 200
        wait_for(lambda: len(logged_ids(path)) == 1)  # written within 0.1 s
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for index in range(4):
                response = client.post(
                    "/predict", json=served.legit_row, headers={"X-Request-ID": f"bg-{index}"}
                )
                assert response.status_code == 200  # before_answer would be 503 here
            rows = {"transactions": [served.legit_row] * 3}
            response = client.post("/predict/batch", json=rows, headers={"X-Request-ID": "bg"})
            assert response.status_code == 200
            wait_for(lambda: log.write_failures >= 1)
            time.sleep(0.4)  # past log_timeout_seconds: nothing is given up in the background
            assert len(logged_ids(path)) == 1  # answered, not yet written
            assert (log.pending_rows, log.rows_withdrawn) == (7, 0)
        finally:
            blocker.execute("COMMIT")
            blocker.close()
    # Leaving the client drains the log: everything answered is there, once.
    assert sorted(logged_ids(path)[1:]) == sorted(
        [(f"bg-{index}", 0) for index in range(4)] + [("bg", index) for index in range(3)]
    )


# --- PostgreSQL (a real server, tests/postgres.py) ------------------------------------


def postgres_ids(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url, connect_timeout=3) as connection:
        rows = connection.execute("SELECT request_id, row_index FROM predictions ORDER BY id")
        return [(request_id, row_index) for request_id, row_index in rows]


def test_the_service_logs_to_postgresql_and_the_monitor_reads_it_back(
    make_app, served, postgres_server, postgres_url, caplog
):
    answered: list[tuple[str, int, float]] = []
    started = datetime.now(UTC)
    with caplog.at_level(logging.INFO), TestClient(make_app(prediction_log=postgres_url)) as client:
        assert client.get("/ready").json()["prediction_log"] == "ok"
        for index in range(3):
            rid = f"pg-{index}"
            row = {**served.legit_row, "TX_AMOUNT": 10.0 + index}
            response = client.post("/predict", json=row, headers={"X-Request-ID": rid})
            assert response.status_code == 200
            assert postgres_ids(postgres_url)[-1] == (rid, 0)  # committed before the answer
            answered.append((rid, 0, response.json()["probability"]))
        rows = {"transactions": [served.fraud_row, served.legit_row]}
        response = client.post("/predict/batch", json=rows, headers={"X-Request-ID": "pg-b"})
        assert response.status_code == 200
        assert postgres_ids(postgres_url)[-2:] == [("pg-b", 0), ("pg-b", 1)]
        for index, prediction in enumerate(response.json()["predictions"]):
            answered.append(("pg-b", index, prediction["probability"]))
        model = client.get("/model").json()
    assert postgres_server.password not in caplog.text

    logged = read_predictions(postgres_url, served.schema, start=started)
    frame = logged.frame
    read_back = zip(frame["request_id"], frame["row_index"], frame["probability"], strict=True)
    assert list(read_back) == answered
    assert frame["TX_AMOUNT"].tolist()[:3] == [10.0, 11.0, 12.0]
    assert logged.model_versions == ["local"]
    assert set(frame["model_fingerprint"]) == {model["model_fingerprint"] or ""}
    assert (logged.rows_in_window, logged.other_schema_rows, logged.unreadable_rows) == (5, 0, 0)
    later = read_predictions(postgres_url, served.schema, start=datetime.now(UTC))
    assert later.rows_in_window == 0


@pytest.mark.usefixtures("quick_retries")
def test_a_postgresql_log_down_at_start_up_gives_503_until_the_server_is_up(
    make_app, served, postgres_server, postgres_url, caplog
):
    postgres_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
            app = make_app(prediction_log=postgres_url, log_timeout_seconds=0.3)
            location = state_of(app).log.store.location
            assert location == redact(postgres_url)
            with TestClient(app) as client:  # starts: the log's server is only waited for
                assert f"{location}: " in caplog.text
                assert "predictions wait for it (503 after 0.3 s)" in caplog.text
                ready = client.get("/ready")
                assert ready.status_code == 200
                assert ready.json()["prediction_log"].startswith(
                    f"unavailable: prediction log {location}: "
                )
                response = client.post(
                    "/predict", json=served.legit_row, headers={"X-Request-ID": "down"}
                )
                assert response.status_code == 503
                detail = response.json()["detail"]
                assert detail.startswith("prediction log unavailable, prediction not served")
                assert f"prediction log {location}: " in detail

                postgres_server.start()
                deadline = time.monotonic() + 10
                while True:  # back by itself, within a retry or two
                    response = client.post(
                        "/predict", json=served.legit_row, headers={"X-Request-ID": "up"}
                    )
                    if response.status_code == 200:
                        break
                    assert response.status_code == 503
                    assert time.monotonic() < deadline, "the log never came back"
                assert client.get("/ready").json()["prediction_log"] == "ok"
    finally:
        if not postgres_server.running:
            postgres_server.start()
    assert back(location) in caplog.text
    assert postgres_server.password not in caplog.text + detail
    # Only the prediction answered 200 is in the log.
    assert postgres_ids(postgres_url) == [("up", 0)]


class LostAnswerStore:
    """A store whose first write commits, then fails as if the connection broke before
    the commit was acknowledged: the writer cannot know the rows are in."""

    def __init__(self, inner: LogStore) -> None:
        self.inner = inner
        self.location, self.remote = inner.location, inner.remote
        self.writes = 0

    def create_schema(self) -> None:
        self.inner.create_schema()

    def connect(self) -> Any:
        return self.inner.connect()

    def write(self, connection: Any, entries: Sequence[Entry]) -> int:
        self.writes += 1
        rows = self.inner.write(connection, entries)
        if self.writes == 1:
            raise LogStoreError(f"prediction log {self.location}: connection lost")
        return rows

    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
        return self.inner.read(start, end)


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_commit_whose_answer_was_lost_is_retried_without_a_duplicate(request, tmp_path, kind):
    location = (
        request.getfixturevalue("postgres_url") if kind == "postgresql" else tmp_path / "p.db"
    )
    store = LostAnswerStore(open_store(location))
    log = PredictionLog(store)
    log.start()
    results = asyncio.run(write_together(log, [entry("a"), entry("b", rows=3)]))
    log.close()
    assert results == [None, None]
    assert store.writes >= 2  # the batch was written again
    assert Counter(keys_of(store.read(None, None))) == {
        ("a", 0): 1,
        ("b", 0): 1,
        ("b", 1): 1,
        ("b", 2): 1,
    }
    assert (log.rows_written, log.write_failures) == (4, 1)


def keys_of(rows: list[tuple[Any, ...]]) -> list[tuple[str, int]]:
    index = READ_COLUMNS.index("request_id")
    return [(row[index], row[index + 1]) for row in rows]


@pytest.mark.usefixtures("quick_retries")
def test_a_postgresql_restart_loses_and_repeats_no_committed_row(
    postgres_server, postgres_url, caplog
):
    """Four writers commit without pause; the server is stopped the hard way (immediate
    shutdown: no checkpoint, crash recovery at the next start) and started again on the
    same port and data. Every answered entry is in the log exactly once."""
    log = PredictionLog(open_store(postgres_url), timeout_seconds=8.0)
    log.start()
    committed: list[Entry] = []
    refused: list[Entry] = []
    stop = threading.Event()

    async def writer(number: int) -> None:
        index = 0
        while not stop.is_set():
            item = entry(f"w{number}-{index}", rows=1 + index % 3)
            index += 1
            try:
                await log.write(item)
            except LogUnavailableError:
                refused.append(item)
            else:
                committed.append(item)

    async def writers() -> None:
        await asyncio.gather(*(writer(number) for number in range(4)))

    thread = threading.Thread(target=asyncio.run, args=(writers(),), daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
            thread.start()
            wait_for(lambda: len(committed) >= 100, timeout=10)
            postgres_server.stop("immediate")
            wait_for(lambda: log.outage is not None, timeout=10)
            time.sleep(0.3)  # writes keep failing meanwhile; the rows wait
            before = len(committed)
            postgres_server.start()
            wait_for(lambda: len(committed) >= before + 100, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=15)
        log.close(timeout=15)
    assert not thread.is_alive()
    assert refused == []  # the restart took less than the requests may wait
    assert log.write_failures >= 1
    assert back(log.store.location) in caplog.text
    expected = Counter(
        {(item.request_id, row): 1 for item in committed for row in range(len(item.rows))}
    )
    assert Counter(postgres_ids(postgres_url)) == expected
    assert log.rows_written == sum(expected.values())
    assert log.pending_rows == 0
