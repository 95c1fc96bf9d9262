"""Continuous batching: the next batch is whatever queued while the model was busy.

Serve's @serve.batch forms the next batch while the current one runs: it takes the first
request, waits batch_wait_timeout_s, and queues that (often small) batch behind the running one,
so under load batches stay half full, and a request alone always waits the full timeout. Here
one worker per replica takes requests only when the model is free: every request that arrived
during a model call joins the next one (up to max_batch_size), and a request that finds the model
idle starts at once, unless `wait_s` > 0 asks to wait that long for company.

Pure asyncio, no Ray: tests/unit/test_batcher.py drives it with a fake model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ContinuousBatcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_batch_size: int = 8, wait_s: float = 0.0):
        self._run = run
        self.max_batch_size, self.wait_s = max_batch_size, wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def configure(self, max_batch_size: int, wait_s: float) -> None:
        """New limits, used from the next batch on."""
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(
                f"ContinuousBatcher: need max_batch_size >= 1 and wait_s >= 0, got {max_batch_size}, {wait_s}"
            )
        self.max_batch_size, self.wait_s = max_batch_size, wait_s

    async def submit(self, item: T) -> R:
        """Queue `item`; its result (or the batch's exception) when its batch has run."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()  # created on the event loop that serves the requests
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, f) for item, f in batch if not f.cancelled()]  # callers that gave up

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                results = await self._run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"ContinuousBatcher: {len(results)} results for a batch of {len(batch)}")
            except Exception as e:  # the whole batch fails with the model's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
