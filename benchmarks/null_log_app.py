"""The service with a prediction log that writes nothing: the ceiling of the log's cost
(the same requests with the logging work removed). Used by benchmarks/replicas.py.

    SERVING_MODEL_URI=<model folder> uvicorn benchmarks.null_log_app:create_app --factory
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from fraud_detection.io.prediction_log import Entry, rows_of
from serving.app import create_app as create_service
from serving.state import state_of


class NullStore:
    """Takes every entry and keeps none."""

    location = "nowhere (benchmarks/null_log_app.py)"
    remote = False

    def create_schema(self) -> None:
        return None

    def connect(self) -> None:
        return None

    def write(self, connection: Any, entries: Sequence[Entry]) -> int:
        rows: int = rows_of(entries)
        return rows

    def read(self, start: datetime | None, end: datetime | None) -> list[tuple[Any, ...]]:
        return []


def create_app() -> FastAPI:
    app = create_service()
    state_of(app).log.store = NullStore()
    return app
