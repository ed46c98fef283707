"""The simulator's payments as a Parquet dataset with one file a day, written by Dask
workers in parallel; no process holds more than one task's days.

Each task draws a block of days (``simulate`` with its margins, so a day's payments and
labels are the ones a single run would draw) and writes one file a day. Transaction ids
run over the whole dataset in time order, as in a single run; they need the row counts
of all earlier days, so a second pass adds each day's offset once the counts are in.
The dataset is staged beside its target and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client

from fraud_detection.data.simulator import make_world, simulate
from fraud_detection.errors import MissingInputError
from fraud_detection.features import ID_COLUMN
from fraud_detection.io.files import atomic_path
from fraud_detection.params import SimulatorParams


@dataclass(frozen=True)
class DayFile:
    day: int
    path: str
    rows: int
    positives: int


def day_blocks(n_days: int, days_per_task: int) -> list[range]:
    """Consecutive blocks of at most ``days_per_task`` days covering ``range(n_days)``."""
    return [range(s, min(s + days_per_task, n_days)) for s in range(0, n_days, days_per_task)]


def day_file_name(params: SimulatorParams, day: int) -> str:
    """Files named by date sort in time order, which is how readers list them."""
    return f"{(params.start_date + dt.timedelta(days=day)).isoformat()}.parquet"


def _write_block(params: SimulatorParams, days: range, folder: str) -> list[DayFile]:
    """A task: simulate ``days``, one file a day, ids counted from 0 within each day."""
    frame = simulate(params, days=days, world=make_world(params))
    written = []
    day_of_row = frame["TX_TIME_DAYS"].to_numpy()
    for day in (int(d) for d in np.unique(day_of_row)):
        part = frame[day_of_row == day].reset_index(drop=True)
        part[ID_COLUMN] = np.arange(len(part), dtype=np.int64)
        path = str(Path(folder) / day_file_name(params, day))
        part.to_parquet(path, index=False)
        written.append(DayFile(day, path, len(part), int(part["TX_FRAUD"].sum())))
    return written


def _add_offset(path: str, offset: int) -> None:
    """A task: make a day file's ids global by adding the rows of all earlier days."""
    table = pq.read_table(path)
    position = table.schema.get_field_index(ID_COLUMN)
    ids = pa.array(np.asarray(table.column(ID_COLUMN)) + offset, type=pa.int64())
    pq.write_table(table.set_column(position, ID_COLUMN, ids), path)


def simulate_by_day(
    client: Client, params: SimulatorParams, target: Path, days_per_task: int
) -> Sequence[DayFile]:
    """Write the simulated dataset to ``target`` (a folder of day files) on ``client``."""
    with atomic_path(target) as staging:
        staging.mkdir()
        blocks = day_blocks(params.n_days, days_per_task)
        futures = client.map(
            _write_block, [params] * len(blocks), blocks, [str(staging)] * len(blocks)
        )
        files = sorted(itertools.chain.from_iterable(_gather(client, futures)), key=lambda f: f.day)
        offsets = itertools.accumulate((f.rows for f in files[:-1]), initial=0)
        _gather(client, client.map(_add_offset, [f.path for f in files], list(offsets)))
    return [DayFile(f.day, str(target / Path(f.path).name), f.rows, f.positives) for f in files]


def _gather(client: Client, futures: list[Any]) -> list[Any]:
    """The tasks' results; on an error, raised once every task has ended. ``gather`` raises
    at the first failed task while the others still write into the staging folder: removed
    under them, it was now and then left behind (a file made between its listing and its
    removal). A running task cannot be stopped, so the others are waited for."""
    try:
        results: list[Any] = client.gather(futures)
    except Exception:
        with contextlib.suppress(Exception):  # e.g. all cancelled: the scheduler is lost
            client.gather(futures, errors="skip")  # returns once every future has ended
        raise
    return results


def read_days(folder: Path, rows_per_partition: int | None = None) -> dd.DataFrame:
    """A folder of Parquet files as a Dask DataFrame indexed by transaction id.

    Each file is a partition whose id range (from the files' statistics) is its division,
    so joins on the id need no shuffle. With ``rows_per_partition``, neighbouring files
    are combined up to that many rows (a cut only between files; no data moves).
    """
    if not folder.exists():
        raise MissingInputError(
            f"{folder} does not exist; it is made by the 'data' stage: run `dvc repro data`"
        )
    frame: dd.DataFrame = dd.read_parquet(str(folder), index=ID_COLUMN, calculate_divisions=True)
    if rows_per_partition is None or frame.npartitions == 1:
        return frame
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]
    rows = [pq.read_metadata(path).num_rows for path in files]
    if len(rows) != frame.npartitions:  # files of several row groups: keep Dask's cut
        return frame
    cuts, filled = [0], 0
    for index, count in enumerate(rows):
        if filled and filled + count > rows_per_partition:
            cuts.append(index)
            filled = 0
        filled += count
    divisions = (*(frame.divisions[i] for i in cuts), frame.divisions[-1])
    combined: dd.DataFrame = frame.repartition(divisions=divisions)
    return combined


def write_parts(frame: dd.DataFrame, target: Path) -> None:
    """A Dask DataFrame as a folder of Parquet files, one a partition, in order."""
    with atomic_path(target) as staging:
        frame.to_parquet(
            str(staging), write_index=False, name_function=lambda i: f"part-{i:05d}.parquet"
        )


def read_rows(path: Path, columns: list[str], *, partitions: int, made_by: str) -> dd.DataFrame:
    """A stage's Parquet output as a Dask DataFrame of ``partitions`` runs of consecutive
    rows, in the file's order (the order the stage process reads its labels in)."""
    if not path.exists():
        raise MissingInputError(
            f"{path} does not exist; it is made by the '{made_by}' stage: run `dvc repro {made_by}`"
        )
    frame: dd.DataFrame = dd.read_parquet(str(path), columns=columns)
    if frame.npartitions != partitions:
        frame = frame.repartition(npartitions=partitions)
    return frame
