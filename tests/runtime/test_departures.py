"""Why a model went: a removal by hand, an API deletion, `state: absent`; a model that was
never on disk has not gone."""

from __future__ import annotations

from pathlib import Path

from hive.core.clock import FakeClock
from hive.core.parse import parse_text
from hive.core.store import Store
from hive.model.ids import SourceName
from hive.model.observed import ObservedModel
from hive.runtime.departures import ABSENT, BY_API, REMOVED, Departures
from tests.conftest import model_yaml

SOURCE = SourceName("test")


def on_disk(name: str) -> ObservedModel:
    return ObservedModel(name=name, directory=Path("/m") / name, metadata=None, file_size=10)


def store_with(text: str = "") -> Store:
    store = Store(clock=FakeClock())
    store.register(SOURCE, kind="test", location="test.yaml")
    parsed = parse_text(text, file="test.yaml", source=SOURCE) if text else None
    store.replace(SOURCE, parsed.records if parsed else [])
    return store


def test_a_model_removed_by_hand() -> None:
    d = Departures(store=store_with())
    assert d.observed("m", None) is None  # never seen: not gone, only not there yet
    assert d.gone("m") is None
    assert d.observed("m", on_disk("m")) is None
    assert (
        d.observed(
            "m", ObservedModel(name="m", directory=Path("/m/m"), metadata=None, file_size=None)
        )
        == REMOVED
    )  # only its file went
    assert d.gone("m") == REMOVED
    assert d.observed("m", None) is None  # said once
    assert d.observed("m", on_disk("m")) is None  # back
    assert d.gone("m") is None


def test_an_api_deletion_is_told_as_one_once() -> None:
    d = Departures(store=store_with())
    d.observed("m", on_disk("m"))
    d.deleting_by_api("m")
    assert d.why("m") == BY_API
    assert d.observed("m", None) == BY_API
    assert d.gone("m") == BY_API
    d.observed("m", on_disk("m"))
    assert d.observed("m", None) == REMOVED  # the next going is by hand again


def test_state_absent_is_gone_before_the_files_go() -> None:
    store = store_with(model_yaml("m", "file:/x.gguf", state="absent"))
    d = Departures(store=store)
    d.observed("m", on_disk("m"))
    assert d.gone("m") == ABSENT  # the files are still there: going
    assert d.observed("m", None) == ABSENT
    present = parse_text(model_yaml("m", "file:/x.gguf"), file="test.yaml", source=SOURCE)
    store.replace(SOURCE, present.records)
    assert d.gone("m") is None  # wanted again: not gone, only not fetched yet


def test_reasons_of_models_no_worker_uses_are_forgotten() -> None:
    d = Departures(store=store_with())
    for name in ("a", "b"):
        d.observed(name, on_disk(name))
        d.observed(name, None)
    d.retain({"a"})
    assert d.gone("a") == REMOVED
    assert d.gone("b") is None
    assert d.known() == {"a"}
