"""The service with its scorer replaced by a constant: what everything but the model
(framework, validation, prediction log, metrics) costs. Used by benchmarks/serving.py.

    SERVING_MODEL_URI=<model folder> uvicorn benchmarks.no_model_app:create_app --factory
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI

from fraud_detection.inference import Rows, Scorer
from serving.app import create_app as create_service
from serving.state import state_of


def _constant(rows: Rows) -> np.ndarray:
    return np.zeros(len(rows))


def create_app() -> FastAPI:
    app = create_service()
    service_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_lifespan(app):
            state = state_of(app)
            assert state.model is not None, f"no model loaded: {state.model_error}"
            state.model = dataclasses.replace(
                state.model, scorer=Scorer("none", "constant 0", _constant)
            )
            yield

    app.router.lifespan_context = lifespan
    return app
