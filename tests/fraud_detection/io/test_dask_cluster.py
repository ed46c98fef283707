"""The Dask engine's failures end in one line that says what is wrong and how to fix it,
and leave no process or half-written dataset behind: on a real scheduler, LocalCluster and
worker processes, no mocks.

Tests that kill a worker start their own cluster, with ``allowed-failures`` at 0 so the
scheduler gives up on the first death (by default it retries a task on three more workers).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from distributed import Client

from fraud_detection.data.simulator import simulate
from fraud_detection.errors import USER_ERRORS, ClusterError
from fraud_detection.io.dask_cluster import SCHEDULER_VARIABLE, dask_client
from fraud_detection.io.day_partitions import simulate_by_day
from fraud_detection.params import (
    CompromisedCardScenario,
    DaskParams,
    FraudScenarios,
    SimulatorParams,
)

LOG = logging.getLogger(__name__)

TINY = SimulatorParams(n_customers=50, n_terminals=100, start_date=dt.date(2018, 4, 1), n_days=6)

# Days 0-4 are the calendar's last five days (9999-12-27 to 31); day 5 has no date, so
# simulating it raises OverflowError in the worker. Leaked cards last a day: a task draws
# only its own days (no margin), so the block of days 0-2 is written and days 3-5 fail.
PAST_THE_CALENDAR = TINY.model_copy(
    update={
        "start_date": dt.date.max - dt.timedelta(days=4),
        "scenarios": FraudScenarios(compromised_cards=CompromisedCardScenario(duration_days=1)),
    }
)

MB = 1 << 20


# --------------------------------------------------------------------- helpers


def _kill_own_worker() -> None:
    """A task: the worker process running it dies at once (as the kernel's OOM killer does)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _allocate_past(limit_bytes: int) -> int:
    """A task: allocate and touch memory in 16 MB blocks up to 4 times the worker's limit.

    The nanny samples its worker's memory every 100 ms and restarts it past 95% of the
    limit. One ``np.ones`` of 1 GB would outrun it: the process could hold the whole GB
    before the nanny looks, and on a small machine the kernel's OOM killer might pick this
    test's process instead. Growing in steps keeps the worker within ~100 MB of the limit
    when the nanny acts. A worker that is not stopped returns, and the test fails."""
    blocks: list[np.ndarray[Any, Any]] = []
    while len(blocks) * 16 * MB < 4 * limit_bytes:
        blocks.append(np.ones(16 * MB, dtype=np.uint8))
        time.sleep(0.02)
    return len(blocks)


def _processes_of_this_test() -> set[int]:
    """Live descendants of this process, but multiprocessing's resource tracker: started on
    first use, it lives as long as this process does."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(child.pid)
    return pids


def _left_behind(before: set[int], seconds: float = 5.0) -> set[int]:
    """Processes started since ``before`` still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := _processes_of_this_test() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _run_on_own_cluster(memory_limit_gb: float, seen: set[int], task: Any, *args: Any) -> Any:
    """The result of ``task`` on a LocalCluster of one worker whose first death fails the
    task (KilledWorker); ``seen`` gets the processes running while the cluster is up."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        dask_client(DaskParams(workers=1, memory_limit_gb=memory_limit_gb), LOG) as client,
    ):
        seen.update(_processes_of_this_test())
        return client.gather(client.submit(task, *args, pure=False))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed: nothing listens on it


@pytest.fixture
def no_scheduler_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_VARIABLE, raising=False)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A LocalCluster of two workers, shared by the tests that keep their workers alive."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(SCHEDULER_VARIABLE, raising=False)
        with dask_client(DaskParams(workers=2, memory_limit_gb=1.0), LOG) as connected:
            yield connected


# --------------------------------------------------------------------- the cluster


def test_an_unreachable_scheduler_is_one_line_naming_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    monkeypatch.setenv(SCHEDULER_VARIABLE, address)
    started = time.monotonic()
    with (
        pytest.raises(ClusterError) as caught,
        dask_client(DaskParams(connect_timeout_seconds=1.0), LOG),
    ):
        pytest.fail("connected to a scheduler nobody runs")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert address in message
    assert SCHEDULER_VARIABLE in message
    assert "within 1.0s" in message
    assert "`dask scheduler`" in message  # the fix: start one, or unset the variable
    assert f"unset {SCHEDULER_VARIABLE}" in message
    assert caught.value.__cause__ is None  # the stage prints this line, not a traceback
    assert isinstance(caught.value, USER_ERRORS)


@pytest.mark.slow
@pytest.mark.usefixtures("no_scheduler_address")
def test_a_worker_killed_under_its_task_is_a_cluster_error() -> None:
    before, seen = _processes_of_this_test(), set[int]()
    with pytest.raises(ClusterError) as caught:
        _run_on_own_cluster(1.0, seen, _kill_own_worker)
    message = str(caught.value)
    assert "\n" not in message
    assert "KilledWorker" in message
    assert "engine.dask.memory_limit_gb = 1.0" in message  # what to raise
    assert "days_per_task" in message  # or what to make smaller
    assert seen - before  # the worker processes were children of this one...
    assert not _left_behind(before), "worker processes outlived the cluster"


@pytest.mark.slow
@pytest.mark.usefixtures("no_scheduler_address")
def test_a_task_past_the_memory_limit_is_a_cluster_error() -> None:
    # 0.5 GB, not less: a worker that has imported this module (pandas, pyarrow, pytest)
    # holds ~180 MiB, and past 80% of its limit it pauses: 0.25 GB's pause line (190 MiB)
    # is so close that the task might never start.
    limit_gb = 0.5
    before, seen = _processes_of_this_test(), set[int]()
    # A worker that is not stopped returns its count of blocks: "DID NOT RAISE".
    with pytest.raises(ClusterError) as caught:
        _run_on_own_cluster(limit_gb, seen, _allocate_past, int(limit_gb * 1e9))
    message = str(caught.value)
    assert "\n" not in message
    assert "KilledWorker" in message  # the nanny restarted the worker under its task
    assert f"engine.dask.memory_limit_gb = {limit_gb}" in message
    assert seen - before  # the worker processes were children of this one...
    assert not _left_behind(before), "worker processes outlived the cluster"


# --------------------------------------------------------------------- day files


def _listing(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): path.read_text() if path.is_file() else "/"
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.slow
@pytest.mark.parametrize("existed", [False, True], ids=["new", "replacing"])
def test_a_failed_task_leaves_nothing_behind(client: Client, tmp_path: Path, existed: bool) -> None:
    target = tmp_path / "dataset.parquet"
    if existed:
        target.mkdir()
        (target / "2018-04-01.parquet").write_text("the previous run's day")
    before = _listing(tmp_path)
    # Two blocks of three days run side by side on the two workers: one fails while the
    # other is still drawing or writing its days.
    with pytest.raises(OverflowError, match="date value out of range"):
        simulate_by_day(client, PAST_THE_CALENDAR, target, days_per_task=3)
    # None of its tasks still runs (it would write into a staging folder being removed)...
    assert not any(client.processing().values())
    # ... and neither the staging folder (.dataset.parquet.*.tmp) nor a partial target is
    # left: the previous dataset, if any, is untouched.
    assert _listing(tmp_path) == before


@pytest.mark.slow
def test_day_files_equal_a_single_run_exactly(client: Client, tmp_path: Path) -> None:
    target = tmp_path / "dataset.parquet"
    files = simulate_by_day(client, TINY, target, days_per_task=2)

    on_dask = pq.read_table(target).to_pandas()
    local = simulate(TINY)
    # Parquet has no unit of seconds: the simulator's datetime64[s] comes back in ms.
    for frame in (on_dask, local):
        frame["TX_DATETIME"] = frame["TX_DATETIME"].astype("datetime64[ns]")
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)
    assert on_dask["TRANSACTION_ID"].tolist() == list(range(len(local)))

    assert [f.day for f in files] == list(range(TINY.n_days))
    assert [f.rows for f in files] == local.groupby("TX_TIME_DAYS").size().tolist()
    assert sum(f.positives for f in files) == local["TX_FRAUD"].sum()
    assert [Path(f.path) for f in files] == sorted(target.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.parquet"]  # no staging left
