"""HTTP sources (`api`, `queen`, and those clients create): persisted whole before they
apply, applied whole, read back by a new hive, and never emptied or pruned by mistake."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from hive.core.clock import SystemClock
from hive.core.store import ReplaceResult, Store
from hive.errors import Conflict, NotFound, TransientError, ValidationFailed
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.manifests import ModelManifest, Origin, Record, WorkerManifest
from hive.narration.bus import Bus
from hive.sources.http import API, QUEEN, HttpSources, desired_dir, http_source_problem


class Harness:
    def __init__(self, home: Path) -> None:
        clock = SystemClock()
        self.home = home
        self.store = Store(clock=clock)
        self.bus = Bus(clock=clock)
        self.changes: list[ReplaceResult] = []
        self.sources = HttpSources(
            home=home, store=self.store, bus=self.bus, on_change=self.changes.append
        )

    def owners(self) -> dict[str, str | None]:
        return {key: self.store.owner(key) for key in sorted(self.store.declared_keys())}


def model(name: str, source: str = "https://example.invalid/m.gguf", *, src: str = API) -> Record:
    manifest = ModelManifest.model_validate(
        {
            "apiVersion": "hive/v1",
            "kind": "Model",
            "metadata": {"name": name},
            "spec": {"source": source},
        }
    )
    return Record(manifest=manifest, origin=Origin(source=SourceName(src)))


def worker(name: str, model_name: str, *, src: str = API) -> Record:
    manifest = WorkerManifest.model_validate(
        {
            "apiVersion": "hive/v1",
            "kind": "Worker",
            "metadata": {"name": name},
            "spec": {"model": model_name, "runtime": "llama-cpp", "device": "GPU-1"},
        }
    )
    return Record(manifest=manifest, origin=Origin(source=SourceName(src)))


M_A, M_B = ObjectKey.of(Kind.MODEL, "a"), ObjectKey.of(Kind.MODEL, "b")
W_A = ObjectKey.of(Kind.WORKER, "w-a")


async def test_built_in_sources_exist_and_count_as_synced_once_loaded(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.sources.names() == [API, QUEEN]
    assert not h.store.all_synced  # nothing may be pruned before the persisted sets are read
    await h.sources.load()
    assert h.store.all_synced
    assert {s.name: s.kind for s in h.store.sources()} == {API: "http", QUEEN: "http"}


async def test_upsert_remove_replace_persist_then_apply_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    api = h.sources.api
    result = await api.upsert([model("a"), worker("w-a", "a")])
    assert result.changed == {M_A, W_A}
    assert h.changes[-1] is result  # the manager's on_change is told, as for a directory
    await api.upsert([model("b")])
    await api.upsert([model("a", "https://example.invalid/other.gguf")])
    await api.remove([W_A, ObjectKey.of(Kind.WORKER, "never-there")])
    assert h.owners() == {M_A: API, M_B: API}

    saved = json.loads((desired_dir(tmp_path) / "api.json").read_text())
    assert saved["version"] == 1
    assert [r["metadata"]["name"] for r in saved["records"]] == ["a", "b"]
    assert os.stat(desired_dir(tmp_path) / "api.json").st_mode & 0o777 == 0o600

    again = Harness(tmp_path)  # a restarted hive
    await again.sources.load()
    assert again.owners() == {M_A: API, M_B: API}
    record = again.store.desired(M_A)
    assert record is not None and isinstance(record.manifest, ModelManifest)
    assert record.manifest.spec.source == "https://example.invalid/other.gguf"
    assert record.origin == Origin(source=API)

    await again.sources.api.replace([model("b")])
    assert again.owners() == {M_B: API}


async def test_emptying_a_source_needs_allow_empty(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    queen = h.sources.get(QUEEN)
    assert queen is not None
    await queen.replace([])  # empty to empty: nothing to lose
    await queen.replace([model("a", src=QUEEN)])
    with pytest.raises(Conflict, match=r"allowEmpty=true"):
        await queen.replace([])
    assert h.owners() == {M_A: QUEEN}
    await queen.replace([], allow_empty=True)
    assert h.owners() == {}


async def test_bad_sets_are_refused_whole(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    api = h.sources.api
    await api.upsert([model("a")])
    with pytest.raises(ValidationFailed, match="declared twice"):
        await api.replace([model("b"), model("b")])
    with pytest.raises(ValidationFailed, match="absolute path") as caught:
        await api.upsert([model("b"), model("c", "file:models/c.gguf")])
    assert caught.value.problems == [
        "source api, record 1: spec.source: 'file:models/c.gguf': a file: source sent over "
        "HTTP must be an absolute path (file:/path/model.gguf); there is no manifest file "
        "for a relative one to start from"
    ]
    assert h.owners() == {M_A: API}  # nothing of either request applied
    await api.upsert([model("c", "file:/srv/models/c.gguf")])  # an absolute one is fine


async def test_a_set_that_cannot_be_saved_is_not_applied(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    desired_dir(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    desired_dir(tmp_path).write_text("a file where the directory should be")
    with pytest.raises(TransientError, match="nothing was applied"):
        await h.sources.api.upsert([model("a")])
    assert h.owners() == {}
    assert h.sources.api.records() == ()


async def test_an_unreadable_persisted_set_is_kept_and_blocks_pruning(tmp_path: Path) -> None:
    directory = desired_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "queen.json").write_text('{"version": 1, "records": [{"kind": "Model"')
    h = Harness(tmp_path)
    await h.sources.load()
    state = next(s for s in h.store.sources() if s.name == QUEEN)
    assert not state.synced and not h.store.all_synced
    assert "PUT /v1/desired/queen to replace it" in state.errors[0].message
    assert (directory / "queen.json").read_text().startswith('{"version": 1')  # kept
    errors = [e for e in h.bus.read(0, limit=10)[0] if e.action == "source_error"]
    assert len(errors) == 1

    queen = h.sources.get(QUEEN)
    assert queen is not None
    await queen.replace([model("a", src=QUEEN)])
    state = next(s for s in h.store.sources() if s.name == QUEEN)
    assert state.synced and not state.errors and h.store.all_synced


async def test_client_sources_are_created_loaded_and_deleted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    mine = h.sources.open("team-a")
    assert h.sources.open("team-a") is mine
    await mine.replace([model("a", src="team-a")])

    again = Harness(tmp_path)
    await again.sources.load()
    assert again.sources.names() == [API, QUEEN, "team-a"]
    assert again.owners() == {M_A: "team-a"}

    await again.sources.drop("team-a")
    assert again.sources.names() == [API, QUEEN]
    assert again.owners() == {}
    assert "team-a" not in {s.name for s in again.store.sources()}
    assert not (desired_dir(tmp_path) / "team-a.json").exists()
    await again.sources.drop(QUEEN)  # a built-in source stays, empty
    assert again.sources.names() == [API, QUEEN]
    with pytest.raises(NotFound):
        await again.sources.drop("never-made")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("dir:/srv/manifests", "names a watched directory or git source"),
        ("git:fleet", "names a watched directory or git source"),
        ("..", "must not contain '..'"),
        ("a\nb", "is not a valid name"),
        ("Upper", "is not a valid name"),
        ("x" * 64, "64 characters long"),
    ],
)
def test_names_that_cannot_be_http_sources(name: str, problem: str) -> None:
    found = http_source_problem(name)
    assert found is not None and problem in found
    assert http_source_problem("team-a") is None


@pytest.mark.parametrize(
    "body",
    [
        '{"version": 1, "records": 5}',
        '{"version": 1, "records": {"kind": "Model"}}',
        '{"version": 1, "records": [5]}',
        '{"version": 1, "records": [["Model"]]}',
        '{"version": 1, "records": [{"kind": "Model", "metadata": 5, "spec": []}]}',
    ],
)
async def test_valid_json_of_the_wrong_shape_is_reported_not_fatal(
    tmp_path: Path, body: str
) -> None:
    directory = desired_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "queen.json").write_text(body)
    h = Harness(tmp_path)
    await h.sources.load()  # hive starts
    state = next(s for s in h.store.sources() if s.name == QUEEN)
    assert not state.synced and "queen.json" in state.errors[0].file
    assert (directory / "queen.json").read_text() == body  # kept


async def test_writes_racing_a_delete_are_404s_and_leave_no_file(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    team = h.sources.open("team-a")
    await team.replace([model("a", src="team-a")])
    path = desired_dir(tmp_path) / "team-a.json"
    assert path.exists()
    # A DELETE and, holding the same source, a PUT, a PATCH and a second DELETE at once.
    results = await asyncio.gather(
        h.sources.drop("team-a"),
        team.replace([model("b", src="team-a")]),
        team.upsert([model("c", src="team-a")]),
        h.sources.drop("team-a"),
        return_exceptions=True,
    )
    assert isinstance(results[0], ReplaceResult)
    assert all(isinstance(r, NotFound) for r in results[1:]), results
    assert not path.exists()
    assert "team-a" not in h.sources.names()
    assert "team-a" not in {s.name for s in h.store.sources()}
    assert h.owners() == {}


async def test_a_source_whose_first_write_fails_is_forgotten(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.sources.load()
    new = h.sources.open("team-b")
    with pytest.raises(ValidationFailed):
        await new.replace([model("a", src="team-b"), model("a", src="team-b")])
    await h.sources.forget(new)
    assert "team-b" not in h.sources.names()
    assert "team-b" not in {s.name for s in h.store.sources()}
    kept = h.sources.open("team-c")
    await kept.replace([model("a", src="team-c")])
    await h.sources.forget(kept)  # written once: stays
    assert "team-c" in h.sources.names()
