"""Synthetic reference data and prediction logs for the monitor's tests.

The reference is written as the `reference` stage writes it (``reference_table`` and a
``ReferenceInfo`` JSON beside it); the log with the service's own writer, every row
stamped with the reference schema's fingerprint, as the service does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.io.prediction_log import Entry, ModelStamp, SqliteStore
from fraud_detection.reference import (
    DECISION_COLUMN,
    SCORE_COLUMN,
    reference_info,
    reference_table,
)
from fraud_detection.schema import FeatureSchema, numeric_feature
from serving.prediction_log import PredictionLog

SCHEMA = FeatureSchema(
    source="csv",
    target="fraud",
    features=[
        numeric_feature("amount", "Drives the score"),
        numeric_feature("hour", "Noise"),
        numeric_feature("distance", "Noise"),
        numeric_feature("velocity", "Noise"),
    ],
)
# What a model trained on other features logs: same log, different fingerprint.
OTHER_SCHEMA = FeatureSchema(
    source="csv", target="fraud", features=[numeric_feature("amount", "Only one")]
)
THRESHOLD = 0.5
TEST_METRICS = {"average_precision": 0.61, "roc_auc": 0.9}
# Logged rows start here, one request a second; the monitor's window holds them all.
LOGGED_FROM = datetime(2026, 11, 30, 8, tzinfo=UTC)
WINDOW_START = LOGGED_FROM - timedelta(hours=1)
WINDOW_END = LOGGED_FROM + timedelta(hours=23)
REFERENCE_ROWS = 1200


def synthetic(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Four standard normal features (``shift`` added to some), the fraud label, the score
    (a logistic of ``amount`` only) and the decision at THRESHOLD, as a reference table."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=rows) for name in SCHEMA.names})
    for name, by in (shift or {}).items():
        frame[name] += by
    scores = 1.0 / (1.0 + np.exp(-(2.0 * frame["amount"].to_numpy() - 2.0)))
    frame[SCHEMA.target] = (rng.uniform(size=rows) < scores).astype(np.int64)
    return reference_table(frame, SCHEMA, scores, THRESHOLD)


def write_reference(
    folder: Path, table: pd.DataFrame, model_fingerprint: str | None = None
) -> Path:
    """``reference.parquet`` and ``reference.json`` in ``folder``, as the stage writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reference.parquet"
    table.to_parquet(path, index=False)
    info = reference_info(
        table,
        SCHEMA,
        THRESHOLD,
        scored_by="synthetic logistic",
        test_metrics=TEST_METRICS,
        model_fingerprint=model_fingerprint,
    )
    path.with_suffix(".json").write_text(info.model_dump_json(indent=2), encoding="utf-8")
    return path


def model_stamp(
    schema: FeatureSchema = SCHEMA, version: str = "3", fingerprint: str | None = None
) -> ModelStamp:
    """The stamp of model ``version``; its fingerprint is ``model-<version>`` unless given."""
    return ModelStamp(
        name="fraud-detector",
        version=version,
        schema_fingerprint=schema.fingerprint,
        schema_json=schema.model_dump_json(),
        feature_names=tuple(schema.names),
        threshold=THRESHOLD,
        fingerprint=f"model-{version}" if fingerprint is None else fingerprint,
    )


def request_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number:05d}"


def write_log(
    path: Path,
    table: pd.DataFrame,
    *,
    schema: FeatureSchema = SCHEMA,
    version: str = "3",
    fingerprint: str | None = None,
    batch: int = 10,
    prefix: str = "req",
    start: datetime = LOGGED_FROM,
) -> None:
    """Append ``table``'s rows to the log at ``path`` with the service's writer: requests
    of ``batch`` rows, ``prefix-00000``, ``prefix-00001``, ..., one a second from ``start``."""
    log = PredictionLog(SqliteStore(path), commit="background", gather_seconds=0.0)
    log.start()
    stamp = model_stamp(schema, version, fingerprint)
    values = table[schema.names].to_numpy().tolist()
    scores = table[SCORE_COLUMN].to_numpy().tolist()
    decisions = table[DECISION_COLUMN].astype(bool).to_numpy().tolist()
    for number, first in enumerate(range(0, len(table), batch)):
        rows = slice(first, first + batch)
        at = (start + timedelta(seconds=number)).timestamp()
        log.record(
            Entry(
                at, request_id(prefix, number), stamp, values[rows], scores[rows], decisions[rows]
            )
        )
    log.close()
    assert log.rows_written == len(table)
    assert log.write_failures == 0


@pytest.fixture(scope="session")
def reference_frame() -> pd.DataFrame:
    """The reference table (read-only: copy before changing)."""
    return synthetic(REFERENCE_ROWS, seed=0)


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory: pytest.TempPathFactory, reference_frame: pd.DataFrame) -> Path:
    """The reference on disk (read-only: tests that damage it make their own)."""
    return write_reference(tmp_path_factory.mktemp("reference"), reference_frame)


@pytest.fixture(scope="session")
def steady_log(tmp_path_factory: pytest.TempPathFactory, reference_frame: pd.DataFrame) -> Path:
    """A log of the reference's own rows: no drift at all (read-only)."""
    path = tmp_path_factory.mktemp("steady") / "predictions.db"
    write_log(path, reference_frame)
    return path


@pytest.fixture(scope="session")
def drifted_log(tmp_path_factory: pytest.TempPathFactory, reference_frame: pd.DataFrame) -> Path:
    """The reference's rows with ``velocity`` shifted by 3 standard deviations (read-only)."""
    drifted = reference_frame.copy()
    drifted["velocity"] += 3.0
    path = tmp_path_factory.mktemp("drifted") / "predictions.db"
    write_log(path, drifted)
    return path
