"""Stage `data`: produce the raw table, from the simulator or from a CSV file."""

from __future__ import annotations

import logging

from fraud_detection.data.csv_source import prepare_csv
from fraud_detection.data.dataset import DatasetInfo
from fraud_detection.data.simulator import simulate
from fraud_detection.io.files import load_params, read_csv_table, write_json, write_parquet
from fraud_detection.workspace import PARAMS, RAW_DATA, RAW_INFO
from pipelines._common import progress_logger, run


def main(log: logging.Logger) -> str:
    params = load_params(PARAMS).data
    if params.source == "simulator":
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
        info = DatasetInfo(
            source="simulator",
            target="TX_FRAUD",
            time_column="TX_DATETIME",
            group_column="CUSTOMER_ID",
            rows=len(frame),
            positives=int(frame["TX_FRAUD"].sum()),
            class_names=params.class_names,
        )
    else:
        log.info("reading %s", params.csv.path)
        frame, info = prepare_csv(read_csv_table(params.csv.path), params.csv)
        info = info.model_copy(update={"class_names": params.class_names})
        log.info(
            "%d numeric and %d categorical feature column(s)",
            len(info.numeric),
            len(info.categorical),
        )
    write_parquet(frame, RAW_DATA)
    write_json(info, RAW_INFO)
    positive = info.class_names.positive
    return (
        f"{info.rows:,} rows, {info.positives:,} {positive} ({info.positive_share:.2%}) "
        f"from {info.source}"
    )


if __name__ == "__main__":
    run("data", main)
