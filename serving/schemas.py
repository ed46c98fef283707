"""Request and response bodies. The transaction model is built from the feature schema
that travels with the model, so /docs shows the real fields, bounds and an example."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

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
    value_type, constraints = _value(feature)
    if feature.kind != "numeric" and feature.categories:
        description += f" (levels seen in training: {', '.join(feature.categories)})"
    field = Field(
        alias=feature.name,
        title=feature.name,
        description=description,
        examples=[example] if example is not None else None,
        **constraints,
    )
    return value_type, field


def _value(feature: Feature) -> tuple[type, dict[str, Any]]:
    """One value's type and constraints: a number within the schema's bounds, not "12.5"
    or true; or a non-empty text."""
    if feature.kind == "numeric":
        return float, {"ge": feature.minimum, "le": feature.maximum, "strict": True}
    return str, {"min_length": 1}


def split_model(schema: FeatureSchema, max_rows: int) -> type[BaseModel]:
    """A batch as a table: the feature names once, then one array of values per
    transaction, in that order (pandas' ``to_dict(orient="split")`` without the index).
    Validating 1,000 arrays is about a tenth of the work of validating 1,000 objects,
    whose keys are matched one by one (docs/benchmarks.md)."""
    names: list[Any] = list(schema.names)
    values = tuple(
        Annotated[_value(feature)[0], Field(**_value(feature)[1])] for feature in schema.features
    )
    example: list[Any] = [schema.example.get(name) for name in names]
    config = ConfigDict(
        **_STRICT,
        title="TransactionTable",
        json_schema_extra={"examples": [{"columns": names, "data": [example]}]}
        if all(name in schema.example for name in names)
        else None,
    )

    def _in_schema_order(given: list[str]) -> list[str]:
        if given != names:
            raise ValueError(f"columns must be the model's features, in order: {names}")
        return given

    return create_model(
        "TransactionTable",
        __config__=config,
        columns=(
            Annotated[list[str], AfterValidator(_in_schema_order)],
            Field(
                description="The feature names, in the model's order (GET /model)",
                json_schema_extra={"const": names},
            ),
        ),
        data=(
            list[tuple[values]],  # type: ignore[valid-type]
            Field(
                min_length=1,
                description=f"1 to {max_rows:,} transactions, each an array of the values "
                "of `columns`, in that order (more is refused with 413)",
            ),
        ),
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


class SplitResponse(BaseModel):
    request_id: str
    threshold: float
    model: ModelRef
    probability: list[float] = Field(description="P(fraud), one per transaction, in order")
    is_fraud: list[bool] = Field(description="probability >= threshold, in order")


class Problem(BaseModel):
    """Every error body: what is wrong, and for validation errors, where."""

    detail: str
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None
