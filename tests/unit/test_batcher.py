"""The generator's continuous batcher (deployments/batcher.py) with a fake model, without Ray."""

from __future__ import annotations

import asyncio

import pytest

from deployments.batcher import ContinuousBatcher


class FakeModel:
    """Doubles its inputs; each call takes `seconds` and records its batch."""

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None) -> None:
        self.seconds, self.fail_on, self.batches = seconds, fail_on, []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * x for x in items]


def test_a_request_alone_starts_at_once_and_requests_queued_meanwhile_form_the_next_batch() -> None:
    async def main() -> tuple[FakeModel, float, list[int]]:
        model = FakeModel(seconds=0.2)
        batcher = ContinuousBatcher(model, max_batch_size=4)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        started_alone = len(model.batches) == 1 and loop.time() - t0 < 0.05
        assert started_alone
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 7)]  # arrive during the call
        out = await asyncio.gather(first, *rest)
        return model, loop.time() - t0, out

    model, seconds, out = asyncio.run(main())
    assert out == [2 * i for i in range(7)]  # each caller gets its own result
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]  # full batches from what queued, in order
    assert seconds < 0.75  # three calls back to back, no waiting between them


def test_wait_s_gathers_company_for_a_request_that_finds_the_model_idle() -> None:
    async def main() -> FakeModel:
        model = FakeModel(seconds=0.01)
        batcher = ContinuousBatcher(model, max_batch_size=8, wait_s=0.1)
        tasks = [asyncio.create_task(batcher.submit(0))]
        await asyncio.sleep(0.03)
        tasks.append(asyncio.create_task(batcher.submit(1)))
        await asyncio.gather(*tasks)
        return model

    assert asyncio.run(main()).batches == [[0, 1]]


def test_a_failing_batch_fails_its_callers_only_and_the_worker_goes_on() -> None:
    async def main() -> tuple[list, list[int]]:
        model = FakeModel(seconds=0.05, fail_on=2)
        batcher = ContinuousBatcher(model, max_batch_size=2)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        bad = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        failed = await asyncio.gather(*bad, return_exceptions=True)
        after = await asyncio.gather(first, batcher.submit(4))
        return failed, after

    failed, after = asyncio.run(main())
    assert all(isinstance(e, ValueError) and "bad item 2" in str(e) for e in failed)
    assert after == [2, 8]


def test_a_cancelled_caller_is_left_out_of_its_batch_and_limits_are_checked() -> None:
    async def main() -> FakeModel:
        model = FakeModel(seconds=0.1)
        batcher = ContinuousBatcher(model, max_batch_size=4)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(first, kept)
        return model

    assert asyncio.run(main()).batches == [[0], [2]]
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        ContinuousBatcher(FakeModel()).configure(0, 0.0)
