"""The ceiling plus the model and nothing else: a FastAPI endpoint with the same
schema-built body as the service, which scores the row with the same compiled scorer
and answers. No prediction log, no metrics, no request ids.

If this is already below a target, no amount of work on the service's own code (log,
metrics, validation) can reach it with this model on this machine: the gap is the
model's cost. Used by benchmarks/serving.py.

    SERVING_MODEL_URI=<model folder> uvicorn benchmarks.model_only_app:create_app --factory
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from fraud_detection.inference import compile_scorer
from fraud_detection.io.model_package import load_model_package
from serving.schemas import PredictionResponse, transaction_model


def create_app() -> FastAPI:
    package = load_model_package(os.environ["SERVING_MODEL_URI"])
    scorer = compile_scorer(package.pipeline, package.schema, package.example)
    Transaction = transaction_model(package.schema)
    threshold = package.threshold
    app = FastAPI(title="ceiling + model")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def predict(transaction: Any) -> dict[str, Any]:
        probability = float(scorer([list(vars(transaction).values())])[0])
        return {
            "request_id": "0" * 32,
            "probability": probability,
            "is_fraud": probability >= threshold,
            "threshold": threshold,
            "model": {"name": "model", "version": "0"},
        }

    # The body type comes from the schema at run time: set the annotation FastAPI reads.
    predict.__annotations__["transaction"] = Transaction
    app.post("/predict", response_model=PredictionResponse)(predict)
    return app
