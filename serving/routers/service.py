"""Readiness and what model is being served (behind the API key when one is set; the
liveness probe, open to every prober, is routers/health.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from serving.dependencies import get_model
from serving.model import LoadedModel
from serving.state import request_state

router = APIRouter(tags=["service"])


@router.get(
    "/ready",
    summary="A model is loaded and predictions can be served",
    responses={503: {"description": "No model loaded; `detail` says why"}},
)
async def ready(request: Request) -> JSONResponse:
    state = request_state(request)
    if state.model is None:
        body = {"status": "not ready", "detail": f"no model loaded: {state.model_error}"}
        return JSONResponse(body, status_code=503)
    # Still ready while the log's store is down: every replica shares it, so taking them
    # all out of the balancer would only hide the reason their 503 answers give.
    log = "ok" if state.log.outage is None else f"unavailable: {state.log.outage}"
    body = {
        "status": "ready",
        "model": state.model.name,
        "version": state.model.version,
        "prediction_log": log,
    }
    return JSONResponse(body)


@router.get(
    "/model",
    summary="Name, version, alias, run id, threshold, test metrics and feature schema",
    responses={503: {"description": "No model loaded"}},
)
async def model_card(model: LoadedModel = Depends(get_model)) -> dict[str, Any]:  # noqa: B008
    return model.describe()
