"""GET /metrics: the service's Prometheus metrics (serving/metrics.py defines them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.metrics import CONTENT_TYPE
from serving.state import request_state

router = APIRouter(tags=["service"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request_state(request)
    # The log's gauges are read when scraped, not kept up to date on every write.
    state.metrics.log_pending.set(state.log.pending_rows)
    state.metrics.log_failures.set(state.log.write_failures)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)
