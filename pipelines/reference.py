"""Stage `reference`: the training period with held-out scores, for the drift monitor."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fraud_detection.calibration import calibrator_of
from fraud_detection.io.files import (
    load_params,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)
from fraud_detection.io.model_package import load_model_package
from fraud_detection.modeling import Selection
from fraud_detection.params import DaskParams
from fraud_detection.reference import (
    held_out_folds,
    held_out_scores,
    reference_info,
    reference_table,
)
from fraud_detection.registry import FINGERPRINT_KEY
from fraud_detection.schema import FeatureSchema, check_frame
from fraud_detection.workspace import (
    MODEL_DIR,
    PARAMS,
    REFERENCE,
    REFERENCE_INFO,
    SELECTION,
    TRAIN_SET,
)
from pipelines._common import run


def held_out_on_dask(
    selection: Selection,
    train: pd.DataFrame,
    schema: FeatureSchema,
    dask: DaskParams,
    log: logging.Logger,
) -> NDArray[np.float64]:
    """The held-out scores with each fold's refit across the Dask workers."""
    # Imported here: the local engine does not load Dask.
    from fraud_detection.cluster import training  # noqa: PLC0415
    from fraud_detection.io.dask_cluster import dask_client  # noqa: PLC0415
    from pipelines._dask import training_fitter  # noqa: PLC0415

    y = train[schema.target].to_numpy(dtype=np.int64)
    times = train[schema.time_column] if schema.time_column else None
    folds = held_out_folds(y, times, seed=selection.seed)
    with dask_client(dask, log) as client:
        fitter = training_fitter(
            client,
            y,
            schema,
            selection.recipe(),
            dask,
            positive_share=selection.positive_share,
            log=log,
        )
        return training.held_out_on_dask(selection.candidate, fitter, folds)


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS)
    package = load_model_package(MODEL_DIR)
    schema = package.schema
    selection = Selection.model_validate(read_json(SELECTION, made_by="train"))
    train = read_parquet(TRAIN_SET, made_by="split")
    check_frame(train, schema, with_target=True)
    started = time.perf_counter()
    if params.engine.kind == "dask":
        raw = held_out_on_dask(selection, train, schema, params.engine.dask, log)
    else:
        raw = held_out_scores(
            selection.unfitted_pipeline(schema), train, schema, seed=selection.seed
        )
    # The service answers calibrated probabilities: the reference must hold the same kind.
    calibrator = calibrator_of(package.pipeline)
    scores = calibrator.predict(raw)
    log.info(
        "scored %s training rows with %s refitted without each row's day, then %r, in %.1f s",
        f"{len(train):,}",
        selection.candidate.family,
        calibrator,
        time.perf_counter() - started,
    )
    table = reference_table(train, schema, scores, package.threshold)
    info = reference_info(
        table,
        schema,
        package.threshold,
        scored_by=f"{selection.candidate.family}, refitted without the row's day, {calibrator!r}",
        model_name=package.metadata.get("registered_model_name"),
        model_fingerprint=package.metadata.get(FINGERPRINT_KEY),
        test_metrics={k: float(v) for k, v in (package.metadata.get("test_metrics") or {}).items()},
    )
    write_parquet(table, REFERENCE)
    write_json(info.model_dump(mode="json"), REFERENCE_INFO)
    flagged = int(table["is_fraud"].sum())
    return (
        f"{len(table):,} reference rows ({info.positives:,} {schema.class_names.positive}, "
        f"{flagged:,} flagged at "
        f"threshold {package.threshold:.3f}), mean score {scores.mean():.4f}"
    )


if __name__ == "__main__":
    run("reference", main)
