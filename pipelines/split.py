"""Stage `split`: training and test sets (time-ordered protocol, or a hold-out)."""

from __future__ import annotations

import logging

from fraud_detection.io.files import load_params, read_json, read_parquet, write_json, write_parquet
from fraud_detection.schema import FeatureSchema
from fraud_detection.split import split_dataset
from fraud_detection.workspace import FEATURES, PARAMS, SCHEMA, SPLIT_SUMMARY, TEST_SET, TRAIN_SET
from pipelines._common import run


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS).split
    schema = FeatureSchema.model_validate(read_json(SCHEMA, made_by="features"))
    split = split_dataset(read_parquet(FEATURES, made_by="features"), schema, params)
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
