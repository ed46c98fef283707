"""What endpoints depend on, overridable in tests (app.dependency_overrides)."""

from __future__ import annotations

import re
import uuid

from fastapi import HTTPException, Request

from serving.metrics import ServiceMetrics
from serving.model import LoadedModel
from serving.prediction_log import PredictionLog
from serving.settings import Settings

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_model(request: Request) -> LoadedModel:
    model: LoadedModel | None = request.app.state.model
    if model is None:
        raise HTTPException(503, f"no model loaded: {request.app.state.model_error}")
    return model


def get_prediction_log(request: Request) -> PredictionLog:
    log: PredictionLog = request.app.state.prediction_log
    return log


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is a sensible token, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            415,
            f"send the body as JSON with 'Content-Type: application/json' "
            f"(got {content_type or 'no content type'!r})",
        )
