"""Stage `split`: training and test sets (time-ordered protocol, or a hold-out)."""

from __future__ import annotations

import logging

import pandas as pd

from fraud_detection.io.files import load_params, read_json, read_parquet, write_json, write_parquet
from fraud_detection.params import SplitParams
from fraud_detection.schema import FeatureSchema
from fraud_detection.split import check_coverage, period, split_dataset
from fraud_detection.workspace import FEATURES, PARAMS, SCHEMA, SPLIT_SUMMARY, TEST_SET, TRAIN_SET
from pipelines._common import run


def read_features(schema: FeatureSchema, params: SplitParams, log: logging.Logger) -> pd.DataFrame:
    """The features table; for the time-ordered protocol only the protocol's days.

    The days outside the training and test periods are never used: reading only the
    protocol's rows keeps the stage's memory to those weeks whatever the dataset's length
    (a folder of day files is then read only where its files hold those days).
    """
    time = schema.time_column
    if schema.source != "simulator" or time is None:
        return read_parquet(FEATURES, made_by="features")
    when = read_parquet(FEATURES, made_by="features", columns=[time])[time]
    days = period(params)
    check_coverage(days, when.min(), when.max())
    end = days.test_last + pd.Timedelta(days=1)
    frame = read_parquet(
        FEATURES,
        made_by="features",
        filters=[(time, ">=", days.train_first), (time, "<", end)],
    )
    log.info("read %s of %s rows: the protocol's days", f"{len(frame):,}", f"{len(when):,}")
    return frame


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS).split
    schema = FeatureSchema.model_validate(read_json(SCHEMA, made_by="features"))
    split = split_dataset(read_features(schema, params, log), schema, params)
    for key, value in split.summary.items():
        log.info("%s: %s", key, value)
    write_parquet(split.train, TRAIN_SET)
    write_parquet(split.test, TEST_SET)
    write_json(split.summary, SPLIT_SUMMARY)
    s, positive = split.summary, schema.class_names.positive
    return (
        f"{s['protocol']}: train {s['train_rows']:,} rows ({s['train_positives']} {positive}), "
        f"test {s['test_rows']:,} rows ({s['test_positives']} {positive})"
    )


if __name__ == "__main__":
    run("split", main)
