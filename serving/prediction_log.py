"""The service's side of the prediction log: every answered prediction is in the log.

The table and the stores (a SQLite file, or PostgreSQL shared by replicas) are defined in
``fraud_detection.io.prediction_log``; this module decides *when* rows are written.

``SERVING_LOG_COMMIT=before_answer`` (the default), group commit: a request puts its rows
on a queue and waits; one writer thread takes everything queued, writes it in one
transaction, and releases every waiting request at once. A 2xx answer therefore means
the rows are committed: a replica killed with SIGKILL has lost nothing it answered.
Under load the batches grow by themselves (requests queue while the previous commit
runs), so the cost is about one commit per request at low load and a fraction of one
at high load (docs/benchmarks.md).

``SERVING_LOG_COMMIT=background``: the request does not wait; the writer gathers rows for
0.1 s, then writes them. Faster, but a killed process loses up to that much of what it
answered; a clean shutdown loses nothing (the queue is drained).

When the store fails (disk full, PostgreSQL restarting) the writer keeps the rows, warns
once with the store's name, reconnects every ``_RETRY_SECONDS`` and goes on by itself.
Meanwhile, with ``before_answer``, a request waits up to ``SERVING_LOG_TIMEOUT_SECONDS``;
if its rows are still only queued then (or the write under way at that moment fails), they
are withdrawn (never written) and the request gets 503 naming the store. A row is never
written twice: writes that are retried after a lost connection are idempotent (the
store's unique key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from fraud_detection.io.prediction_log import Entry, LogStore, LogStoreError, rows_of

logger = logging.getLogger("serving.prediction_log")

CommitMode = Literal["before_answer", "background"]
BACKGROUND_GATHER_SECONDS = 0.1
_RETRY_SECONDS = 0.5


class LogUnavailableError(RuntimeError):
    """The rows could not be committed in time; the message names the store and why."""


class _State(Enum):
    QUEUED = 1
    WRITING = 2
    DONE = 3
    WITHDRAWN = 4


@dataclass(eq=False)
class _Pending:
    """An entry on its way to the store, and the request waiting for it (if any)."""

    entry: Entry
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    state: _State = _State.QUEUED
    # The request stopped waiting while the rows were being written: if that write
    # fails, the writer withdraws them instead of retrying (and the request gets 503).
    expired: bool = False


_STOP = object()


class PredictionLog:
    """Writes entries to a store from one background thread (see the module's doc)."""

    def __init__(
        self,
        store: LogStore,
        commit: CommitMode = "before_answer",
        timeout_seconds: float = 5.0,
        gather_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.commit_mode = commit
        self.timeout_seconds = timeout_seconds
        # How long the writer lets rows gather before a write; None: the mode's own
        # (0.1 s in the background, none before answering: commits are grouped anyway).
        if gather_seconds is None:
            gather_seconds = BACKGROUND_GATHER_SECONDS if commit == "background" else 0.0
        self.gather_seconds = gather_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self.rows_written = 0
        self.write_failures = 0
        self.rows_withdrawn = 0
        # Why the store is failing, while it is; None when the last write succeeded.
        self.outage: str | None = None

    @property
    def pending_rows(self) -> int:
        return self._pending

    def start(self) -> None:
        """Create the tables and start the writer. A file that cannot be created fails
        here (a setting to fix); a server that is down only warns: the writer waits."""
        try:
            self.store.create_schema()
            ready = True
        except LogStoreError as error:
            if not self.store.remote:
                raise
            logger.warning(
                "%s; predictions wait for it (503 after %g s)", error, self.timeout_seconds
            )
            self.outage, ready = str(error), False
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="prediction-log", daemon=True
        )
        self._thread.start()

    def record(self, entry: Entry) -> None:
        """Queue an entry and return at once (``background``, and tests)."""
        self._submit(_Pending(entry))

    async def write(self, entry: Entry) -> None:
        """Log ``entry`` as the commit mode says: with ``before_answer``, return once it
        is committed, or raise LogUnavailableError (then it is not in the log)."""
        if self.commit_mode == "background":
            self.record(entry)
            return
        loop = asyncio.get_running_loop()
        pending = _Pending(entry, loop, loop.create_future())
        assert pending.future is not None
        self._submit(pending)
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), self.timeout_seconds)
            return
        except TimeoutError:
            if self._withdraw(pending):
                raise LogUnavailableError(self._why_unavailable()) from None
        # Being written right now: committed, or, if this write fails, withdrawn by the
        # writer (LogUnavailableError here) rather than retried while the request waits.
        await pending.future

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "prediction log %s: %d rows still unwritten at shutdown",
                self.store.location,
                self._pending,
            )
        self._thread = None

    # ------------------------------------------------------------------ the request side

    def _submit(self, pending: _Pending) -> None:
        with self._lock:
            self._pending += len(pending.entry.rows)
        self._queue.put(pending)

    def _withdraw(self, pending: _Pending) -> bool:
        with self._lock:
            if pending.state is not _State.QUEUED:
                pending.expired = True
                return False
            self._mark_withdrawn(pending)
            return True

    def _mark_withdrawn(self, item: _Pending) -> None:
        """``item``'s rows will never be written (the caller holds the lock)."""
        item.state = _State.WITHDRAWN
        self._pending -= len(item.entry.rows)
        self.rows_withdrawn += len(item.entry.rows)

    def _why_unavailable(self) -> str:
        reason = self.outage or "the store is slow to commit"
        return (
            f"prediction log unavailable, prediction not served: {reason} "
            f"(waited {self.timeout_seconds:g} s, SERVING_LOG_TIMEOUT_SECONDS); retry later"
        )

    # ------------------------------------------------------------------ the writer thread

    def _run(self, ready: bool) -> None:
        connection: Any = None
        waiting: list[_Pending] = []  # taken off the queue, not yet committed
        stopping = False
        while True:
            items: list[Any] = []
            if not waiting and not stopping:
                items.append(self._queue.get())  # sleep until there is work
                if self.gather_seconds and items[0] is not _STOP:
                    # One transaction per interval instead of per request keeps this
                    # thread off the GIL the request path needs.
                    time.sleep(self.gather_seconds)
            items += _drain(self._queue)
            stopping = stopping or any(item is _STOP for item in items)
            batch = self._claim(waiting + [i for i in items if isinstance(i, _Pending)])
            waiting = []
            if not batch:
                if stopping:
                    break
                continue
            try:
                if connection is None:
                    connection = self.store.connect()
                    if not ready:
                        self.store.create_schema()
                        ready = True
                self._commit(connection, batch)
            except LogStoreError as error:
                # Shutting down with the store down, this goes on until close() stops
                # waiting; close() then says how many rows were left unwritten.
                self._failed(error)
                waiting = self._unclaim(batch)
                _close(connection)
                connection = None
                time.sleep(_RETRY_SECONDS)
            except Exception as error:  # a bug, not the store: fail these, keep the writer
                logger.exception("prediction log: %d entries could not be written", len(batch))
                self.write_failures += 1
                self._done([item for item in batch if item.state is _State.WRITING], error)
                _close(connection)
                connection = None
        _close(connection)

    def _claim(self, items: list[_Pending]) -> list[_Pending]:
        with self._lock:
            batch = [item for item in items if item.state is _State.QUEUED]
            for item in batch:
                item.state = _State.WRITING
        return batch

    def _unclaim(self, batch: list[_Pending]) -> list[_Pending]:
        """After a failed write: the rows to retry; those whose request stopped waiting
        during the write are withdrawn, and the request gets LogUnavailableError."""
        back, given_up = [], []
        with self._lock:
            for item in batch:
                if item.state is not _State.WRITING:
                    continue
                if item.expired:
                    self._mark_withdrawn(item)
                    given_up.append(item)
                else:
                    item.state = _State.QUEUED
                    back.append(item)
        for item in given_up:  # rare (an outage): one hand-over each, one error each
            self._hand_over([item], LogUnavailableError(self._why_unavailable()))
        return back

    def _commit(self, connection: Any, batch: list[_Pending]) -> None:
        entries = [item.entry for item in batch]
        try:
            self.store.write(connection, entries)
        except ValueError:
            # A bug in what was queued: write the others one by one, fail the bad ones.
            self._commit_one_by_one(connection, batch)
            return
        self._done(batch)
        if self.outage is not None:
            logger.warning("prediction log %s is back; writing again", self.store.location)
            self.outage = None

    def _commit_one_by_one(self, connection: Any, batch: list[_Pending]) -> None:
        for item in batch:
            try:
                self.store.write(connection, [item.entry])
            except ValueError as error:
                logger.exception(
                    "prediction log: request %s cannot be logged", item.entry.request_id
                )
                self.write_failures += 1
                self._done([item], error)
            else:
                self._done([item])

    def _done(self, batch: Sequence[_Pending], error: BaseException | None = None) -> None:
        rows = rows_of(item.entry for item in batch)
        with self._lock:
            for item in batch:
                item.state = _State.DONE
            self._pending -= rows
        if error is None:
            self.rows_written += rows
        self._hand_over(batch, error)

    def _hand_over(self, batch: Sequence[_Pending], error: BaseException | None) -> None:
        """Wake the requests waiting for ``batch``: their rows are committed, or ``error``."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for item in batch:
            if item.loop is not None and item.future is not None:
                by_loop.setdefault(item.loop, []).append(item.future)
        for loop, futures in by_loop.items():
            # One hand-over per event loop for the whole batch, not one per request.
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures, error)

    def _failed(self, error: LogStoreError) -> None:
        self.write_failures += 1
        if self.outage is None:
            logger.warning("%s; keeping the rows and retrying every %g s", error, _RETRY_SECONDS)
        self.outage = str(error)


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _drain(source: queue.SimpleQueue[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


def _close(connection: Any) -> None:
    if connection is not None:
        try:
            connection.close()
        except Exception:  # a connection that broke may fail to close; it is gone anyway
            logger.debug("closing a broken prediction log connection", exc_info=True)
