"""Stage `features`: engineer model inputs and write the feature schema."""

from __future__ import annotations

import logging

import pandas as pd

from fraud_detection.data import csv_source
from fraud_detection.data.dataset import DatasetInfo
from fraud_detection.features import feature_schema, transaction_features
from fraud_detection.io.files import load_params, read_json, read_parquet, write_json, write_parquet
from fraud_detection.params import Params
from fraud_detection.schema import FeatureSchema, with_example
from fraud_detection.workspace import FEATURES, PARAMS, RAW_DATA, RAW_INFO, SCHEMA
from pipelines._common import run


def _local(params: Params, info: DatasetInfo, log: logging.Logger) -> FeatureSchema:
    frame = read_parquet(RAW_DATA, made_by="data")
    if info.source == "simulator":
        schema = feature_schema(params.features)
        log.info(
            "computing %d features over %s transactions", len(schema.features), f"{len(frame):,}"
        )
        frame = transaction_features(frame, params.features)
    else:
        schema = csv_source.feature_schema(info, frame)
    write_parquet(frame, FEATURES)
    return with_example(schema, frame)


def _on_dask(params: Params, info: DatasetInfo, log: logging.Logger) -> FeatureSchema:
    """The same features from the day files, on the cluster; FEATURES becomes a folder."""
    # Imported here: the local engine does not load Dask.
    from fraud_detection.cluster.features import dask_transaction_features  # noqa: PLC0415
    from fraud_detection.io.dask_cluster import dask_client  # noqa: PLC0415
    from fraud_detection.io.day_partitions import read_days, write_parts  # noqa: PLC0415

    dask = params.engine.dask
    schema = feature_schema(params.features)
    with dask_client(dask, log):
        transactions = read_days(RAW_DATA, rows_per_partition=dask.rows_per_partition)
        log.info(
            "computing %d features over %s transactions in %d partition(s)",
            len(schema.features),
            f"{info.rows:,}",
            transactions.npartitions,
        )
        features = dask_transaction_features(transactions, params.features)
        write_parts(features, FEATURES)
        # The example row is the median of each feature: approximate on Dask (t-digest).
        medians = read_days(FEATURES)[schema.numeric].median_approximate().compute()
    return with_example(schema, pd.DataFrame([medians]))


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS)
    info = DatasetInfo.model_validate(read_json(RAW_INFO, made_by="data"))
    on_dask = params.engine.kind == "dask" and info.source == "simulator"
    schema = _on_dask(params, info, log) if on_dask else _local(params, info, log)
    # The class names travel on with the schema, into the model and the service.
    schema = schema.model_copy(update={"class_names": info.class_names})
    write_json(schema, SCHEMA)
    categorical = len(schema.categorical)
    return f"{len(schema.features)} features ({categorical} categorical), {info.rows:,} rows"


if __name__ == "__main__":
    run("features", main)
