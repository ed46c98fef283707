"""The monitor reads what the service writes: the prediction log is their only contract,
so these tests write it with the service's own writer."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.io.prediction_log import Entry, SqliteStore
from fraud_detection.schema import Feature, FeatureSchema
from monitoring.baseline import free_port
from monitoring.prediction_log import MonitorInputError, read_predictions
from serving.prediction_log import PredictionLog
from tests.monitoring.conftest import model_stamp as stamp

SCHEMA = FeatureSchema(
    source="csv",
    target="y",
    features=[
        Feature(name="amount", kind="numeric"),
        Feature(name="channel", kind="categorical", categories=["web", "shop"]),
    ],
)
OTHER = FeatureSchema(source="csv", target="y", features=[Feature(name="amount", kind="numeric")])


def write(path: Path, entries: list[Entry]) -> None:
    log = PredictionLog(SqliteStore(path), commit="background", gather_seconds=0.0)
    log.start()
    for entry in entries:
        log.record(entry)
    log.close()


def entry(
    request_id: str,
    at: float,
    rows: list[list[object]],
    schema: FeatureSchema = SCHEMA,
    version: str = "3",
) -> Entry:
    return Entry(
        at, request_id, stamp(schema, version), rows, [0.25] * len(rows), [False] * len(rows)
    )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "predictions.db"


def test_rows_come_back_as_a_frame_with_the_schema_columns(log_path):
    now = time.time()
    write(
        log_path,
        [
            entry("one", now, [[12.5, "web"]]),
            entry("batch", now, [[3.0, "shop"], [7.0, "phone"]], version="4"),
        ],
    )
    logged = read_predictions(log_path, SCHEMA)
    frame = logged.frame
    assert list(frame.columns) == [
        "logged_at",
        "request_id",
        "row_index",
        "model_version",
        "model_fingerprint",
        "amount",
        "channel",
        "probability",
        "is_fraud",
    ]
    assert frame["amount"].tolist() == [12.5, 3.0, 7.0]
    assert frame["channel"].tolist() == ["web", "shop", "phone"]
    assert frame["request_id"].tolist() == ["one", "batch", "batch"]
    assert frame["row_index"].tolist() == [0, 0, 1]
    assert frame["amount"].dtype == "float64"
    assert isinstance(frame["logged_at"].dtype, pd.DatetimeTZDtype)
    assert logged.model_versions == ["3", "4"]
    assert (logged.rows_in_window, logged.other_schema_rows, logged.unreadable_rows) == (3, 0, 0)


def test_the_window_is_half_open_and_in_utc(log_path):
    base = datetime(2026, 11, 30, 12, tzinfo=UTC)
    write(
        log_path,
        [
            entry(f"at-{minutes}", (base + timedelta(minutes=minutes)).timestamp(), [[1.0, "web"]])
            for minutes in (0, 10, 20)
        ],
    )
    window = read_predictions(
        log_path, SCHEMA, start=base + timedelta(minutes=10), end=base + timedelta(minutes=20)
    )
    assert window.frame["request_id"].tolist() == ["at-10"]
    assert read_predictions(log_path, SCHEMA, start=base).rows_in_window == 3
    with pytest.raises(MonitorInputError, match="no time zone"):
        read_predictions(log_path, SCHEMA, start=datetime(2026, 11, 30))


def test_rows_of_another_schema_are_left_out_and_counted(log_path):
    now = time.time()
    write(log_path, [entry("ours", now, [[1.0, "web"]]), entry("theirs", now, [[2.0]], OTHER)])
    logged = read_predictions(log_path, SCHEMA)
    assert logged.frame["request_id"].tolist() == ["ours"]
    assert (logged.rows_in_window, logged.other_schema_rows) == (2, 1)


def test_corrupt_rows_are_skipped_and_counted(log_path):
    write(log_path, [entry("good", time.time(), [[1.0, "web"], [2.0, "shop"]])])
    with sqlite3.connect(log_path) as connection:
        connection.execute("UPDATE predictions SET features = '{not json' WHERE row_index = 0")
        connection.execute(
            "INSERT INTO predictions SELECT NULL, logged_at, 'short', 0, model_name, "
            "model_version, schema_fingerprint, '[1.0]', probability, is_fraud, threshold, "
            "model_fingerprint FROM predictions LIMIT 1"
        )
    logged = read_predictions(log_path, SCHEMA)
    assert logged.frame["amount"].tolist() == [2.0]
    assert logged.unreadable_rows == 2


def test_a_log_older_than_the_model_fingerprint_reads_it_as_empty(log_path):
    """Logs written before the column existed stay readable: the monitor keeps their rows
    (they cannot be told apart) rather than refusing the file."""
    write(log_path, [entry("old", time.time(), [[1.0, "web"]])])
    with sqlite3.connect(log_path) as connection:
        connection.execute("ALTER TABLE predictions DROP COLUMN model_fingerprint")
    logged = read_predictions(log_path, SCHEMA)
    assert logged.frame["model_fingerprint"].tolist() == [""]
    assert logged.frame["request_id"].tolist() == ["old"]


def test_a_missing_log_says_where_it_should_come_from(tmp_path):
    with pytest.raises(MonitorInputError, match=r"no prediction log at .*make serve"):
        read_predictions(tmp_path / "absent.db", SCHEMA)


def test_a_file_that_is_not_a_log_is_refused(tmp_path):
    not_a_log = tmp_path / "notes.db"
    not_a_log.write_text("hello")
    with pytest.raises(MonitorInputError, match="not a readable prediction log"):
        read_predictions(not_a_log, SCHEMA)
    empty_database = tmp_path / "empty.db"
    sqlite3.connect(empty_database).close()
    with pytest.raises(MonitorInputError, match="not a readable prediction log"):
        read_predictions(empty_database, SCHEMA)


def test_reading_never_blocks_the_writer(log_path):
    write(log_path, [entry("first", time.time(), [[1.0, "web"]])])
    reader = sqlite3.connect(f"{log_path.resolve().as_uri()}?mode=ro", uri=True)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM predictions").fetchone()  # a reader mid-transaction
    write(log_path, [entry("second", time.time(), [[2.0, "shop"]])])  # WAL: not blocked
    reader.close()
    assert read_predictions(log_path, SCHEMA).frame["request_id"].tolist() == ["first", "second"]


def test_a_postgresql_log_without_the_table_says_where_it_should_come_from(postgres_url):
    with pytest.raises(MonitorInputError, match=r"has no predictions table yet.*make serve"):
        read_predictions(postgres_url, SCHEMA)


def test_a_postgresql_log_that_cannot_be_reached_is_refused_without_its_password():
    url = f"postgresql://fraud:secret@127.0.0.1:{free_port()}/log"
    with pytest.raises(MonitorInputError, match="SERVING_PREDICTION_LOG") as caught:
        read_predictions(url, SCHEMA)
    assert str(caught.value).startswith("prediction log postgresql://fraud:***@127.0.0.1:")
    assert "secret" not in str(caught.value)


def test_a_log_url_of_no_store_is_refused():
    with pytest.raises(MonitorInputError, match="a prediction log is a SQLite file"):
        read_predictions("mysql://fraud@db/log", SCHEMA)
