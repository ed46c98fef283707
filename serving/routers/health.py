"""GET /health: the process is alive. Open whatever the API-key setting: probes (Docker's
HEALTHCHECK, Kubernetes' liveness probe) hold no key, and it says nothing about the model."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["service"])


@router.get("/health", summary="The process is alive (needs no API key)")
async def health() -> dict[str, str]:
    return {"status": "ok"}
