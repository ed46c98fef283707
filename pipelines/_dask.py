"""What the stages that train on Dask share: a stage output's rows on the cluster.

Imported only by the Dask engine (the local engine does not load Dask).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import dask.dataframe as dd
import numpy as np
from distributed import Client
from numpy.typing import NDArray

from fraud_detection.cluster.training import DaskFitter, numbered
from fraud_detection.io.dask_cluster import worker_count
from fraud_detection.io.day_partitions import read_rows
from fraud_detection.params import DaskParams, TrainParams
from fraud_detection.schema import FeatureSchema, check_frame
from fraud_detection.workspace import TRAIN_SET


def rows_on_dask(
    client: Client,
    path: Path,
    schema: FeatureSchema,
    dask: DaskParams,
    *,
    rows: int,
    log: logging.Logger,
) -> dd.DataFrame:
    """The file's features and target, numbered, cut into at least one partition a worker
    and held in the workers' memory (every fit reads them again)."""
    partitions = max(worker_count(client), math.ceil(rows / dask.rows_per_partition))
    frame = read_rows(path, [*schema.names, schema.target], partitions=partitions, made_by="split")
    check_frame(frame._meta, schema, with_target=False)  # the columns and their types
    log.info("%s: %s rows in %d partition(s) on the workers", path, f"{rows:,}", partitions)
    persisted: dd.DataFrame = numbered(frame).persist()
    return persisted


def training_fitter(
    client: Client,
    y: NDArray[np.int64],
    schema: FeatureSchema,
    params: TrainParams,
    dask: DaskParams,
    *,
    positive_share: float,
    log: logging.Logger,
) -> DaskFitter:
    """A fitter over the training set's rows (the split stage's output)."""
    frame = rows_on_dask(client, TRAIN_SET, schema, dask, rows=len(y), log=log)
    return DaskFitter.over(client, frame, y, schema, params, positive_share=positive_share)
