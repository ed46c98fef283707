"""The prediction endpoints' fast path, in one place.

The prediction endpoints are the hot path, so they skip FastAPI's generic body handling:

* The body is parsed and validated from the raw bytes in one pass by a pydantic model
  built at start-up from the model's feature schema (``parse_body``): FastAPI's own path
  (JSON to dicts, dicts to models, dependency resolution) cost several times the
  prediction itself on one row (docs/benchmarks.md).
* The answer is encoded once, by orjson (``json_response``), without response-model
  re-validation.
* Because FastAPI does not see those bodies, ``openapi_with_bodies`` registers the
  schema-built models as OpenAPI components, so /docs still shows (and lets a user try)
  the real request bodies; ``documented_body`` points a route at its component.
* The API-key check, when keys are set, is a pure ASGI middleware (serving/auth.py), not
  a dependency the routes resolve per request; ``openapi_with_bodies`` declares it.

Everything else in the service uses FastAPI the ordinary way.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema

from serving.auth import declare_in_openapi
from serving.dependencies import check_json_content_type

Body = TypeVar("Body", bound=BaseModel)


async def parse_body(request: Request, model: type[Body]) -> Body:
    """Validate the raw body in one pass; errors go through the service's 4xx handler."""
    check_json_content_type(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as error:
        issues = error.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**issue, "loc": ("body", *issue["loc"])} for issue in issues]
        ) from None


def json_response(body: dict[str, Any], request_id: str) -> Response:
    # orjson: a 1,000-row answer in 0.02 ms against json's 0.44 (docs/benchmarks.md).
    # No NaN can be in it: probabilities come from the model, the rest from the service.
    content = orjson.dumps(body)
    return Response(content, media_type="application/json", headers={"X-Request-ID": request_id})


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` pointing at a schema-built model's component."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def openapi_with_bodies(
    app: FastAPI, body_models: list[type[BaseModel]], *, api_keys: bool = False
) -> dict[str, Any]:
    """FastAPI's document plus the schema-built request bodies and, with ``api_keys``,
    the API-key scheme on every guarded operation (serving/auth.py); made once."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        models: list[tuple[type[BaseModel], Literal["validation"]]] = [
            (model, "validation") for model in body_models
        ]
        if models:
            _, definitions = models_json_schema(
                models,
                ref_template="#/components/schemas/{model}",
                schema_generator=_SchemaInOrder,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(definitions.get("$defs", {}))
        if api_keys:
            declare_in_openapi(document)
        app.openapi_schema = document
    return app.openapi_schema


class _SchemaInOrder(GenerateJsonSchema):
    """Pydantic sorts a JSON schema's keys, the example transaction's too: /docs would show
    the features alphabetically. Keep the feature schema's order, as the README's curl."""

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value
