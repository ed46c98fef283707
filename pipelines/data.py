"""Stage `data`: produce the raw table, from the simulator or from a CSV file."""

from __future__ import annotations

import logging

from fraud_detection.data.csv_source import prepare_csv
from fraud_detection.data.dataset import DatasetInfo
from fraud_detection.data.simulator import simulate
from fraud_detection.features import GROUP_COLUMN, TARGET, TIME_COLUMN
from fraud_detection.io.files import load_params, read_csv_table, write_json, write_parquet
from fraud_detection.params import DaskParams, DataParams
from fraud_detection.workspace import PARAMS, RAW_DATA, RAW_INFO
from pipelines._common import progress_logger, run


def _simulate_on_dask(params: DataParams, dask: DaskParams, log: logging.Logger) -> DatasetInfo:
    """The simulated days as one Parquet file a day (RAW_DATA is then a folder)."""
    # Imported here: the local engine does not load Dask.
    from fraud_detection.io.dask_cluster import dask_client  # noqa: PLC0415
    from fraud_detection.io.day_partitions import simulate_by_day  # noqa: PLC0415

    sim = params.simulator
    log.info(
        "simulating %d customers, %d terminals, %d days from %s on Dask, %d day(s) a task",
        sim.n_customers,
        sim.n_terminals,
        sim.n_days,
        sim.start_date,
        dask.days_per_task,
    )
    with dask_client(dask, log) as client:
        files = simulate_by_day(client, params.simulator, RAW_DATA, dask.days_per_task)
    log.info("%d day files in %s/", len(files), RAW_DATA)
    return _simulated(params, sum(f.rows for f in files), sum(f.positives for f in files))


def _simulate(params: DataParams, log: logging.Logger) -> DatasetInfo:
    sim = params.simulator
    log.info(
        "simulating %d customers, %d terminals, %d days from %s (seed %d)",
        sim.n_customers,
        sim.n_terminals,
        sim.n_days,
        sim.start_date,
        sim.seed,
    )
    frame = simulate(sim, progress=progress_logger(log, "days simulated"))
    write_parquet(frame, RAW_DATA)
    return _simulated(params, len(frame), int(frame[TARGET].sum()))


def _simulated(params: DataParams, rows: int, positives: int) -> DatasetInfo:
    """The simulator's table, in the column names the features module defines."""
    return DatasetInfo(
        source="simulator",
        target=TARGET,
        time_column=TIME_COLUMN,
        group_column=GROUP_COLUMN,
        rows=rows,
        positives=positives,
        class_names=params.class_names,
    )


def _read_csv(params: DataParams, log: logging.Logger) -> DatasetInfo:
    log.info("reading %s", params.csv.path)
    frame, info = prepare_csv(read_csv_table(params.csv.path), params.csv)
    log.info(
        "%d numeric and %d categorical feature column(s)",
        len(info.numeric),
        len(info.categorical),
    )
    write_parquet(frame, RAW_DATA)
    return info.model_copy(update={"class_names": params.class_names})


def main(log: logging.Logger) -> str:
    everything = load_params(PARAMS)
    params, engine = everything.data, everything.engine
    if engine.kind == "dask" and params.source == "csv":
        log.info("engine: dask covers the simulator's data; a CSV file is read in this process")
    if params.source == "csv":
        info = _read_csv(params, log)
    elif engine.kind == "dask":
        info = _simulate_on_dask(params, engine.dask, log)
    else:
        info = _simulate(params, log)
    write_json(info, RAW_INFO)
    positive = info.class_names.positive
    return (
        f"{info.rows:,} rows, {info.positives:,} {positive} ({info.positive_share:.2%}) "
        f"from {info.source}"
    )


if __name__ == "__main__":
    run("data", main)
