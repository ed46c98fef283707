"""What the running service holds: one typed object, created by the app factory and
filled in by the lifespan, instead of loose ``app.state`` attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from pydantic import BaseModel

from serving.auth import ApiKeys
from serving.batcher import MicroBatcher
from serving.metrics import ServiceMetrics
from serving.model import LoadedModel
from serving.prediction_log import PredictionLog
from serving.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    log: PredictionLog
    # Set by the lifespan once a model is loaded; until then (or if it fails) None, and
    # model_error says why.
    model: LoadedModel | None = None
    model_error: str = "the service is starting"
    # Scores the single rows of concurrent /predict requests together.
    batcher: MicroBatcher | None = None
    # The schema-built request bodies, for the OpenAPI document (serving/fast_path.py).
    body_models: list[type[BaseModel]] = field(default_factory=list)
    # The keys callers must send (serving/auth.py), read once by the app factory.
    api_keys: ApiKeys | None = None


def state_of(app: FastAPI) -> ServiceState:
    state: ServiceState = app.state.service
    return state


def request_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state
