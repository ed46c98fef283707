"""A bounded load of /predict requests, each with its own X-Request-ID, every answer kept.

wrk measures throughput best, but it cannot say *which* requests were answered; the
kill test needs exactly that (every id answered 2xx must be in the log). ``run_load``
sends from ``clients`` concurrent connections for ``seconds`` and records each request's
id, status, replica (the balancer's X-Served-By header) and time; ``events`` run at given
offsets meanwhile (kill a replica, restart it) in a thread, and their times are kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Answer:
    request_id: str
    status: int  # 0: no HTTP answer at all (connection refused or cut)
    served_by: str
    sent: float  # seconds since the load began
    seconds: float  # until the answer (or the error)


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # name -> seconds since start
    seconds: float = 0.0

    def ok(self) -> list[Answer]:
        return [a for a in self.answers if 200 <= a.status < 300]

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not 200 <= a.status < 300]


Event = tuple[float, str, Callable[[], Any]]


@dataclass
class _Plan:
    url: str
    body: bytes
    seconds: float  # the senders stop at this offset; events may push it later
    begun: float
    after_events: float = 0.0
    until: Callable[[Load], bool] | None = None
    # With after_events, the senders go on past ``seconds`` while events are still running.
    events_pending: bool = False


def run_load(
    url: str,
    row: dict[str, Any],
    *,
    clients: int,
    seconds: float,
    prefix: str = "load",
    events: Sequence[Event] = (),
    timeout: float = 30.0,
    after_events: float = 0.0,
    until: Callable[[Load], bool] | None = None,
    headers: dict[str, str] | None = None,
) -> Load:
    """``clients`` connections posting ``row`` to ``url`` for ``seconds``, with
    ``headers`` on every request (an API key).

    With ``after_events``, the load goes on after the last event is done: for that long,
    or, with ``until``, until ``until(load)`` holds (at most that long). A restart's
    length depends on how busy the machine is; what follows it must still be seen.
    """
    return asyncio.run(
        _run(
            url,
            row,
            clients,
            seconds,
            prefix=prefix,
            events=events,
            timeout=timeout,
            after_events=after_events,
            until=until,
            headers=headers or {},
        )
    )


async def _run(
    url: str,
    row: dict[str, Any],
    clients: int,
    seconds: float,
    *,
    prefix: str,
    events: Sequence[Event],
    timeout: float,
    after_events: float,
    until: Callable[[Load], bool] | None,
    headers: dict[str, str],
) -> Load:
    load = Load()
    plan = _Plan(url, json.dumps(row).encode(), seconds, time.perf_counter(), after_events, until)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
        senders = [_send(client, plan, f"{prefix}-{number}", load) for number in range(clients)]
        await asyncio.gather(*senders, _events(events, plan, load))
    load.seconds = time.perf_counter() - plan.begun
    return load


async def _send(client: httpx.AsyncClient, plan: _Plan, prefix: str, load: Load) -> None:
    headers = {"content-type": "application/json"}
    number = 0
    while (sent := time.perf_counter() - plan.begun) < plan.seconds or plan.events_pending:
        request_id = f"{prefix}-{number}"
        number += 1
        try:
            response = await client.post(
                plan.url, content=plan.body, headers=headers | {"x-request-id": request_id}
            )
            status, served_by = response.status_code, response.headers.get("x-served-by", "")
        except httpx.HTTPError:
            status, served_by = 0, ""
            await asyncio.sleep(0.01)  # a refused connection comes back at once
        elapsed = time.perf_counter() - plan.begun - sent
        load.answers.append(Answer(request_id, status, served_by, sent, elapsed))


async def _events(events: Sequence[Event], plan: _Plan, load: Load) -> None:
    begun, planned = plan.begun, plan.seconds
    plan.events_pending = bool(events) and plan.after_events > 0
    for at, name, action in sorted(events, key=lambda event: event[0]):
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - begun)))
        load.events[name] = time.perf_counter() - begun
        # In a thread: a restart waits for the replica's health, the load goes on.
        await asyncio.to_thread(action)
        load.events[f"{name} done"] = time.perf_counter() - begun
    if not events:
        return
    deadline = time.perf_counter() - begun + plan.after_events
    plan.seconds = max(plan.seconds, deadline)
    plan.events_pending = False
    if plan.until is None:
        return
    while time.perf_counter() - begun < deadline and not plan.until(load):
        await asyncio.sleep(0.05)
    # A moment more, then stop (but not before the planned length).
    plan.seconds = max(planned, time.perf_counter() - begun + 0.5)
