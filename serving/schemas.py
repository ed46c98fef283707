"""Request and response bodies. The transaction model is built from the feature schema
that travels with the model, so /docs shows the real fields, bounds and an example."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from fraud_detection.schema import Feature, FeatureSchema

# Unknown fields are errors; NaN and infinity are not numbers a transaction can have.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=False)


def transaction_model(schema: FeatureSchema) -> type[BaseModel]:
    """One transaction: a required field per feature, in schema order (aliases carry the
    feature names, which need not be Python identifiers)."""
    fields: dict[str, Any] = {
        f"f{index}": _field(feature, schema.example.get(feature.name))
        for index, feature in enumerate(schema.features)
    }
    example: dict[str, Any] = {
        name: schema.example[name] for name in schema.names if name in schema.example
    }
    config = ConfigDict(
        **_STRICT,
        title="Transaction",
        json_schema_extra={"examples": [example]} if example else None,
    )
    return create_model("Transaction", __config__=config, **fields)


def _field(feature: Feature, example: float | str | None) -> tuple[type, Any]:
    description = feature.description or feature.name
    examples = [example] if example is not None else None
    if feature.kind == "numeric":
        return (
            float,
            Field(
                alias=feature.name,
                title=feature.name,
                description=description,
                ge=feature.minimum,
                le=feature.maximum,
                examples=examples,
                strict=True,  # a number, not "12.5" or true
            ),
        )
    if feature.categories:
        description += f" (levels seen in training: {', '.join(feature.categories)})"
    return (
        str,
        Field(alias=feature.name, description=description, examples=examples, min_length=1),
    )


def batch_model(transaction: type[BaseModel], max_rows: int) -> type[BaseModel]:
    config = ConfigDict(extra="forbid", title="TransactionBatch")
    return create_model(
        "TransactionBatch",
        __config__=config,
        transactions=(
            list[transaction],  # type: ignore[valid-type]
            Field(
                min_length=1,
                description=f"1 to {max_rows:,} transactions (more is refused with 413)",
            ),
        ),
    )


class ModelRef(BaseModel):
    name: str
    version: str


class PredictionResponse(BaseModel):
    request_id: str
    probability: float = Field(description="P(fraud) from the model")
    is_fraud: bool = Field(description="probability >= threshold")
    threshold: float
    model: ModelRef


class BatchPrediction(BaseModel):
    probability: float
    is_fraud: bool


class BatchResponse(BaseModel):
    request_id: str
    threshold: float
    model: ModelRef
    predictions: list[BatchPrediction] = Field(description="One per transaction, in order")


class Problem(BaseModel):
    """Every error body: what is wrong, and for validation errors, where."""

    detail: str
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None
