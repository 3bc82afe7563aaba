"""The desired store: sources' record sets merged, one owner per Kind/name, generations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hive.core.clock import FakeClock
from hive.core.parse import Problem
from hive.core.store import Store
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.manifests import Origin, Record

DIR = SourceName("desired")
API = SourceName("api")


def record(
    name: str,
    *,
    source: SourceName = DIR,
    src: str = "https://example.com/x.gguf",
    labels: dict[str, str] | None = None,
    line: int = 1,
    file: str | None = "m.yaml",
    kind: str = "Model",
) -> Record:
    spec: dict[str, Any] = (
        {"source": src} if kind == "Model" else {"model": "tiny", "runtime": "llama-cpp"}
    )
    return Record.model_validate(
        {
            "manifest": {
                "apiVersion": "hive/v1",
                "kind": kind,
                "metadata": {"name": name, "labels": labels or {}},
                "spec": spec,
            },
            "origin": Origin(
                source=source, file=Path(f"/{source}/{file}") if file else None, line=line
            ),
        }
    )


def key(name: str) -> ObjectKey:
    return ObjectKey.of(Kind.MODEL, name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    s = Store(clock=clock)
    s.register(DIR, kind="directory", location="/desired")
    s.register(API, kind="api", location="POST /v1/models")
    return s


def test_two_sources_merge(store: Store) -> None:
    first = store.replace(DIR, [record("a"), record("b")])
    second = store.replace(API, [record("c", source=API)])
    assert first.changed == {key("a"), key("b")}
    assert second.changed == {key("c")}
    assert {r.key for r in store.records()} == {key("a"), key("b"), key("c")}
    assert store.owner(key("a")) == DIR
    assert store.owner(key("c")) == API
    assert store.declared_keys() == {key("a"), key("b"), key("c")}
    counts = {s.name: s.records for s in store.sources()}
    assert counts == {DIR: 2, API: 1}


def test_model_and_worker_of_the_same_name_do_not_conflict(store: Store) -> None:
    result = store.replace(DIR, [record("chat"), record("chat", kind="Worker")])
    assert result.changed == {key("chat"), ObjectKey.of(Kind.WORKER, "chat")}
    assert result.new_conflicts == ()


def test_first_claimer_keeps_the_key_and_the_other_gets_a_conflict_note(store: Store) -> None:
    ours = record("x", line=3)
    theirs = record("x", source=API, src="file:other.gguf", file=None)
    store.replace(DIR, [ours])
    result = store.replace(API, [theirs])

    assert result.changed == frozenset()
    assert store.desired(key("x")) == ours
    (note,) = result.new_conflicts
    assert note.key == key("x")
    assert note.owner == ours.origin
    assert note.other == theirs.origin
    assert "/desired/m.yaml:3 (source desired)" in note.message
    assert "declared by source api but is owned by" in note.message
    assert "first owner keeps it" in note.message
    assert store.conflicts(key("x")) == [note]


def test_the_loser_editing_its_record_changes_nothing(store: Store) -> None:
    store.replace(DIR, [record("x")])
    store.replace(API, [record("x", source=API)])
    result = store.replace(API, [record("x", source=API, src="file:changed.gguf")])
    assert result.changed == frozenset()
    assert result.new_conflicts == ()
    assert store.generation(key("x")) == 1


def test_when_the_owner_drops_the_record_the_other_takes_over(store: Store) -> None:
    ours = record("x")
    theirs = record("x", source=API, src="file:other.gguf")
    store.replace(DIR, [ours])
    store.replace(API, [theirs])

    result = store.replace(DIR, [])
    assert result.changed == {key("x")}
    assert store.owner(key("x")) == API
    assert store.desired(key("x")) == theirs
    assert store.conflicts(key("x")) == []
    assert store.generation(key("x")) == 2  # the spec the loop acts on changed


def test_a_returning_record_does_not_take_the_key_back(store: Store) -> None:
    ours = record("x")
    theirs = record("x", source=API)
    store.replace(DIR, [ours])
    store.replace(API, [theirs])
    store.replace(DIR, [])

    result = store.replace(DIR, [ours])
    assert store.owner(key("x")) == API
    assert result.changed == frozenset()
    (note,) = result.new_conflicts
    assert (note.owner, note.other) == (theirs.origin, ours.origin)


def test_key_removed_by_its_only_source_disappears(store: Store) -> None:
    store.replace(DIR, [record("a"), record("b")])
    result = store.replace(DIR, [record("b")])
    assert result.changed == {key("a")}
    assert store.desired(key("a")) is None
    assert store.owner(key("a")) is None
    assert key("a") not in store.declared_keys()


def test_replace_reports_exactly_the_changed_keys(store: Store) -> None:
    assert store.replace(DIR, [record("a"), record("b"), record("c")]).changed == {
        key("a"),
        key("b"),
        key("c"),
    }
    # A re-parse of an unchanged file gives equal, not identical, records: no change.
    assert store.replace(DIR, [record("a"), record("b"), record("c")]).changed == frozenset()
    result = store.replace(DIR, [record("a"), record("b", src="file:new.gguf"), record("d")])
    assert result.changed == {key("b"), key("c"), key("d")}


def test_generation_bumps_only_when_spec_or_labels_change(store: Store) -> None:
    k = key("a")
    assert store.generation(k) == 0
    store.replace(DIR, [record("a")])
    assert store.generation(k) == 1
    store.replace(DIR, [record("a")])
    assert store.generation(k) == 1
    store.replace(DIR, [record("a", line=40)])  # a comment was added above it
    assert store.generation(k) == 1
    assert store.desired(k) == record("a", line=40)
    store.replace(DIR, [record("a", line=40, labels={"tier": "gold"})])
    assert store.generation(k) == 2
    store.replace(DIR, [record("a", line=40, labels={"tier": "gold"}, src="file:y.gguf")])
    assert store.generation(k) == 3
    store.replace(DIR, [record("a", line=2, labels={"tier": "gold"}, src="file:y.gguf")])
    assert store.generation(k) == 3


def test_generations_are_per_key(store: Store) -> None:
    store.replace(DIR, [record("a"), record("b")])
    store.replace(DIR, [record("a", src="file:z.gguf"), record("b")])
    assert (store.generation(key("a")), store.generation(key("b"))) == (2, 1)


def test_reordering_labels_is_not_a_change(store: Store) -> None:
    store.replace(DIR, [record("a", labels={"a": "1", "b": "2"})])
    result = store.replace(DIR, [record("a", labels={"b": "2", "a": "1"})])
    assert result.changed == frozenset()
    assert store.generation(key("a")) == 1


def test_all_synced_only_after_every_source_synced(store: Store, clock: FakeClock) -> None:
    assert store.all_synced is False
    clock.advance(5)
    store.mark_synced(DIR)
    assert store.all_synced is False
    store.mark_synced(API)
    assert store.all_synced is True
    state = {s.name: s for s in store.sources()}
    assert state[DIR].synced
    assert state[DIR].last_sync_time == clock.now()
    assert state[DIR].last_sync_time == FakeClock().now() + timedelta(seconds=5)


def test_a_source_registered_later_holds_pruning_back(store: Store) -> None:
    store.mark_synced(DIR)
    store.mark_synced(API)
    store.register(SourceName("queen"), kind="queen", location="https://queen")
    assert store.all_synced is False


def test_set_errors_visible_in_sources(store: Store) -> None:
    problem = Problem(file="m.yaml", line=7, field="spec.source", message="bad")
    store.set_errors(DIR, [problem])
    state = {s.name: s for s in store.sources()}
    assert state[DIR].errors == (problem,)
    assert state[API].errors == ()
    store.set_errors(DIR, [])
    assert next(s for s in store.sources() if s.name == DIR).errors == ()


def test_errors_do_not_drop_the_last_good_records(store: Store) -> None:
    store.replace(DIR, [record("a")])
    store.set_errors(DIR, [Problem(file="m.yaml", message="malformed YAML")])
    assert store.desired(key("a")) == record("a")


def test_registering_a_source_twice_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        store.register(DIR, kind="directory", location="/elsewhere")


def worker(name: str, model: str, *, source: SourceName = DIR) -> Record:
    return Record.model_validate(
        {
            "manifest": {
                "apiVersion": "hive/v1",
                "kind": "Worker",
                "metadata": {"name": name},
                "spec": {"model": model, "runtime": "llama-cpp"},
            },
            "origin": Origin(source=source),
        }
    )


def test_the_workers_naming_a_model_follow_the_owning_records(store: Store) -> None:
    store.replace(DIR, [worker("a", "m1"), worker("b", "m1"), worker("c", "m2")])
    assert store.workers_naming("m1") == {"a", "b"}
    store.replace(DIR, [worker("a", "m2"), worker("c", "m2")])  # a moved, b removed
    assert store.workers_naming("m1") == set()
    assert store.workers_naming("m2") == {"a", "c"}
    store.replace(API, [worker("a", "m3", source=API)])  # a second claim: DIR still owns a
    assert store.workers_naming("m3") == set()
    store.replace(DIR, [worker("c", "m2")])  # DIR lets a go: API's record owns it now
    assert store.workers_naming("m2") == {"c"}
    assert store.workers_naming("m3") == {"a"}


def for_hives(
    name: str, gpu: str, *, source: SourceName = DIR, src: str = "https://e.x/a.gguf"
) -> Record:
    """A Model record whose hiveSelector selects hives labelled gpu=`gpu`."""
    base = record(name, source=source, src=src)
    spec = base.manifest.spec.model_dump() | {"hiveSelector": {"matchLabels": {"gpu": gpu}}}
    return Record.model_validate(
        {
            "manifest": base.manifest.model_dump() | {"spec": spec},
            "origin": base.origin,
        }
    )


def test_records_for_other_hives_are_not_desired_and_counted_per_source(clock: FakeClock) -> None:
    store = Store(clock=clock, labels={"gpu": "a", "hive.name": "n1"})
    store.register(DIR, kind="directory", location="/d")
    store.register(API, kind="http", location="/v1/desired/api")
    result = store.replace(DIR, [for_hives("mine", "a"), for_hives("theirs", "b"), record("all")])
    assert result.changed == {key("mine"), key("all")}
    assert store.desired(key("theirs")) is None
    assert key("theirs") not in store.declared_keys()
    assert {r.name for r in store.records()} == {"mine", "all"}
    state = {s.name: s for s in store.sources()}
    assert (state[DIR].records, state[DIR].not_selected) == (2, 1)
    assert state[DIR].not_selected_keys == (key("theirs"),)
    assert (state[API].records, state[API].not_selected) == (0, 0)

    # A new set: the record now selects this hive and the other one goes.
    result = store.replace(DIR, [for_hives("theirs", "a")])
    assert result.changed == {key("mine"), key("all"), key("theirs")}
    state = {s.name: s for s in store.sources()}
    assert (state[DIR].records, state[DIR].not_selected, state[DIR].not_selected_keys) == (
        1,
        0,
        (),
    )


def test_a_key_declared_for_other_hives_claims_nothing(clock: FakeClock) -> None:
    """One source declares Model/x for this hive, another for other hives only: the second
    does not claim it, so there is no conflict, whichever came first."""
    store = Store(clock=clock, labels={"gpu": "a"})
    store.register(API, kind="http", location="/v1/desired/api")
    store.register(DIR, kind="directory", location="/d")
    store.replace(API, [for_hives("x", "b", source=API, src="https://e.x/other.gguf")])
    result = store.replace(DIR, [for_hives("x", "a")])
    assert result.changed == {key("x")}
    assert not result.new_conflicts
    assert store.owner(key("x")) == DIR
    assert store.conflicts(key("x")) == []
    desired = store.desired(key("x"))
    assert desired is not None and desired.origin.source == DIR


def test_a_store_without_labels_applies_every_record(store: Store) -> None:
    store.replace(DIR, [for_hives("theirs", "b")])
    assert store.desired(key("theirs")) is not None
    assert store.sources()[0].not_selected == 0
