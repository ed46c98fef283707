"""Stage `features`: engineer model inputs and write the feature schema."""

from __future__ import annotations

import logging

from fraud_detection.data import csv_source
from fraud_detection.data.dataset import DatasetInfo
from fraud_detection.features import feature_schema, transaction_features
from fraud_detection.io.files import load_params, read_json, read_parquet, write_json, write_parquet
from fraud_detection.schema import with_example
from fraud_detection.workspace import FEATURES, PARAMS, RAW_DATA, RAW_INFO, SCHEMA
from pipelines._common import run


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS).features
    info = DatasetInfo.model_validate(read_json(RAW_INFO, made_by="data"))
    frame = read_parquet(RAW_DATA, made_by="data")
    if info.source == "simulator":
        schema = feature_schema(params)
        log.info(
            "computing %d features over %s transactions", len(schema.features), f"{len(frame):,}"
        )
        frame = transaction_features(frame, params)
    else:
        schema = csv_source.feature_schema(info, frame)
    # The class names travel on with the schema, into the model and the service.
    schema = with_example(schema, frame).model_copy(update={"class_names": info.class_names})
    write_parquet(frame, FEATURES)
    write_json(schema, SCHEMA)
    categorical = len(schema.categorical)
    return f"{len(schema.features)} features ({categorical} categorical), {len(frame):,} rows"


if __name__ == "__main__":
    run("features", main)
