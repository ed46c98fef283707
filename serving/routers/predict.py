"""POST /predict and /predict/batch, with bodies built from the model's feature schema.

Both endpoints parse their body on the fast path (``serving/fast_path.py``), then hand
the rows to ``serve``, the one score → decide → log → count sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from fraud_detection.io.prediction_log import Entry
from serving.dependencies import request_id
from serving.fast_path import documented_body, json_response, parse_body
from serving.model import LoadedModel
from serving.prediction_log import LogUnavailableError
from serving.schemas import (
    BatchResponse,
    PredictionResponse,
    Problem,
    SplitResponse,
    batch_model,
    split_model,
    transaction_model,
)
from serving.state import ServiceState, request_state

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
    503: {
        "model": Problem,
        "description": "No model loaded, or the prediction log cannot take the rows "
        "(`detail` names the store); nothing was logged",
    },
}


@dataclass(frozen=True)
class Served:
    """One request's answers, logged and counted."""

    request_id: str
    model: LoadedModel
    probabilities: list[float]
    decisions: list[bool]


async def serve(state: ServiceState, request: Request, rows: list[list[Any]]) -> Served:
    """Score ``rows``, decide at the model's threshold, log, count: what both endpoints do.

    The rows are in the log before this returns (SERVING_LOG_COMMIT=before_answer), or
    the request fails with 503 and nothing of it is logged."""
    model = state.model
    assert model is not None  # the prediction routes exist only once a model is loaded
    rid = request_id(request)
    probabilities = await _probabilities(state, model, rows)
    decisions = [p >= model.threshold for p in probabilities]
    try:
        await state.log.write(Entry(time.time(), rid, model.stamp, rows, probabilities, decisions))
    except LogUnavailableError as error:
        raise HTTPException(503, str(error)) from None
    fraud = sum(decisions)
    state.metrics.count_predictions(fraud, len(decisions) - fraud)
    return Served(rid, model, probabilities, decisions)


async def _probabilities(
    state: ServiceState, model: LoadedModel, rows: list[list[Any]]
) -> list[float]:
    if len(rows) == 1 and state.batcher is not None:
        # Single rows from concurrent requests are scored together (serving/batcher.py).
        try:
            return [await state.batcher.score(rows[0])]
        except ValueError as error:
            raise _cannot_score(error) from None
    if len(rows) <= _INLINE_ROWS:
        return _score(model, rows)
    return await run_in_threadpool(_score, model, rows)


def predict_router(model: LoadedModel, max_batch_rows: int) -> tuple[APIRouter, list[type]]:
    """The prediction endpoints for ``model``'s feature schema, and the body models the
    OpenAPI document must list."""
    transaction = transaction_model(model.package.schema)
    batch = batch_model(transaction, max_batch_rows)
    table = split_model(model.package.schema, max_batch_rows)
    router = APIRouter(tags=["predict"])
    too_many: dict[int | str, dict[str, Any]] = {
        413: {"model": Problem, "description": "Too many rows"}
    }

    @router.post(
        "/predict",
        response_model=PredictionResponse,
        summary="Score one transaction",
        responses=_ERRORS,
        openapi_extra=documented_body(transaction),
    )
    async def predict(request: Request) -> Response:
        row = list(vars(await parse_body(request, transaction)).values())
        served = await serve(request_state(request), request, [row])
        body = {
            "request_id": served.request_id,
            "probability": served.probabilities[0],
            "is_fraud": served.decisions[0],
            **_model_fields(served.model),
        }
        return json_response(body, served.request_id)

    @router.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary=f"Score up to {max_batch_rows:,} transactions",
        responses={**_ERRORS, **too_many},
        openapi_extra=documented_body(batch),
    )
    async def predict_batch(request: Request) -> Response:
        parsed = await parse_body(request, batch)
        rows = [list(vars(item).values()) for item in parsed.transactions]  # type: ignore[attr-defined]
        _check_size(len(rows), max_batch_rows)
        served = await serve(request_state(request), request, rows)
        body = {
            "request_id": served.request_id,
            **_model_fields(served.model),
            "predictions": [
                {"probability": p, "is_fraud": f}
                for p, f in zip(served.probabilities, served.decisions, strict=True)
            ],
        }
        return json_response(body, served.request_id)

    @router.post(
        "/predict/split",
        response_model=SplitResponse,
        summary=f"Score up to {max_batch_rows:,} transactions sent as a table (fastest)",
        description="The feature names once, then one array of values per transaction "
        '(pandas\' `to_dict(orient="split")` without the index). The same answers and log '
        "rows as `/predict/batch`, at a tenth of its parsing cost for large batches.",
        responses={**_ERRORS, **too_many},
        openapi_extra=documented_body(table),
    )
    async def predict_split(request: Request) -> Response:
        parsed = await parse_body(request, table)
        rows = parsed.data  # type: ignore[attr-defined]
        _check_size(len(rows), max_batch_rows)
        served = await serve(request_state(request), request, rows)
        body = {
            "request_id": served.request_id,
            **_model_fields(served.model),
            "probability": served.probabilities,
            "is_fraud": served.decisions,
        }
        return json_response(body, served.request_id)

    return router, [transaction, batch, table]


def _check_size(rows: int, limit: int) -> None:
    if rows > limit:
        raise HTTPException(
            413,
            f"{rows:,} transactions in one batch; the limit is {limit:,} "
            "(SERVING_MAX_BATCH_ROWS): split the batch",
        )


def _model_fields(model: LoadedModel) -> dict[str, Any]:
    return {"threshold": model.threshold, "model": {"name": model.name, "version": model.version}}


def _score(model: LoadedModel, rows: list[list[Any]]) -> list[float]:
    """The model's probabilities; values it cannot take are the client's problem (422).

    The request model already rejects NaN, infinity and anything outside the schema's
    bounds. What remains is a finite number so large that preprocessing overflows
    (1e308 through the scaler): scikit-learn refuses it with a ValueError."""
    try:
        probabilities: list[float] = model.scorer(rows).tolist()
    except ValueError as error:
        raise _cannot_score(error) from None
    return probabilities


def _cannot_score(error: ValueError) -> HTTPException:
    return HTTPException(
        422,
        f"the model cannot score these values ({error}); send values in the range seen in training",
    )


def unavailable_router(reason: str) -> APIRouter:
    """Stand-ins for the prediction endpoints when no model could be loaded: 503 + why."""
    router = APIRouter(tags=["predict"])

    async def unavailable() -> None:
        raise HTTPException(503, f"no model loaded: {reason}")

    for path in ("/predict", "/predict/batch", "/predict/split"):
        router.add_api_route(
            path, unavailable, methods=["POST"], responses={503: {"model": Problem}}
        )
    return router
