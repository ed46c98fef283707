"""The features on Dask equal the local path's bit for bit, on a real LocalCluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from fraud_detection.cluster.features import dask_transaction_features
from fraud_detection.data.simulator import simulate
from fraud_detection.features import feature_schema, transaction_features
from fraud_detection.io.day_partitions import day_file_name, read_days
from fraud_detection.io.files import parquet_frame
from fraud_detection.params import FeatureParams, SimulatorParams

pytestmark = pytest.mark.slow

SMALL = SimulatorParams(n_customers=400, n_terminals=800, start_date=dt.date(2018, 4, 1), n_days=45)
SHORT = FeatureParams(
    customer_windows_days=[1, 7], terminal_windows_days=[1, 3], label_delay_days=2
)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


def _with_ties(frame: pd.DataFrame) -> pd.DataFrame:
    """Copies of some payments at the same second, card and terminal: where the order of
    rows decides a count, the Dask path must decide it as the local path does."""
    copies = frame.iloc[::97].copy()
    copies["TX_AMOUNT"] = (copies["TX_AMOUNT"] * 3).round(2)
    copies["TX_FRAUD"] = 1 - copies["TX_FRAUD"]
    both = pd.concat([frame, copies]).sort_values("TX_TIME_SECONDS", kind="stable")
    both = both.reset_index(drop=True)
    both["TRANSACTION_ID"] = np.arange(len(both), dtype=np.int64)
    return both


def _day_files(frame: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    for day in frame["TX_TIME_DAYS"].unique():
        part = frame[frame["TX_TIME_DAYS"] == day]
        part.to_parquet(folder / day_file_name(SMALL, int(day)), index=False)
    return folder


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _day_files(_with_ties(simulate(SMALL)), tmp_path_factory.mktemp("raw") / "days")


@pytest.mark.parametrize("rows_per_partition", [None, 6_000])
def test_dask_features_equal_the_local_ones_exactly(
    client: Client, days: Path, rows_per_partition: int | None
) -> None:
    transactions = read_days(days, rows_per_partition=rows_per_partition)
    if rows_per_partition:
        assert 1 < transactions.npartitions < SMALL.n_days
    local = transaction_features(parquet_frame(days), SHORT)
    on_dask = dask_transaction_features(transactions, SHORT).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)
    assert list(on_dask.columns[-len(feature_schema(SHORT).names) + 1 :]) == [
        name for name in feature_schema(SHORT).names if name != "TX_AMOUNT"
    ]


def test_the_result_keeps_the_input_partitions(client: Client, days: Path) -> None:
    transactions = read_days(days, rows_per_partition=6_000)
    features = dask_transaction_features(transactions, SHORT)
    assert features.npartitions == transactions.npartitions
    sizes = features.map_partitions(len).compute().tolist()
    assert sizes == transactions.map_partitions(len).compute().tolist()


def test_a_frame_without_known_divisions_is_refused(client: Client, days: Path) -> None:
    unknown = dd.read_parquet(str(days), index="TRANSACTION_ID", calculate_divisions=False)
    not_indexed = dd.read_parquet(str(days))
    for frame in (unknown, not_indexed):
        with pytest.raises(ValueError, match="indexed by TRANSACTION_ID with known divisions"):
            dask_transaction_features(frame, SHORT)


def test_missing_columns_are_named(client: Client, days: Path) -> None:
    transactions = read_days(days).drop(columns=["TERMINAL_ID"])
    with pytest.raises(ValueError, match="TERMINAL_ID"):
        dask_transaction_features(transactions, SHORT)
