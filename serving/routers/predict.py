"""POST /predict and /predict/batch, with bodies built from the model's feature schema.

The request path is the hot path, so it skips FastAPI's generic body handling: pydantic
parses and validates the raw bytes in one pass (``model_validate_json``), and the answer
is encoded once. Measured on one row (docs/benchmarks.md), FastAPI's own path (JSON to
dicts, dicts to models, dependency resolution, response re-validation) cost several
times the prediction itself. The OpenAPI document still shows the real bodies: the
schema-built models are registered as components (see ``app.py``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.dependencies import check_json_content_type, request_id
from serving.metrics import ServiceMetrics
from serving.model import LoadedModel
from serving.prediction_log import Entry, PredictionLog
from serving.schemas import (
    BatchResponse,
    PredictionResponse,
    Problem,
    batch_model,
    transaction_model,
)

# Batches up to this size are scored on the event loop (well under a millisecond of work);
# larger ones in a worker thread, so health checks and small requests are not held up.
_INLINE_ROWS = 64

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed JSON"},
    415: {"model": Problem, "description": "Body is not JSON"},
    422: {
        "model": Problem,
        "description": "A field is missing, unknown, of the wrong type, out of bounds, "
        "NaN or infinite",
    },
    503: {"model": Problem, "description": "No model loaded"},
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` pointing at a schema-built model's component."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def predict_router(model: LoadedModel, max_batch_rows: int) -> tuple[APIRouter, list[type]]:
    """The prediction endpoints for ``model``'s feature schema, and the body models the
    OpenAPI document must list."""
    transaction = transaction_model(model.package.schema)
    batch = batch_model(transaction, max_batch_rows)
    router = APIRouter(tags=["predict"])
    model_json = {"name": model.name, "version": model.version}

    @router.post(
        "/predict",
        response_model=PredictionResponse,
        summary="Score one transaction",
        responses=_ERRORS,
        openapi_extra=request_body(transaction),
    )
    async def predict(request: Request) -> Response:
        row = list(vars(await _parse(request, transaction)).values())
        state = request.app.state
        served: LoadedModel = state.model
        log: PredictionLog = state.prediction_log
        metrics: ServiceMetrics = state.metrics
        rid = request_id(request)
        try:
            # Single rows from concurrent requests are scored together (serving/batcher.py).
            probability = await state.batcher.score(row)
        except ValueError as error:
            raise _cannot_score(error) from None
        is_fraud = probability >= served.threshold
        log.record(Entry(time.time(), rid, served.stamp, [row], [probability], [is_fraud]))
        metrics.count_predictions(int(is_fraud), int(not is_fraud))
        body = {
            "request_id": rid,
            "probability": probability,
            "is_fraud": is_fraud,
            "threshold": served.threshold,
            "model": model_json,
        }
        return _json(body, rid)

    @router.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary=f"Score up to {max_batch_rows:,} transactions",
        responses={**_ERRORS, 413: {"model": Problem, "description": "Too many rows"}},
        openapi_extra=request_body(batch),
    )
    async def predict_batch(request: Request) -> Response:
        parsed = await _parse(request, batch)
        rows = [list(vars(item).values()) for item in parsed.transactions]  # type: ignore[attr-defined]
        if len(rows) > max_batch_rows:
            raise HTTPException(
                413,
                f"{len(rows):,} transactions in one batch; the limit is {max_batch_rows:,} "
                "(SERVING_MAX_BATCH_ROWS): split the batch",
            )
        state = request.app.state
        served: LoadedModel = state.model
        rid = request_id(request)
        if len(rows) <= _INLINE_ROWS:
            probabilities = _score(served, rows)
        else:
            probabilities = await run_in_threadpool(_score, served, rows)
        flags = (probabilities >= served.threshold).tolist()
        scores = probabilities.tolist()
        state.prediction_log.record(Entry(time.time(), rid, served.stamp, rows, scores, flags))
        fraud = sum(flags)
        state.metrics.count_predictions(fraud, len(flags) - fraud)
        body = {
            "request_id": rid,
            "threshold": served.threshold,
            "model": model_json,
            "predictions": [
                {"probability": p, "is_fraud": f} for p, f in zip(scores, flags, strict=True)
            ],
        }
        return _json(body, rid)

    return router, [transaction, batch]


def _score(model: LoadedModel, rows: list[list[Any]]) -> Any:
    """The model's probabilities; values it cannot take are the client's problem (422).

    The request model already rejects NaN, infinity and anything outside the schema's
    bounds. What remains is a finite number so large that preprocessing overflows
    (1e308 through the scaler): scikit-learn refuses it with a ValueError."""
    try:
        return model.scorer(rows)
    except ValueError as error:
        raise _cannot_score(error) from None


def _cannot_score(error: ValueError) -> HTTPException:
    return HTTPException(
        422,
        f"the model cannot score these values ({error}); send values in the range seen in training",
    )


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel:
    """Validate the raw body in one pass; errors go through the service's 4xx handler."""
    check_json_content_type(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as error:
        issues = error.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**issue, "loc": ("body", *issue["loc"])} for issue in issues]
        ) from None


def _json(body: dict[str, Any], rid: str) -> Response:
    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, media_type="application/json", headers={"X-Request-ID": rid})


def unavailable_router(reason: str) -> APIRouter:
    """Stand-ins for the prediction endpoints when no model could be loaded: 503 + why."""
    router = APIRouter(tags=["predict"])

    async def unavailable() -> None:
        raise HTTPException(503, f"no model loaded: {reason}")

    for path in ("/predict", "/predict/batch"):
        router.add_api_route(
            path, unavailable, methods=["POST"], responses={503: {"model": Problem}}
        )
    return router
