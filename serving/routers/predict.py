"""POST /predict and /predict/batch, with bodies built from the model's feature schema.

The router is made when the model loads (the body models depend on its schema), so this
module does not use postponed annotations: FastAPI must see the real classes.
"""

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from serving.dependencies import (
    get_metrics,
    get_model,
    get_prediction_log,
    request_id,
    require_json,
)
from serving.metrics import ServiceMetrics
from serving.model import LoadedModel
from serving.prediction_log import Entry, PredictionLog
from serving.schemas import (
    BatchResponse,
    ModelRef,
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
        "description": "A field is missing, unknown, of the wrong type, "
        "out of bounds, NaN or infinite",
    },
    503: {"model": Problem, "description": "No model loaded"},
}


def predict_router(model: LoadedModel, max_batch_rows: int) -> APIRouter:
    """The prediction endpoints for ``model``'s feature schema."""
    Transaction = transaction_model(model.package.schema)
    TransactionBatch = batch_model(Transaction, max_batch_rows)
    router = APIRouter(tags=["predict"], dependencies=[Depends(require_json)])
    model_ref = ModelRef(name=model.name, version=model.version)

    @router.post(
        "/predict",
        response_model=PredictionResponse,
        summary="Score one transaction",
        responses=_ERRORS,
    )
    async def predict(
        *,
        transaction: Transaction,  # type: ignore[valid-type]
        request: Request,
        response: Response,
        model: LoadedModel = Depends(get_model),  # noqa: B008
        log: PredictionLog = Depends(get_prediction_log),  # noqa: B008
        metrics: ServiceMetrics = Depends(get_metrics),  # noqa: B008
    ) -> PredictionResponse:
        rid = request_id(request)
        row = list(vars(transaction).values())
        probability = float(model.scorer([row])[0])
        is_fraud = probability >= model.threshold
        log.record(Entry(time.time(), rid, model.stamp, [row], [probability], [is_fraud]))
        metrics.count_predictions(int(is_fraud), int(not is_fraud))
        response.headers["X-Request-ID"] = rid
        return PredictionResponse(
            request_id=rid,
            probability=probability,
            is_fraud=is_fraud,
            threshold=model.threshold,
            model=model_ref,
        )

    @router.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary=f"Score up to {max_batch_rows:,} transactions",
        responses={**_ERRORS, 413: {"model": Problem, "description": "Too many rows"}},
    )
    async def predict_batch(
        *,
        batch: TransactionBatch,  # type: ignore[valid-type]
        request: Request,
        response: Response,
        model: LoadedModel = Depends(get_model),  # noqa: B008
        log: PredictionLog = Depends(get_prediction_log),  # noqa: B008
        metrics: ServiceMetrics = Depends(get_metrics),  # noqa: B008
    ) -> dict[str, Any]:
        rows = [list(vars(item).values()) for item in batch.transactions]  # type: ignore[attr-defined]
        if len(rows) > max_batch_rows:
            raise HTTPException(
                413,
                f"{len(rows):,} transactions in one batch; the limit is {max_batch_rows:,} "
                "(SERVING_MAX_BATCH_ROWS): split the batch",
            )
        rid = request_id(request)
        if len(rows) <= _INLINE_ROWS:
            probabilities = model.scorer(rows)
        else:
            probabilities = await run_in_threadpool(model.scorer, rows)
        flags = (probabilities >= model.threshold).tolist()
        scores = probabilities.tolist()
        log.record(Entry(time.time(), rid, model.stamp, rows, scores, flags))
        fraud = sum(flags)
        metrics.count_predictions(fraud, len(flags) - fraud)
        response.headers["X-Request-ID"] = rid
        return {
            "request_id": rid,
            "threshold": model.threshold,
            "model": model_ref,
            "predictions": [
                {"probability": p, "is_fraud": f} for p, f in zip(scores, flags, strict=True)
            ],
        }

    return router


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
