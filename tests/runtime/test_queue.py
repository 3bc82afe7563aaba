"""The work queue: de-duplicated keys, one worker per key, delayed adds, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from hive.core.clock import FakeClock
from hive.runtime.queue import WorkQueue

# Long enough that a key that should come is not missed on a slow machine; the waits for
# keys that must *not* come are bounded by QUIET.
DEADLINE = 2.0
QUIET = 0.1


async def next_key(queue: WorkQueue) -> str | None:
    async with asyncio.timeout(DEADLINE):
        return await queue.get()


async def assert_nothing_handed_out(queue: WorkQueue) -> None:
    try:
        async with asyncio.timeout(QUIET):
            key = await queue.get()
    except TimeoutError:
        return
    pytest.fail(f"{key!r} was handed out")


async def test_keys_come_out_once_in_order() -> None:
    queue = WorkQueue()
    for key in ["Model/a", "Model/b", "Model/a", "Model/c", "Model/b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await next_key(queue) for _ in range(3)] == ["Model/a", "Model/b", "Model/c"]
    await assert_nothing_handed_out(queue)


async def test_a_waiting_worker_is_woken_by_add() -> None:
    queue = WorkQueue()
    waiting = asyncio.create_task(next_key(queue))
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.add("Model/a")
    assert await waiting == "Model/a"
    assert queue.processing == {"Model/a"}


async def test_a_key_added_while_processing_comes_back_after_done() -> None:
    queue = WorkQueue()
    queue.add("Model/a")
    assert await next_key(queue) == "Model/a"
    queue.add("Model/a")
    queue.add("Model/a")
    assert len(queue) == 0
    await assert_nothing_handed_out(queue)  # never two workers on one key
    queue.done("Model/a")
    assert await next_key(queue) == "Model/a"
    queue.done("Model/a")
    await assert_nothing_handed_out(queue)
    assert queue.processing == frozenset()


async def test_other_keys_flow_while_one_is_processing() -> None:
    queue = WorkQueue()
    queue.add("Model/a")
    assert await next_key(queue) == "Model/a"
    queue.add("Model/a")
    queue.add("Model/b")
    assert await next_key(queue) == "Model/b"
    assert queue.processing == {"Model/a", "Model/b"}


async def test_done_without_a_new_add_ends_the_key() -> None:
    queue = WorkQueue()
    queue.add("Model/a")
    assert await next_key(queue) == "Model/a"
    queue.done("Model/a")
    await assert_nothing_handed_out(queue)


async def test_add_after_fires_later() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("Model/a", 0.05)
    assert len(queue) == 0
    assert await next_key(queue) == "Model/a"
    assert loop.time() - start >= 0.04


async def test_add_after_with_no_delay_is_an_add() -> None:
    queue = WorkQueue()
    queue.add_after("Model/a", 0)
    queue.add_after("Model/b", -1)
    assert len(queue) == 2


@pytest.mark.parametrize("delays", [(0.05, 30.0), (30.0, 0.05)], ids=["first", "second"])
async def test_the_earlier_pending_add_wins(delays: tuple[float, float]) -> None:
    queue = WorkQueue()
    for delay in delays:
        queue.add_after("Model/a", delay)
    assert await next_key(queue) == "Model/a"
    queue.done("Model/a")
    await queue.shutdown()  # the later timer must not be left behind either way


async def test_an_immediate_add_replaces_a_pending_delayed_one() -> None:
    queue = WorkQueue()
    queue.add_after("Model/a", 0.05)
    queue.add("Model/a")
    assert await next_key(queue) == "Model/a"
    queue.done("Model/a")
    await assert_nothing_handed_out(queue)  # the timer was cancelled, not merely raced


async def test_shutdown_releases_waiting_workers() -> None:
    queue = WorkQueue()
    workers = [asyncio.create_task(next_key(queue)) for _ in range(3)]
    await asyncio.sleep(0)
    await queue.shutdown()
    assert await asyncio.wait_for(asyncio.gather(*workers), DEADLINE) == [None, None, None]


async def test_after_shutdown_get_returns_none_and_adds_are_ignored() -> None:
    queue = WorkQueue()
    queue.add("Model/a")
    queue.add_after("Model/b", 0.01)
    await queue.shutdown()
    assert await next_key(queue) is None
    queued = len(queue)
    queue.add("Model/c")
    queue.add_after("Model/d", 0)
    queue.add_after("Model/e", 0.01)
    assert len(queue) == queued
    assert await next_key(queue) is None


# -- the rate limiter: per-key failures in a row (was core.backoff.Backoff) -------------


async def test_rate_limited_back_off_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    assert queue.backing_off("Model/a") == 0.0
    assert [queue.add_rate_limited("Model/a") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert queue.failures("Model/a") == 3
    assert queue.backing_off("Model/a") == 4.0
    clock.advance(1.5)
    assert queue.backing_off("Model/a") == pytest.approx(2.5)
    clock.advance(100)
    assert queue.backing_off("Model/a") == 0.0
    await queue.shutdown()


async def test_forget_ends_the_streak_and_keys_are_independent() -> None:
    queue = WorkQueue(clock=FakeClock())
    for _ in range(3):
        queue.add_rate_limited("Model/a")
    queue.add_rate_limited("Model/b")
    assert (queue.backing_off("Model/a"), queue.backing_off("Model/b")) == (4.0, 1.0)
    queue.forget("Model/b")
    queue.forget("never-failed")
    assert queue.backing_off("Model/a") == 4.0
    assert (queue.failures("Model/b"), queue.backing_off("Model/b")) == (0, 0.0)
    assert queue.add_rate_limited("Model/b") == 1.0
    await queue.shutdown()


async def test_a_long_streak_is_capped() -> None:
    queue = WorkQueue(clock=FakeClock(), base=2.0, cap=60.0)
    delays = [queue.add_rate_limited("k") for _ in range(200)]
    assert delays[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert set(delays[5:]) == {60.0}
    await queue.shutdown()


async def test_a_rate_limited_key_is_handed_out_after_its_back_off() -> None:
    queue = WorkQueue(base=0.05)
    queue.add_rate_limited("Model/a")
    assert len(queue) == 0
    assert await next_key(queue) == "Model/a"


async def test_take_hands_out_the_ready_keys_of_a_kind_with_the_first() -> None:
    """A controller's batch: the keys of one kind ready now, handed out together; each is
    processed until `done` (added again meanwhile, it comes back after)."""
    queue = WorkQueue()
    for key in ["Worker/a", "Model/m", "Worker/b", "Worker/c", "Worker/d"]:
        queue.add(key)
    assert await next_key(queue) == "Worker/a"
    assert queue.take("Worker/", limit=2) == ["Worker/b", "Worker/c"]
    assert queue.processing == {"Worker/a", "Worker/b", "Worker/c"}
    assert len(queue) == 2
    queue.add("Worker/b")  # while it is processed
    assert await next_key(queue) == "Model/m"
    assert await next_key(queue) == "Worker/d"
    for key in ["Worker/a", "Worker/b", "Worker/c"]:
        queue.done(key)
    assert await next_key(queue) == "Worker/b"
    await assert_nothing_handed_out(queue)
