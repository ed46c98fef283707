"""The app factory. Nothing loads at import: the lifespan loads the model, opens the
prediction log and adds the prediction routes built from the model's feature schema."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema

from fraud_detection.errors import ModelLoadError
from serving.batcher import MicroBatcher
from serving.errors import install_error_handlers
from serving.metrics import MetricsMiddleware, ServiceMetrics
from serving.model import load_model
from serving.prediction_log import PredictionLog
from serving.routers import monitoring, service
from serving.routers.predict import predict_router, unavailable_router
from serving.settings import Settings, load_settings

logger = logging.getLogger("serving")

DESCRIPTION = """Scores card transactions with the champion fraud model.

* `POST /predict` one transaction, `POST /predict/batch` many: probability of fraud and
  the decision at the model's threshold.
* `GET /ready` says whether a model is loaded; `GET /model` which one, and how it tested.
* Every prediction is appended to the prediction log read by the drift monitor.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to the ``SERVING_*`` environment variables."""
    settings = settings or load_settings()
    metrics = ServiceMetrics()
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
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model = None
    app.state.model_error = "the service is starting"
    app.state.prediction_log = PredictionLog(settings.prediction_log)
    app.state.body_models = []
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.include_router(service.router)
    app.include_router(monitoring.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the schema-built request bodies (the prediction endpoints
    parse raw bytes, so FastAPI does not see their models)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        models: list[tuple[type[BaseModel], Literal["validation"]]] = [
            (model, "validation") for model in app.state.body_models
        ]
        if models:
            _, definitions = models_json_schema(
                models,
                ref_template="#/components/schemas/{model}",
                schema_generator=_SchemaInOrder,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(definitions.get("$defs", {}))
        app.openapi_schema = document
    return app.openapi_schema


class _SchemaInOrder(GenerateJsonSchema):
    """Pydantic sorts a JSON schema's keys, the example transaction's too: /docs would show
    the features alphabetically. Keep the feature schema's order, as the README's curl."""

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    log: PredictionLog = app.state.prediction_log
    log.start()
    _load(app, settings)
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


def _load(app: FastAPI, settings: Settings) -> None:
    metrics: ServiceMetrics = app.state.metrics
    try:
        model = load_model(settings)
    except ModelLoadError as error:
        # Choice (README "Serving"): stay up, /health 200, /ready and /predict 503 with why.
        app.state.model_error = str(error)
        logger.error("no model loaded, /ready answers 503: %s", error)
        app.include_router(unavailable_router(str(error)))
        metrics.model_loaded.set(0)
        return
    app.state.model = model
    # Reads app.state.model when it scores, so whatever model is installed is used.
    app.state.batcher = MicroBatcher(lambda rows: app.state.model.scorer(rows))  # noqa: PLW0108
    router, body_models = predict_router(model, settings.max_batch_rows)
    app.include_router(router)
    app.state.body_models = body_models
    metrics.model_loaded.set(1)
    metrics.model_info.labels(
        model.name, model.version, model.alias or "", model.scorer.method
    ).set(1)
    logger.info(
        "serving %s v%s (%s) in %.1f s; scoring: %s, %s",
        model.name,
        model.version,
        settings.model_uri,
        model.load_seconds,
        model.scorer.method,
        model.scorer.detail,
    )
