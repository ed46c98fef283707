"""Dynamic batching of single rows: together when they arrive together, alone otherwise,
and one bad row never fails its neighbours."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

import serving.model
from fraud_detection.inference import Scorer, pipeline_scorer
from serving.batcher import MicroBatcher


class RecordingScorer:
    """Doubles the first value of each row; refuses rows whose first value is negative."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, rows: list[list[Any]]) -> np.ndarray:
        self.calls.append(len(rows))
        if any(row[0] < 0 for row in rows):
            raise ValueError("negative value")
        return np.asarray([2.0 * row[0] for row in rows])


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_rows_that_arrive_together_are_scored_in_one_call():
    scorer = RecordingScorer()

    async def main() -> list[float]:
        batcher = MicroBatcher(scorer)
        return list(await asyncio.gather(*(batcher.score([float(i)]) for i in range(8))))

    assert run(main()) == [2.0 * i for i in range(8)]
    assert scorer.calls == [8]


def test_a_lone_row_is_scored_on_its_own_without_waiting_for_company():
    scorer = RecordingScorer()

    async def main() -> list[float]:
        batcher = MicroBatcher(scorer)
        first = await batcher.score([1.0])
        second = await batcher.score([2.0])
        return [first, second]

    assert run(main()) == [2.0, 4.0]
    assert scorer.calls == [1, 1]


def test_a_full_batch_is_scored_at_once_and_the_rest_waits_for_the_next():
    scorer = RecordingScorer()

    async def main() -> list[float]:
        batcher = MicroBatcher(scorer, max_rows=3)
        return list(await asyncio.gather(*(batcher.score([float(i)]) for i in range(7))))

    assert run(main()) == [2.0 * i for i in range(7)]
    assert scorer.calls == [3, 3, 1]


def test_one_bad_row_fails_only_its_own_request():
    scorer = RecordingScorer()

    async def main() -> list[Any]:
        batcher = MicroBatcher(scorer)
        rows = [[1.0], [-1.0], [3.0]]
        return list(
            await asyncio.gather(*(batcher.score(row) for row in rows), return_exceptions=True)
        )

    first, bad, third = run(main())
    assert (first, third) == (2.0, 6.0)
    assert isinstance(bad, ValueError)
    # The batch failed, then each row was scored alone.
    assert scorer.calls == [3, 1, 1, 1]


def test_a_cancelled_request_does_not_break_the_batch():
    scorer = RecordingScorer()

    async def main() -> tuple[float, bool]:
        batcher = MicroBatcher(scorer)
        doomed = asyncio.ensure_future(batcher.score([5.0]))
        kept = asyncio.ensure_future(batcher.score([4.0]))
        await asyncio.sleep(0)  # both rows are queued, the flush is scheduled
        doomed.cancel()
        return await kept, doomed.cancelled()

    assert run(main()) == (8.0, True)


@pytest.mark.parametrize("rows", [1, 5])
def test_results_keep_their_order_whatever_the_batch(rows):
    scorer = RecordingScorer()

    async def main() -> list[float]:
        batcher = MicroBatcher(scorer)
        return list(await asyncio.gather(*(batcher.score([float(10 - i)]) for i in range(rows))))

    assert run(main()) == [2.0 * (10 - i) for i in range(rows)]


# --- through the service ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_concurrent_requests_get_their_own_answers(make_app, served, monkeypatch):
    # predict_proba itself: it refuses values that overflow the scaler with a ValueError.
    calls: list[int] = []

    def recording_scorer(pipeline: Any, schema: Any, example: Any) -> Scorer:
        reference = pipeline_scorer(pipeline, schema, "forced")

        def score(rows: Any) -> Any:
            calls.append(len(rows))
            return reference(rows)

        return Scorer("pipeline", "recording", score)

    monkeypatch.setattr(serving.model, "compile_scorer", recording_scorer)
    app = make_app()
    rows = [{**served.legit_row, "TX_AMOUNT": 5.0 + i} for i in range(6)]
    rows += [served.fraud_row, {**served.legit_row, "TX_AMOUNT": 1e308}]  # last: unscorable

    async def main() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return list(
                    await asyncio.gather(*(client.post("/predict", json=row) for row in rows))
                )

    answers = run(main())
    assert max(calls) > 1, f"the requests were never scored together: {calls}"
    for row, answer in zip(rows[:-1], answers[:-1], strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["probability"] == pytest.approx(served.probability(row), abs=1e-9)
    # A row the model cannot score fails alone, as a client error, not its neighbours.
    assert answers[-1].status_code == 422, answers[-1].text
    assert "cannot score these values" in answers[-1].json()["detail"]
