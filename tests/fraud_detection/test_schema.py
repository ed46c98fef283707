"""The feature schema: validation, column roles, frame checks and the example row."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pydantic
import pytest

from fraud_detection.errors import SchemaMismatchError
from fraud_detection.schema import (
    Feature,
    FeatureSchema,
    check_frame,
    example_row,
    numeric_feature,
    with_example,
)


@pytest.fixture
def schema() -> FeatureSchema:
    return FeatureSchema(
        source="csv",
        features=[
            numeric_feature("amount", "an amount", minimum=0),
            Feature(name="country", kind="categorical", categories=["BE", "FR"]),
            numeric_feature("hour", "hour of day", minimum=0, maximum=23),
        ],
        target="label",
        time_column="when",
        group_column="card",
    )


def test_roles(schema):
    assert schema.names == ["amount", "country", "hour"]
    assert schema.numeric == ["amount", "hour"]
    assert schema.categorical == ["country"]
    assert schema.context_columns == ["when", "card"]
    assert schema.features[0].minimum == 0
    assert schema.features[2].maximum == 23


def test_context_columns_skip_missing_roles():
    schema = FeatureSchema(source="csv", features=[Feature(name="a", kind="numeric")], target="y")
    assert schema.context_columns == []
    schema = FeatureSchema(
        source="csv", features=[Feature(name="a", kind="numeric")], target="y", group_column="g"
    )
    assert schema.context_columns == ["g"]


def test_duplicate_feature_names_are_rejected():
    with pytest.raises(pydantic.ValidationError, match=r"duplicate feature names: \['a'\]"):
        FeatureSchema(
            source="csv",
            features=[Feature(name="a", kind="numeric"), Feature(name="a", kind="categorical")],
            target="y",
        )


def test_target_cannot_be_a_feature():
    with pytest.raises(pydantic.ValidationError, match="the target 'y' is also listed"):
        FeatureSchema(source="csv", features=[Feature(name="y", kind="numeric")], target="y")


def test_schema_needs_at_least_one_feature():
    with pytest.raises(pydantic.ValidationError, match="at least 1 item"):
        FeatureSchema(source="csv", features=[], target="y")


def test_the_fingerprint_follows_the_content(schema):
    copy = FeatureSchema.model_validate_json(schema.model_dump_json())
    assert copy.fingerprint == schema.fingerprint
    assert len(schema.fingerprint) == 16
    renamed = schema.model_copy(
        update={"features": [schema.features[0].model_copy(update={"name": "OTHER"})]}
    )
    assert renamed.fingerprint != schema.fingerprint
    bounded = schema.model_copy(
        update={"features": [schema.features[0].model_copy(update={"maximum": 1e6})]}
    )
    assert bounded.fingerprint != schema.fingerprint


def test_json_round_trip(schema):
    again = FeatureSchema.model_validate_json(schema.model_dump_json())
    assert again == schema
    assert again.features[1].categories == ["BE", "FR"]


def frame_for(schema: FeatureSchema) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [10.0, 20.0, 30.0, np.nan],
            "country": ["BE", "FR", "FR", None],
            "hour": [1.0, 2.0, 23.0, 4.0],
            "label": [0, 1, 0, 0],
        }
    )


def test_check_frame_accepts_a_matching_frame(schema):
    frame = frame_for(schema)
    check_frame(frame, schema, with_target=True)
    check_frame(frame.drop(columns="label"), schema, with_target=False)
    # Extra columns are allowed.
    check_frame(frame.assign(extra=1), schema, with_target=True)


def test_check_frame_names_every_problem(schema):
    frame = frame_for(schema).drop(columns="hour")
    frame["amount"] = ["a", "b", "c", "d"]
    frame["label"] = [0, 2, 1, 0]
    with pytest.raises(SchemaMismatchError) as caught:
        check_frame(frame, schema, with_target=True)
    message = str(caught.value)
    assert "missing column 'hour'" in message
    assert "column 'amount' should be numeric" in message
    # The offending values are listed (0, 1 and the stray 2), whatever their repr.
    assert re.search(r"target 'label' must be 0/1 after ingestion, found \[.*0.*1.*2\D*\]", message)


def test_check_frame_requires_the_target_only_when_asked(schema):
    frame = frame_for(schema).drop(columns="label")
    with pytest.raises(SchemaMismatchError, match="missing column 'label'"):
        check_frame(frame, schema, with_target=True)
    check_frame(frame, schema, with_target=False)


def test_example_row_uses_median_and_mode(schema):
    row = example_row(frame_for(schema), schema)
    assert row == {"amount": 20.0, "hour": 3.0, "country": "FR"}


def test_example_row_falls_back_when_a_column_is_empty(schema):
    frame = frame_for(schema)
    frame["amount"] = np.nan
    frame["country"] = None
    row = example_row(frame, schema)
    assert row["amount"] == 0.0
    assert row["country"] == ""


def test_with_example_returns_a_new_schema(schema):
    updated = with_example(schema, frame_for(schema))
    assert updated.example == {"amount": 20.0, "hour": 3.0, "country": "FR"}
    assert schema.example == {}
    assert updated.names == schema.names
