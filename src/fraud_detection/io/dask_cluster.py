"""The Dask cluster a stage runs on: the scheduler at DASK_SCHEDULER_ADDRESS, else a
LocalCluster shaped by params.yaml's ``engine.dask``.

Failures a user can fix end in one line (ClusterError): a scheduler that does not answer,
workers that cannot start, a worker lost mid-run (killed, or over its memory limit).

Only the Dask engine imports this module (and Dask): the local engine never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Iterator

from distributed import Client, LocalCluster

from fraud_detection.errors import ClusterError
from fraud_detection.params import DaskParams

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"

# What Dask raises when a worker died under a task (memory, SIGKILL) or the scheduler went.
# WorkerLostError: fraud_detection.cluster.training's, for a boosting fit a death broke.
_LOST_WORK = (
    "KilledWorker",
    "CommClosedError",
    "FutureCancelledError",
    "CancelledError",
    "WorkerLostError",
)


@contextlib.contextmanager
def dask_client(params: DaskParams, log: logging.Logger) -> Iterator[Client]:
    """A connected ``distributed.Client``; a LocalCluster started here is stopped after."""
    _quieten_dask()
    address = os.environ.get(SCHEDULER_VARIABLE, "").strip()
    timeout = f"{params.connect_timeout_seconds}s"
    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(Client(address, timeout=timeout))
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"no Dask scheduler answers at {address} ({SCHEDULER_VARIABLE}) within "
                    f"{timeout}: {_first_line(exc)}; start it (`dask scheduler`) or unset "
                    f"{SCHEDULER_VARIABLE} to run on a LocalCluster"
                ) from None
            log.info("Dask scheduler %s, %d worker(s)", address, worker_count(client))
        else:
            client = stack.enter_context(_local_cluster(params, timeout))
            log.info(
                "Dask LocalCluster: %d worker(s) x %d thread(s), %.1f GB each",
                params.workers,
                params.threads_per_worker,
                params.memory_limit_gb,
            )
        log.info("Dask dashboard: %s", client.dashboard_link)
        try:
            yield client
        except Exception as exc:
            if type(exc).__name__ in _LOST_WORK:
                raise ClusterError(lost_work_message(exc, params)) from None
            raise
        _log_peaks(client, log)


@contextlib.contextmanager
def _local_cluster(params: DaskParams, timeout: str) -> Iterator[Client]:
    try:
        cluster = LocalCluster(
            n_workers=params.workers,
            threads_per_worker=params.threads_per_worker,
            memory_limit=f"{params.memory_limit_gb}GB",
            host="127.0.0.1",  # loopback only: nothing outside this machine joins
            dashboard_address="127.0.0.1:0",
            processes=True,
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise ClusterError(
            f"the Dask LocalCluster did not start ({params.workers} worker(s) of "
            f"{params.memory_limit_gb} GB): {_first_line(exc)}"
        ) from None
    with cluster, Client(cluster, timeout=timeout) as client:
        _quieten_dask()
        yield client


def lost_work_message(exc: BaseException, params: DaskParams) -> str:
    return (
        f"the Dask cluster lost work: {type(exc).__name__}: {_first_line(exc).rstrip('.')}. "
        f"A worker died under a task: killed, or past its memory limit "
        f"(engine.dask.memory_limit_gb = {params.memory_limit_gb}); raise the limit or "
        "make the partitions smaller (engine.dask.days_per_task, rows_per_partition), then "
        "run the stage again (nothing it would write was written)"
    )


def _quieten_dask() -> None:
    """Dask logs every worker's start and stop at INFO from loggers it configured itself
    (after the stage's own logging was set up); a stage's output keeps its warnings."""
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Bokeh warns that its websocket accepts any origin: the dashboard listens on
    # loopback only, so only pages on this machine reach it.
    logging.getLogger("bokeh").setLevel(logging.ERROR)


def _peak_mb() -> int:
    """This process's peak resident memory (Linux reports it in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _log_peaks(client: Client, log: logging.Logger) -> None:
    """The peak memory of this process and of each worker: what the stage held, and
    whether any worker came near its limit (benchmarks/dask_scale.py reads this line)."""
    workers = client.run(_peak_mb)
    shown = ", ".join(str(workers[w]) for w in sorted(workers))
    log.info("peak memory: this process %d MB; workers %s MB", _peak_mb(), shown)


def worker_count(client: Client) -> int:
    info = client.scheduler_info()
    return len(info.get("workers", {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
