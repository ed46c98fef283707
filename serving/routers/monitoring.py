"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from serving.dependencies import get_metrics
from serving.metrics import CONTENT_TYPE, ServiceMetrics

router = APIRouter(tags=["service"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, metrics: ServiceMetrics = Depends(get_metrics)) -> Response:  # noqa: B008
    log = request.app.state.prediction_log
    metrics.log_pending.set(log.pending_rows)
    metrics.log_failures.set(log.write_failures)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
