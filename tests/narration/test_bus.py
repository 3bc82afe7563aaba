"""The narration bus: ordered ids, a bounded ring, readers that fall behind get a Gap."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hive.core.clock import FakeClock
from hive.model.events import Event, Level
from hive.narration.bus import Bus, Gap, Subscription


def make_bus(capacity: int = 10_000) -> tuple[Bus, FakeClock]:
    clock = FakeClock()
    return Bus(clock=clock, capacity=capacity), clock


def emit_many(bus: Bus, count: int, *, object: str | None = None) -> None:
    for i in range(count):
        bus.emit("tick", f"tick {i}", object=object)


def ids(items: list[Event] | list[Event | Gap]) -> list[int]:
    return [e.id for e in items if isinstance(e, Event)]


def test_ids_increase_by_one_and_events_carry_what_was_emitted() -> None:
    bus, clock = make_bus()
    first = bus.emit("hive_start", "hive started")
    clock.advance(2)
    second = bus.emit(
        "provision_failed",
        "checksum mismatch",
        object="Model/tiny",
        level=Level.ERROR,
        data={"want": "abc"},
    )
    assert (first.id, second.id, bus.last_id) == (1, 2, 2)
    assert second.time == first.time + timedelta(seconds=2)
    assert (second.object, second.action, second.level, second.data) == (
        "Model/tiny",
        "provision_failed",
        Level.ERROR,
        {"want": "abc"},
    )
    assert first.object is None
    assert first.data == {}


def test_urls_in_an_event_s_message_and_data_are_redacted() -> None:
    bus, _ = make_bus()
    event = bus.emit(
        "model_download_start",
        "from https://alice:S3CR3T@h.example/m.gguf?token=T0K",
        data={
            "source": "https://alice:S3CR3T@h.example/m.gguf",
            "nested": {"urls": ["see https://h.example/?sig=S1G", 3]},
            "size": 3,
        },
    )
    assert event.message == "from https://alice:***@h.example/m.gguf?token=***"
    assert event.data == {
        "source": "https://alice:***@h.example/m.gguf",
        "nested": {"urls": ["see https://h.example/?sig=***", 3]},
        "size": 3,
    }


def test_empty_bus() -> None:
    bus, _ = make_bus(capacity=4)
    assert (bus.last_id, bus.first_id) == (0, 1)
    assert bus.read(0, limit=10) == ([], None)


def test_read_after_a_cursor() -> None:
    bus, _ = make_bus()
    emit_many(bus, 6)
    events, gap = bus.read(2, limit=100)
    assert (ids(events), gap) == ([3, 4, 5, 6], None)
    events, gap = bus.read(2, limit=2)
    assert (ids(events), gap) == ([3, 4], None)
    assert bus.read(6, limit=10) == ([], None)


def test_ring_overflow_gives_a_gap_with_the_missed_count() -> None:
    bus, _ = make_bus(capacity=5)
    emit_many(bus, 12)
    assert bus.first_id == 8
    events, gap = bus.read(0, limit=100)
    assert gap is not None
    assert (gap.missed, gap.after_id) == (7, 0)
    assert ids(events) == [8, 9, 10, 11, 12]
    events, gap = bus.read(3, limit=2)
    assert gap is not None
    assert (gap.missed, gap.after_id) == (4, 3)
    assert ids(events) == [8, 9]
    events, gap = bus.read(7, limit=100)
    assert (ids(events), gap) == ([8, 9, 10, 11, 12], None)


def test_gap_as_data_tells_the_reader_how_to_resync() -> None:
    data = Gap(missed=7, after_id=3).as_data()
    assert data["action"] == "events_dropped"
    assert data["level"] == "warning"
    assert data["data"] == {"missed": 7, "after_id": 3}
    assert data["message"].startswith("7 events were dropped")
    assert "GET /v1/models" in data["message"]


def test_cursor_from_a_previous_run_starts_over() -> None:
    bus, _ = make_bus()
    emit_many(bus, 3)
    events, gap = bus.read(5000, limit=100)
    assert (ids(events), gap) == ([1, 2, 3], None)


def test_raising_listeners_do_not_break_emit() -> None:
    bus, _ = make_bus()
    seen: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(lambda event: seen.append(event.id))
    bus.emit("a", "one")
    bus.emit("b", "two")
    assert seen == [1, 2]
    assert ids(bus.read(0, limit=10)[0]) == [1, 2]


async def test_subscription_filters_by_object() -> None:
    bus, _ = make_bus()
    bus.emit("x", "a1", object="Model/a")
    bus.emit("x", "b1", object="Model/b")
    bus.emit("x", "a2", object="Model/a")
    bus.emit("x", "hive", object=None)
    sub = Subscription(bus, after=0, object="Model/a")
    batch = await sub.next_batch(wait=1.0)
    assert [e.message for e in batch if isinstance(e, Event)] == ["a1", "a2"]
    assert not any(isinstance(e, Gap) for e in batch)
    assert sub.cursor == 4  # skipped events are consumed, not re-read


async def test_subscription_without_cursor_starts_now() -> None:
    bus, _ = make_bus()
    emit_many(bus, 3)
    sub = Subscription(bus, after=None)
    assert sub.cursor == 3
    assert await sub.next_batch(wait=0.01) == []
    bus.emit("new", "after subscribing")
    assert ids(await sub.next_batch(wait=1.0)) == [4]


async def test_subscription_wakes_when_an_event_arrives() -> None:
    bus, _ = make_bus()
    sub = Subscription(bus, after=0)
    waiting = asyncio.create_task(sub.next_batch(wait=5.0))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiting.done()
    bus.emit("x", "hello")
    batch = await asyncio.wait_for(waiting, timeout=2.0)
    assert ids(batch) == [1]


async def test_every_waiting_reader_is_woken() -> None:
    bus, _ = make_bus()
    subs = [Subscription(bus, after=0) for _ in range(3)]
    tasks = [asyncio.create_task(s.next_batch(wait=5.0)) for s in subs]
    await asyncio.sleep(0)
    bus.emit("x", "hello")
    batches = await asyncio.wait_for(asyncio.gather(*tasks), timeout=2.0)
    assert [ids(b) for b in batches] == [[1], [1], [1]]


async def test_lagging_subscription_gets_a_gap_and_skips_ahead() -> None:
    bus, _ = make_bus(capacity=100_000)
    sub = Subscription(bus, after=0, max_lag=10)
    emit_many(bus, 25)  # publishing does not wait for the reader
    batch = await sub.next_batch(wait=1.0)
    gap = batch[0]
    assert isinstance(gap, Gap)
    assert (gap.missed, gap.after_id) == (15, 0)
    assert ids(batch) == list(range(16, 26))
    assert sub.cursor == 25
    bus.emit("x", "next")
    assert ids(await sub.next_batch(wait=1.0)) == [26]


async def test_reader_behind_the_ring_gets_a_gap() -> None:
    bus, _ = make_bus(capacity=10)
    sub = Subscription(bus, after=0, max_lag=1000)
    emit_many(bus, 25)
    batch = await sub.next_batch(wait=1.0)
    gaps = [e for e in batch if isinstance(e, Gap)]
    assert [(g.missed, g.after_id) for g in gaps] == [(15, 0)]
    assert ids(batch) == list(range(16, 26))


async def test_publishing_to_a_reader_that_never_reads_keeps_memory_bounded() -> None:
    bus, _ = make_bus(capacity=50)
    sub = Subscription(bus, after=0, max_lag=20)
    emit_many(bus, 20_000)
    assert bus.last_id == 20_000
    assert bus.first_id == 20_000 - 49
    batch = await sub.next_batch(wait=1.0)
    assert isinstance(batch[0], Gap)
    assert batch[0].missed == 20_000 - 20
    assert len(ids(batch)) == 20


async def test_subscription_with_a_cursor_from_a_previous_run_starts_over() -> None:
    bus, _ = make_bus()
    emit_many(bus, 3)
    sub = Subscription(bus, after=500)
    batch = await sub.next_batch(wait=0.2)
    assert ids(batch) == [1, 2, 3]


async def test_a_reader_that_keeps_up_loses_nothing_of_a_burst_the_ring_holds() -> None:
    # 10,000 events narrated in one turn of the loop (no reader runs meanwhile): the ring
    # holds them all, so a reader subscribed before the burst gets every one, no gap.
    bus, _ = make_bus(capacity=10_000)
    sub = Subscription(bus, after=None)
    emit_many(bus, 10_000)
    got: list[Event | Gap] = []
    while batch := await sub.next_batch(wait=0.05):
        got += batch
    assert not any(isinstance(e, Gap) for e in got)
    assert ids(got) == list(range(1, 10_001))


async def test_frames_encode_each_event_once_for_every_reader() -> None:
    bus, _ = make_bus(capacity=100)
    encoded: list[int] = []

    def encode(event: Event) -> bytes:
        encoded.append(event.id)
        return f"<{event.id}>".encode()

    def encode_gap(gap: Gap) -> bytes:
        return f"<gap {gap.missed}>".encode()

    subs = [Subscription(bus, after=0) for _ in range(3)]
    filtered = Subscription(bus, after=0, object="Model/a")
    emit_many(bus, 5)
    bus.emit("x", "about a", object="Model/a")
    for sub in subs:
        assert await sub.next_frames(wait=1.0, encode=encode, encode_gap=encode_gap) == (
            b"<1><2><3><4><5><6>",
            6,
        )
    assert await filtered.next_frames(wait=1.0, encode=encode, encode_gap=encode_gap) == (
        b"<6>",
        1,
    )
    assert encoded == [1, 2, 3, 4, 5, 6]  # once each, whoever read it
    # The ring wraps: frames of events that left it are not served, a gap is.
    emit_many(bus, 150)
    data, count = await subs[0].next_frames(wait=1.0, encode=encode, encode_gap=encode_gap)
    assert data.startswith(b"<gap 50>") and data.endswith(b"<156>") and count == 101
    assert encoded[6:] == list(range(57, 157))


async def test_a_wait_for_the_bus_to_close_ends_when_it_closes_not_at_its_timeout() -> None:
    bus, _ = make_bus()
    assert await bus.until_closed(0.01) is False
    waiting = asyncio.create_task(bus.until_closed(3600))
    await asyncio.sleep(0)  # let it start waiting
    bus.emit("x", "an event is no close")
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.close()
    assert await asyncio.wait_for(waiting, timeout=2.0) is True
    assert await bus.until_closed(3600) is True  # closed already: at once
