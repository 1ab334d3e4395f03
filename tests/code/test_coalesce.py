"""The /predict coalescer: requests that arrive together are scored together, each answered alone."""

from __future__ import annotations

import asyncio

import pytest

from bentos.coalesce import Coalescer


class Refused(Exception):
    pass


class Scorer:
    """Doubles numbers; refuses negatives (the whole batch, as a contract check does)."""

    def __init__(self, fail_with: Exception | None = None):
        self.calls: list[list[int]] = []
        self.fail_with = fail_with

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        await asyncio.sleep(0.001)  # the log's fsync: requests arriving now wait for the next batch
        if self.fail_with is not None:
            raise self.fail_with
        if any(i < 0 for i in items):
            raise Refused(f"negative: {[i for i in items if i < 0]}")
        return [2 * i for i in items]


def test_a_lone_request_is_scored_at_once_and_concurrent_ones_together():
    scorer = Scorer()
    coalescer = Coalescer(scorer, max_batch=8)

    async def run() -> tuple[int, list[int]]:
        alone = await coalescer.submit(5)
        together = await asyncio.gather(*(coalescer.submit(i) for i in range(20)))
        return alone, together

    alone, together = asyncio.run(run())
    assert alone == 10 and together == [2 * i for i in range(20)]
    assert scorer.calls[0] == [5]
    assert max(len(c) for c in scorer.calls) == 8  # never more than max_batch at once
    assert len(scorer.calls) == 1 + 3  # 20 requests in batches of 8, 8, 4
    assert (coalescer.batches, coalescer.items) == (4, 21)


def test_a_refused_row_fails_alone_and_the_others_are_answered():
    scorer = Scorer()
    coalescer = Coalescer(scorer, max_batch=64, retry_alone=(Refused,))

    async def run() -> list:
        return await asyncio.gather(*(coalescer.submit(i) for i in [1, -2, 3, -4, 5]), return_exceptions=True)

    answers = asyncio.run(run())
    assert answers[0] == 2 and answers[2] == 6 and answers[4] == 10
    assert isinstance(answers[1], Refused) and str(answers[1]) == "negative: [-2]"  # its own row only
    assert isinstance(answers[3], Refused) and str(answers[3]) == "negative: [-4]"
    assert scorer.calls[0] == [1, -2, 3, -4, 5] and sorted(map(tuple, scorer.calls[1:])) == [
        (-4,),
        (-2,),
        (1,),
        (3,),
        (5,),
    ]


def test_any_other_failure_is_every_callers_answer_and_nothing_is_scored_twice():
    """A failure that is not a refusal (the log could not be made durable) is not retried row by row:
    the rows may already be written, and scoring them again would log them twice."""
    scorer = Scorer(fail_with=OSError("disk full"))
    coalescer = Coalescer(scorer, max_batch=64, retry_alone=(Refused,))

    async def run() -> list:
        return await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(run())
    assert all(isinstance(a, OSError) for a in answers)
    assert len(scorer.calls) == 1


def test_a_caller_that_went_away_is_not_scored():
    scorer = Scorer()
    coalescer = Coalescer(scorer, max_batch=64)

    async def run() -> int:
        gone = asyncio.ensure_future(coalescer.submit(7))
        stays = asyncio.ensure_future(coalescer.submit(8))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await stays

    assert asyncio.run(run()) == 16
    assert [8] in scorer.calls and all(7 not in c for c in scorer.calls)
