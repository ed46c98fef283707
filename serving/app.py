"""The app factory. Nothing loads at import: the lifespan loads the model, opens the
prediction log and adds the prediction routes built from the model's feature schema."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from fraud_detection.errors import ModelLoadError
from fraud_detection.io.prediction_log import open_store
from serving.auth import ApiKeyMiddleware, ApiKeys
from serving.batcher import MicroBatcher
from serving.errors import install_error_handlers
from serving.fast_path import openapi_with_bodies
from serving.keys import HEADER
from serving.metrics import MetricsMiddleware, ServiceMetrics
from serving.model import load_model
from serving.prediction_log import PredictionLog
from serving.routers import health, metrics, service
from serving.routers.predict import predict_router, unavailable_router
from serving.settings import Settings, load_settings
from serving.state import ServiceState, state_of

logger = logging.getLogger("serving")

DESCRIPTION = """Scores card transactions with the champion fraud model.

* `POST /predict` one transaction, `POST /predict/batch` many: probability of fraud and
  the decision at the model's threshold.
* `GET /ready` says whether a model is loaded; `GET /model` which one, and how it tested.
* Every prediction is appended to the prediction log read by the drift monitor.
* When the service has API keys, every endpoint but `GET /health` needs one in the
  `X-API-Key` header: "Authorize" above takes it for "Try it out".
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to the ``SERVING_*`` environment variables."""
    settings = settings or load_settings()
    service_metrics = ServiceMetrics()
    # /docs and /redoc load Swagger UI and ReDoc from the service itself (fastapi-offline's
    # bundled copies, under /static-offline-docs): FastAPI's own pages load them from
    # cdn.jsdelivr.net and are blank on an air-gapped machine. ReDoc without Google Fonts;
    # no validatorUrl, or Swagger UI would call validator.swagger.io whenever the service
    # is reached under a non-local hostname.
    app = FastAPIOffline(
        title="Fraud detection API",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan,
        # persistAuthorization: the key given to "Authorize" survives a page reload.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )
    log = PredictionLog(
        open_store(settings.prediction_log),
        commit=settings.log_commit,
        timeout_seconds=settings.log_timeout_seconds,
    )
    keys = settings.api_key_set()
    state = ServiceState(settings=settings, metrics=service_metrics, log=log, api_keys=keys)
    app.state.service = state
    if keys:
        # Inside the metrics middleware (added after it is outer): 401s are counted too.
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(MetricsMiddleware, metrics=service_metrics)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(service.router)
    app.include_router(metrics.router)
    app.openapi = lambda: openapi_with_bodies(  # type: ignore[method-assign]
        app, state.body_models, api_keys=keys is not None
    )
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = state_of(app)
    log = state.log
    log.start()
    _announce_access(state.settings, state.api_keys)
    _load(app, state)
    # Everything loaded so far (libraries, model) lives as long as the process. Freezing
    # it keeps the garbage collector's full collections from walking those objects again
    # under load, a pause that grows with the heap and lands on whichever request is
    # running.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        # Uvicorn has finished the in-flight requests: everything they logged is queued.
        log.close()
        logger.info("prediction log closed: %d rows written", log.rows_written)


def _load(app: FastAPI, state: ServiceState) -> None:
    settings, service_metrics = state.settings, state.metrics
    try:
        model = load_model(settings)
    except ModelLoadError as error:
        # Choice (README "Serving"): stay up, /health 200, /ready and /predict 503 with why.
        state.model_error = str(error)
        logger.error("no model loaded, /ready answers 503: %s", error)
        app.include_router(unavailable_router(str(error)))
        service_metrics.model_loaded.set(0)
        return
    state.model = model
    # Scores with whatever model state holds when it scores (a test may swap it).
    state.batcher = MicroBatcher(partial(_score_with_current_model, state))
    router, body_models = predict_router(model, settings.max_batch_rows)
    app.include_router(router)
    state.body_models = body_models
    service_metrics.model_loaded.set(1)
    service_metrics.model_info.labels(
        model.name, model.version, model.alias or "", model.scorer.method
    ).set(1)
    logger.info(
        "serving %s v%s (%s) in %.1f s; scoring: %s, %s; prediction log %s (%s)",
        model.name,
        model.version,
        settings.model_uri,
        model.load_seconds,
        model.scorer.method,
        model.scorer.detail,
        state.log.store.location,
        settings.log_commit,
    )


def _announce_access(settings: Settings, keys: ApiKeys | None) -> None:
    """One line on who may call the service; a warning when anyone on a network may."""
    if keys:
        logger.info("API keys: %d accepted in the %s header (all but /health)", len(keys), HEADER)
    elif settings.on_loopback:
        logger.info("API keys: none set; only this machine can reach %s", settings.host)
    else:
        logger.warning(
            "API keys: none set, and the service listens on %s: anyone who can reach port "
            "%d can score and read /model. Set SERVING_API_KEYS_FILE (docs/security.md).",
            settings.host,
            settings.port,
        )


def _score_with_current_model(state: ServiceState, rows: list[list[Any]]) -> Any:
    assert state.model is not None
    return state.model.scorer(rows)
