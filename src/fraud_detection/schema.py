"""The feature schema: the single source of truth for what a model takes as input.

The features stage writes it; training builds the preprocessing from it; it is logged with
the model (and drives the MLflow signature), and the API and the drift monitor read it back
from the model, so every consumer agrees with what was trained.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud_detection.errors import SchemaMismatchError

FeatureKind = Literal["numeric", "categorical"]


class Feature(BaseModel):
    """One model input. Numeric features are float64; categorical ones are strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: FeatureKind
    description: str = ""
    # Bounds where they are known by construction (counts >= 0, shares in [0, 1]).
    minimum: float | None = None
    maximum: float | None = None
    # Levels seen in training, for categorical features.
    categories: list[str] | None = None


class ClassNames(BaseModel):
    """The words logs, reports and the model card use for the two classes (params.yaml's
    data.class_names): the defaults fit the simulator, a CSV of loan defaults or
    insurance claims names its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    positive: str = Field("fraud", min_length=1)
    negative: str = Field("genuine", min_length=1)


class FeatureSchema(BaseModel):
    """Names, kinds and target of a dataset's model inputs, plus the columns around them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    # Where the rows came from: the simulator or a CSV file (decides the split protocol).
    source: Literal["simulator", "csv"]
    features: list[Feature] = Field(min_length=1)
    target: str
    # The raw label of the positive class; the stored target column is always 0/1.
    positive_label: bool | int | str = 1
    # What the classes are called (travels with the model, so the service knows too).
    class_names: ClassNames = ClassNames()
    # Orders rows in time (simulator: TX_DATETIME); None for data without time.
    time_column: str | None = None
    # The card/customer a row belongs to (used by card precision top-k); optional.
    group_column: str | None = None
    # A typical row, used for the MLflow input example and the API's docs.
    example: dict[str, float | str] = {}

    @model_validator(mode="after")
    def _names_are_unique(self) -> FeatureSchema:
        names = self.names
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"duplicate feature names: {duplicated}")
        if self.target in names:
            raise ValueError(f"the target '{self.target}' is also listed as a feature")
        return self

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def numeric(self) -> list[str]:
        return [feature.name for feature in self.features if feature.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [feature.name for feature in self.features if feature.kind == "categorical"]

    @property
    def fingerprint(self) -> str:
        """A short id of the schema, stamped on every logged prediction so the monitor can
        tell which rows it may compare with a reference."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @property
    def context_columns(self) -> list[str]:
        """Non-feature columns that travel with the rows (time, card)."""
        return [c for c in (self.time_column, self.group_column) if c is not None]


def check_frame(frame: pd.DataFrame, schema: FeatureSchema, *, with_target: bool) -> None:
    """Raise :class:`SchemaMismatchError` naming every column that breaks the schema."""
    required = schema.names + ([schema.target] if with_target else [])
    problems = [f"missing column '{name}'" for name in required if name not in frame.columns]
    for name in schema.numeric:
        if name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name]):
            problems.append(f"column '{name}' should be numeric, found dtype {frame[name].dtype}")
    if with_target and schema.target in frame.columns:
        problems += target_problems(frame[schema.target], schema)
    if problems:
        raise SchemaMismatchError("; ".join(problems))


def target_problems(target: pd.Series, schema: FeatureSchema) -> list[str]:
    """What is wrong with a target column ([] when it is all 0 and 1)."""
    values = set(pd.unique(target).tolist())
    if values <= {0, 1}:
        return []
    shown = sorted(map(str, values))[:5]
    return [f"target '{schema.target}' must be 0/1 after ingestion, found {shown}"]


def example_row(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, float | str]:
    """A representative row: the median of numeric features, the mode of categorical ones."""
    row: dict[str, float | str] = {}
    for name in schema.numeric:
        median = float(frame[name].median())
        row[name] = 0.0 if math.isnan(median) else round(median, 4)
    for name in schema.categorical:
        modes = frame[name].dropna().mode()
        row[name] = str(modes.iloc[0]) if len(modes) else ""
    return row


def with_example(schema: FeatureSchema, frame: pd.DataFrame) -> FeatureSchema:
    return schema.model_copy(update={"example": example_row(frame, schema)})


def numeric_feature(
    name: str, description: str, *, minimum: float | None = None, maximum: float | None = None
) -> Feature:
    return Feature(
        name=name, kind="numeric", description=description, minimum=minimum, maximum=maximum
    )
