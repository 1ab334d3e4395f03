"""Single-row requests that arrive together are scored together.

One request is one row, and a row costs nearly as much to transform as a hundred: the feature transform
is one Polars query (~0.4-0.6 ms to plan and run, whatever the row count), the contract check one more,
the log one record and one fsync. Under load, requests arrive while the previous ones are being scored;
a ``Coalescer`` hands everything that has arrived meanwhile to one call of the batch function, then
answers each caller with its own result. No timer: a lone request is scored at once (it waits one
turn of the event loop), a busy service forms batches by itself (group commit, as the log's fsync).

A batch refused as a whole (one caller's row breaks the contract: ``retry_alone``) is retried row by row,
so each caller gets its own answer: the one bad row its 400, the others their predictions. Any other
failure (the log could not be made durable) is every caller's answer: nothing is scored twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    """Gathers ``submit``-ted items and scores them with ``score_batch(items) -> answers`` (same order,
    one answer per item), at most ``max_batch`` at once."""

    def __init__(
        self,
        score_batch: Callable[[list[Item]], Awaitable[list[Answer]]],
        max_batch: int = 64,
        retry_alone: tuple[type[BaseException], ...] = (),
    ):
        self.score_batch, self.max_batch, self.retry_alone = score_batch, max_batch, retry_alone
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._draining = False
        self.batches = self.items = 0  # how many batches were scored and how many items they held

    async def submit(self, item: Item) -> Answer:
        """The answer for ``item``, scored with whatever else arrives meanwhile."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                # one turn of the loop: requests already received are parsed and join this batch
                await asyncio.sleep(0)
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                batch = [(item, future) for item, future in batch if not future.done()]  # callers gone
                if batch:
                    await self._answer(batch)
        finally:
            self._draining = False

    async def _answer(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        self.batches, self.items = self.batches + 1, self.items + len(batch)
        try:
            answers = await self.score_batch([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1 or not isinstance(exc, self.retry_alone):
                for _, future in batch:
                    _settle(future, exc=exc)
                return
            for one in batch:  # whose row was it? each caller gets its own answer
                await self._answer([one])
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            _settle(future, answer=answer)


def _settle(future: asyncio.Future, answer: object = None, exc: BaseException | None = None) -> None:
    if future.done():  # the caller went away (its request was cancelled)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(answer)
