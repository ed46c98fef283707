"""The ceiling for the serving benchmark: the same framework, body and worker count as
the service, with the model (and the log and metrics) removed.

``/predict`` validates the same schema-built request body as the real service and answers
a constant of the same shape, so the gap to the real service is what scoring, logging
and metrics cost.

    SERVING_MODEL_URI=<model folder> uvicorn benchmarks.ceiling_app:create_app --factory
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from fraud_detection.io.model_package import SCHEMA_FILE
from fraud_detection.schema import FeatureSchema
from serving.schemas import PredictionResponse, transaction_model


def create_app() -> FastAPI:
    folder = Path(os.environ["SERVING_MODEL_URI"])
    schema = FeatureSchema.model_validate_json((folder / SCHEMA_FILE).read_bytes())
    Transaction = transaction_model(schema)
    app = FastAPI(title="ceiling")
    constant: dict[str, Any] = {
        "request_id": "0" * 32,
        "probability": 0.0,
        "is_fraud": False,
        "threshold": 0.5,
        "model": {"name": "none", "version": "0"},
    }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def predict(transaction: Any) -> dict[str, Any]:
        return constant

    # The body type comes from the schema at run time: set the annotation FastAPI reads.
    predict.__annotations__["transaction"] = Transaction
    app.post("/predict", response_model=PredictionResponse)(predict)
    return app
