"""The watched-directory source against real files, watched both ways: real inotify read on
the event loop (Linux) and watchfiles (`portable`, what macOS and Windows get)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import INotify

from hive.core.clock import SystemClock
from hive.core.store import ReplaceResult, SourceState, Store
from hive.model.events import Event, Level
from hive.model.ids import Kind, ObjectKey
from hive.narration.bus import Bus
from hive.portable_watch import WATCHER_THREAD
from hive.sources.directory import DirectorySource
from tests.conftest import ROOT, apoll, model_yaml, write_atomic

TINY = ObjectKey.of(Kind.MODEL, "tiny")


class Harness:
    def __init__(
        self,
        root: Path,
        *,
        allow_empty: bool = False,
        on_change: Callable[[ReplaceResult], None] | None = None,
        portable: bool = False,
    ) -> None:
        clock = SystemClock()
        self.root = root
        self.portable = portable
        self.store = Store(clock=clock)
        self.bus = Bus(clock=clock)
        self.changes: list[ReplaceResult] = []
        self.source = DirectorySource(
            root,
            store=self.store,
            bus=self.bus,
            on_change=on_change or self.changes.append,
            missing_poll=0.1,
            allow_empty=allow_empty,
            portable=portable,
        )

    @property
    def state(self) -> SourceState:
        (state,) = self.store.sources()
        return state

    def source_of(self, key: ObjectKey) -> str | None:
        record = self.store.desired(key)
        return None if record is None else record.manifest.spec.source  # type: ignore[union-attr]

    async def until(self, fn: Callable[[], object], what: str, limit: float = 10.0) -> None:
        await apoll(fn, within=limit, what=what)


@pytest.fixture(params=[False, True], ids=["inotify", "watchfiles"])
def portable(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def harness(tmp_path: Path, portable: bool) -> AsyncIterator[Harness]:
    root = tmp_path / "desired"
    root.mkdir()
    h = Harness(root, portable=portable)
    await h.source.start()
    # The way asked for is the way taken (inotify: no thread; a test before may have left
    # a replaced watcher's, ending at its next step).
    if portable:
        assert watcher_threads()
    else:
        await apoll(lambda: not watcher_threads(), within=5, what="no watcher thread")
    yield h
    await h.source.stop()
    # The watcher's thread ends with the source: none is left behind.
    await apoll(lambda: not watcher_threads(), within=5, what="the watcher thread ended")


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WATCHER_THREAD]


async def test_add_replace_delete(harness: Harness) -> None:
    assert harness.state.synced
    path = harness.root / "tiny.yaml"
    path.write_text(model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.source_of(TINY) is not None, "the record")
    assert harness.source_of(TINY) == "file:a.gguf"
    assert harness.store.generation(TINY) == 1

    write_atomic(path, model_yaml("tiny", "file:b.gguf"))
    await harness.until(lambda: harness.source_of(TINY) == "file:b.gguf", "the replacement")
    assert harness.store.generation(TINY) == 2

    (harness.root / ".hive-allow-empty").touch()  # the last record may go
    path.unlink()
    await harness.until(lambda: harness.store.desired(TINY) is None, "the removal")
    assert harness.state.records == 0


async def test_subdirectories_are_watched(harness: Harness) -> None:
    sub = harness.root / "team" / "chat"
    sub.mkdir(parents=True)
    (sub / "m.yml").write_text(model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "a nested record")


OTHER = ObjectKey.of(Kind.MODEL, "other")


async def test_a_file_is_read_once_it_is_complete_not_half_written(harness: Harness) -> None:
    if harness.portable:
        pytest.skip("watchfiles does not tell a file closed: portable reads one held still")
    text = model_yaml("tiny", "file:a.gguf")
    with open(harness.root / "tiny.yaml", "w") as f:  # noqa: ASYNC230 (a writer, on purpose)
        f.write(text[: len(text) // 2])
        f.flush()
        # Another file, written whole after the half: once its record is in, the watcher
        # has handled every event queued before it, the half-write's included.
        write_atomic(harness.root / "other.yaml", model_yaml("other", "file:o.gguf"))
        await harness.until(lambda: harness.store.desired(OTHER) is not None, "other")
        assert harness.store.desired(TINY) is None
        f.write(text[len(text) // 2 :])
    await harness.until(lambda: harness.source_of(TINY) == "file:a.gguf", "the whole file")
    errors = [e for e in harness.bus.read(0, limit=100)[0] if e.action == "manifest_error"]
    assert errors == []


async def test_directories_moved_in_out_and_around_are_followed(
    harness: Harness, tmp_path: Path
) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "m.yaml").write_text(model_yaml("tiny", "file:a.gguf"))
    os.rename(prepared, harness.root / "team")
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the moved-in record")

    os.rename(harness.root / "team", harness.root / "renamed")
    # The moved directory is watched under its new name.
    (harness.root / "renamed" / "o.yaml").write_text(model_yaml("other", "file:o.gguf"))
    await harness.until(lambda: harness.store.desired(OTHER) is not None, "a file in it")
    assert harness.store.desired(TINY) is not None

    (harness.root / ".hive-allow-empty").touch()  # the last records may go
    os.rename(harness.root / "renamed", tmp_path / "away")
    await harness.until(
        lambda: harness.store.desired(TINY) is None and harness.store.desired(OTHER) is None,
        "the records of the directory moved away",
    )
    # No longer watched: a write in it does not count.
    (tmp_path / "away" / "late.yaml").write_text(model_yaml("late", "file:l.gguf"))
    assert [str(d) for d in harness.source.watched_directories] == [str(harness.root)]


async def test_new_links_are_read_as_they_appear(harness: Harness, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.yaml").write_text(model_yaml("tiny", "file:a.gguf"))
    (elsewhere / "b.yaml").write_text(model_yaml("other", "file:o.gguf"))
    os.link(elsewhere / "a.yaml", harness.root / "a.yaml")
    await harness.until(lambda: harness.store.desired(TINY) is not None, "a hard link")
    (harness.root / "b.yaml").symlink_to(elsewhere / "b.yaml")
    await harness.until(lambda: harness.store.desired(OTHER) is not None, "a symlink")


async def test_a_configmap_style_symlink_swap_is_seen(harness: Harness) -> None:
    """Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data -> ..<stamp>/`, and
    updates it by swapping `..data` with a rename."""
    root = harness.root
    (root / "..v1").mkdir()
    (root / "..v1" / "m.yaml").write_text(model_yaml("tiny", "file:a.gguf"))
    (root / "..data").symlink_to("..v1")
    (root / "m.yaml").symlink_to("..data/m.yaml")
    await harness.until(lambda: harness.source_of(TINY) == "file:a.gguf", "the record")
    (root / "..v2").mkdir()
    (root / "..v2" / "m.yaml").write_text(model_yaml("tiny", "file:b.gguf"))
    (root / "..data_tmp").symlink_to("..v2")
    os.rename(root / "..data_tmp", root / "..data")
    await harness.until(lambda: harness.source_of(TINY) == "file:b.gguf", "the swapped record")


async def test_editor_temp_and_hidden_files_are_ignored(harness: Harness) -> None:
    for name in (".tiny.yaml.swp", "tiny.yaml~", ".hidden.yaml", "4913", "notes.txt"):
        (harness.root / name).write_text(model_yaml("tiny", "file:a.gguf"))
    (harness.root / "real.json").write_text(
        json.dumps(
            {
                "apiVersion": "hive/v1",
                "kind": "Model",
                "metadata": {"name": "other"},
                "spec": {"source": "file:o.gguf"},
            }
        )
    )
    other = ObjectKey.of(Kind.MODEL, "other")
    await harness.until(lambda: harness.store.desired(other) is not None, "the json record")
    await harness.source.resync()
    assert harness.store.desired(TINY) is None
    assert harness.state.errors == ()


async def test_broken_file_keeps_its_last_good_records_until_fixed(harness: Harness) -> None:
    path = harness.root / "tiny.yaml"
    write_atomic(path, model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.source_of(TINY) == "file:a.gguf", "the record")

    write_atomic(path, "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: [unclosed\n")
    await harness.until(lambda: harness.state.errors, "the parse error")
    (problem,) = harness.state.errors
    assert problem.file == str(path)
    assert problem.line is not None
    assert "malformed YAML" in problem.message
    assert harness.source_of(TINY) == "file:a.gguf"  # invalid input never deletes
    errors = [e for e in harness.bus.read(0, limit=100)[0] if e.action == "manifest_error"]
    assert errors
    assert errors[0].data["kept_records"] == 1

    write_atomic(path, model_yaml("tiny", "file:fixed.gguf"))
    await harness.until(lambda: not harness.state.errors, "the error to clear")
    assert harness.source_of(TINY) == "file:fixed.gguf"


BAD_INPUTS = {
    "malformed": ("key: [1, 2\n", "malformed YAML"),
    "list": ("- a\n- b\n", "must be a mapping"),
    "scalar": ("just a string\n", "must be a mapping"),
    "unknown kind": (
        "apiVersion: hive/v1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n",
        "'Pod' is not supported",
    ),
    "unknown version": (
        model_yaml("x", "file:a").replace("hive/v1", "hive/v9"),
        "'hive/v9' is not supported",
    ),
    "extra field": (model_yaml("x", "file:a") + "  color: red\n", "unknown field"),
    "missing field": (
        "apiVersion: hive/v1\nkind: Model\nmetadata: {name: x}\nspec: {}\n",
        "required field is missing",
    ),
    "slash in name": (model_yaml("a/b", "file:a"), "not a valid name"),
    "dotdot in name": (model_yaml("a..b", "file:a"), "'..'"),
    "upper case": (model_yaml("Tiny", "file:a"), "not a valid name"),
    "64 chars": (model_yaml("a" * 64, "file:a"), "at most 63"),
    "scheme": (model_yaml("x", "ftp://h/x.gguf"), "scheme 'ftp' is not supported"),
    "sha256": (model_yaml("x", "file:a", sha256="abc"), "64 lower-case hex"),
    "empty": ("", "no documents"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_is_reported_and_touches_nothing_else(harness: Harness, case: str) -> None:
    good = harness.root / "good.yaml"
    write_atomic(good, model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the good record")
    text, expected = BAD_INPUTS[case]
    write_atomic(harness.root / "bad.yaml", text)
    await harness.until(lambda: harness.state.errors, f"the error for {case}")
    messages = [str(p) for p in harness.state.errors]
    assert any(expected in m for m in messages), messages
    assert all(m.startswith(str(harness.root / "bad.yaml")) for m in messages), messages
    assert harness.source_of(TINY) == "file:a.gguf"
    assert len(harness.store.declared_keys()) == 1


async def test_huge_manifest_is_refused_quickly(harness: Harness) -> None:
    write_atomic(harness.root / "good.yaml", model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the good record")
    huge = harness.root / "huge.yaml"
    with huge.open("w") as fh:
        fh.write("# " + "x" * 1022 + "\n")
        chunk = ("# " + "y" * 1021 + "\n") * 1024
        for _ in range(50):
            fh.write(chunk)
    assert huge.stat().st_size > 50_000_000
    await harness.until(lambda: harness.state.errors, "the size error")
    (problem,) = harness.state.errors
    assert "manifests are limited to 4 MiB" in problem.message
    assert harness.store.desired(TINY) is not None


async def test_same_name_in_two_files_is_a_problem_of_the_later_file(harness: Harness) -> None:
    write_atomic(harness.root / "a.yaml", model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the first record")
    write_atomic(harness.root / "b.yaml", model_yaml("tiny", "file:b.gguf"))
    await harness.until(lambda: harness.state.errors, "the duplicate")
    (problem,) = harness.state.errors
    assert problem.file == str(harness.root / "b.yaml")
    assert "already declared" in problem.message
    assert harness.source_of(TINY) == "file:a.gguf"
    narrated = [e for e in harness.bus.read(0, limit=100)[0] if e.action == "manifest_error"]
    assert len(narrated) == 1
    assert "first declaration stays in force" in narrated[0].message


async def test_missing_directory_is_an_error_not_an_empty_set(
    tmp_path: Path, portable: bool
) -> None:
    h = Harness(tmp_path / "nowhere", portable=portable)
    await h.source.start()
    try:
        assert not h.state.synced  # so nothing is pruned on its behalf
        assert "does not exist" in h.state.errors[0].message
        (tmp_path / "nowhere").mkdir()
        write_atomic(tmp_path / "nowhere" / "m.yaml", model_yaml("tiny", "file:a.gguf"))
        await h.until(lambda: h.store.desired(TINY) is not None, "the record once it exists")
        assert h.state.synced
        assert h.state.errors == ()
    finally:
        await h.source.stop()


_REWRITE = """
import os, sys, time
path, text = sys.argv[1], sys.argv[2]
os.unlink(path)
time.sleep(0.005)  # the writer's own pace: git unlinks, then creates the file again
with open(path, "w") as f:
    f.write(text)
"""


async def test_a_file_unlinked_and_written_again_keeps_its_records(harness: Harness) -> None:
    """`git checkout` replaces a file by unlinking it, then creating it: its records must
    not go (and their workers be stopped) for the moment in between."""
    path = harness.root / "tiny.yaml"
    write_atomic(path, model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.source_of(TINY) == "file:a.gguf", "the record")
    harness.changes.clear()
    text = model_yaml("tiny", "file:b.gguf")
    argv = [sys.executable, "-c", _REWRITE, str(path), text]
    await asyncio.to_thread(subprocess.run, argv, check=True, timeout=30)  # the loop watches
    await harness.until(lambda: harness.source_of(TINY) == "file:b.gguf", "the new record")
    assert [sorted(c.changed) for c in harness.changes] == [[TINY]]  # one change, no removal
    assert harness.store.generation(TINY) == 2


async def test_directory_that_disappears_keeps_records(harness: Harness) -> None:
    write_atomic(harness.root / "m.yaml", model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the record")
    # As `rm -rf` does, the file first, then the directory, while the loop watches.
    await asyncio.to_thread(shutil.rmtree, harness.root)
    await harness.until(lambda: harness.state.errors, "the directory error")
    assert "does not exist" in harness.state.errors[0].message
    # Deleting the files with the directory must not count as deleting the records.
    assert harness.store.desired(TINY) is not None


_AS_NOBODY = """
import asyncio, json, sys
from pathlib import Path
from hive.core.clock import SystemClock
from hive.core.store import Store
from hive.narration.bus import Bus
from hive.portable_watch import WATCHER_THREAD
from hive.sources.directory import DirectorySource

async def main():
    clock = SystemClock()
    store = Store(clock=clock)
    source = DirectorySource(Path(sys.argv[1]), store=store, bus=Bus(clock=clock),
                             on_change=lambda r: None)
    await source.resync()
    (state,) = store.sources()
    print(json.dumps({"synced": state.synced, "records": state.records,
                      "errors": [str(e) for e in state.errors]}))

asyncio.run(main())
"""


def _run_without_read_override(script: str, path: Path) -> Any:
    """Run `script` (with `path` as its argument) in a child that gets EACCES as a user
    would, and what it printed, parsed as JSON. The tests run as root, which reads
    everything whatever the mode bits: as root the child runs under util-linux `setpriv`,
    stripped of the capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    command = [sys.executable, "-c", script, str(path)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd="/", timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_unreadable_directory_is_an_error_not_an_empty_set() -> None:
    """A real EACCES, in a process without the privilege to read everything."""
    base = Path(tempfile.mkdtemp(prefix="hive-unreadable-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        (locked / "m.yaml").write_text(model_yaml("tiny", "file:a.gguf"))
        locked.chmod(0o000)
        result = _run_without_read_override(_AS_NOBODY, locked)
        assert result["synced"] is False
        assert result["records"] == 0
        assert any("Permission denied" in e for e in result["errors"]), result
    finally:
        (base / "locked").chmod(0o755)
        for p in sorted(base.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        base.rmdir()


async def test_without_inotify_the_directory_is_read_every_poll_and_the_problem_told(
    tmp_path: Path, portable: bool
) -> None:
    """A real limit: every inotify instance this user may have is taken (128 by default)."""
    held: list[INotify] = []
    try:
        while len(held) < 4096:
            try:
                held.append(INotify())
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        else:
            pytest.skip("fs.inotify.max_user_instances is too high to reach in a test")
        try:
            os.close(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pytest.skip("the process ran out of file descriptors before inotify instances")
        root = tmp_path / "desired"
        root.mkdir()
        h = Harness(root, portable=portable)
        await h.source.start()
        try:
            (told,) = [e for e in h.bus.read(0, limit=100)[0] if e.action == "source_error"]
            assert "cannot watch for changes" in told.message
            assert "max_user_instances" in told.message
            assert h.source.watched_directories == []
            write_atomic(root / "m.yaml", model_yaml("tiny", "file:a.gguf"))
            await h.until(lambda: h.store.desired(TINY) is not None, "the record, polled")
            for instance in held:
                instance.close()
            held.clear()
            await h.until(lambda: h.source.watched_directories == [root], "watching again")
            (root / ".hive-allow-empty").touch()  # the last record may go
            (root / "m.yaml").unlink()
            await h.until(lambda: h.store.desired(TINY) is None, "the removal")
        finally:
            await h.source.stop()
    finally:
        for instance in held:
            instance.close()


# -- issue 13: an empty directory, errors that clear, unreadable files, the watch loop ---------


def _events(h: Harness, action: str) -> list[Event]:
    return [e for e in h.bus.read(0, limit=1000)[0] if e.action == action]


async def test_a_directory_emptied_keeps_its_records_and_says_how_to_allow_it(
    harness: Harness,
) -> None:
    write_atomic(harness.root / "a.yaml", model_yaml("tiny", "file:a.gguf"))
    write_atomic(harness.root / "b.yaml", model_yaml("other", "file:b.gguf"))
    await harness.until(lambda: harness.state.records == 2, "both records")
    harness.changes.clear()

    (harness.root / "a.yaml").unlink()
    await harness.until(lambda: harness.store.desired(TINY) is None, "one record to go")
    (harness.root / "b.yaml").unlink()  # the last one: refused
    await harness.until(lambda: _events(harness, "source_error"), "the refusal")
    (told,) = _events(harness, "source_error")
    assert told.level == Level.ERROR
    assert f"source dir:{harness.root} had 1 record(s) and now has none" in told.message
    assert "refusing to delete them all" in told.message
    assert ".hive-allow-empty" in told.message and "--allow-empty" in told.message
    assert harness.store.desired(OTHER) is not None  # still in force
    assert harness.state.records == 1
    (error,) = harness.state.errors
    assert "refusing to delete them all" in error.message
    assert [sorted(c.changed) for c in harness.changes] == [[TINY]]  # OTHER never went

    # The marker file allows it: the watcher reads the tree again when it appears.
    (harness.root / ".hive-allow-empty").touch()
    await harness.until(lambda: harness.store.desired(OTHER) is None, "the last record to go")
    assert harness.state.errors == ()
    assert _events(harness, "source_error_cleared")


async def test_a_directory_replaced_by_an_empty_one_is_refused(
    harness: Harness, tmp_path: Path
) -> None:
    write_atomic(harness.root / "a.yaml", model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.state.records == 1, "the record")
    # A failed mount or a bad rsync: the directory is there, and empty.
    os.rename(harness.root, tmp_path / "old")
    harness.root.mkdir()
    await harness.until(
        lambda: any("refusing to delete" in e.message for e in harness.state.errors),
        "the refusal",
    )
    assert harness.store.desired(TINY) is not None
    await harness.source.resync()  # a resync refuses again, and says it once
    assert harness.store.desired(TINY) is not None
    assert len([e for e in _events(harness, "source_error") if "refusing" in e.message]) == 1

    # Records again: they replace the old set, and the error clears.
    write_atomic(harness.root / "b.yaml", model_yaml("other", "file:b.gguf"))
    await harness.until(lambda: harness.store.desired(OTHER) is not None, "the new record")
    assert harness.store.desired(TINY) is None
    assert harness.state.errors == ()
    (cleared,) = _events(harness, "source_error_cleared")
    assert "holds 1 record(s)" in cleared.message


async def test_the_setting_allows_a_directory_to_go_empty(tmp_path: Path, portable: bool) -> None:
    root = tmp_path / "desired"
    root.mkdir()
    h = Harness(root, allow_empty=True, portable=portable)
    await h.source.start()
    try:
        write_atomic(root / "a.yaml", model_yaml("tiny", "file:a.gguf"))
        await h.until(lambda: h.store.desired(TINY) is not None, "the record")
        (root / "a.yaml").unlink()
        await h.until(lambda: h.store.desired(TINY) is None, "the removal")
        assert h.state.errors == ()
    finally:
        await h.source.stop()


async def test_fixing_a_broken_manifest_says_the_error_cleared(harness: Harness) -> None:
    path = harness.root / "m.yaml"
    write_atomic(path, model_yaml("tiny", "ftp://example.com/x.gguf"))
    await harness.until(lambda: harness.state.errors, "the error")
    write_atomic(path, model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: _events(harness, "manifest_error_cleared"), "the all-clear")
    (cleared,) = _events(harness, "manifest_error_cleared")
    assert cleared.level == Level.INFO
    assert cleared.message == f"{path}: fixed; its 1 record(s) apply"
    assert cleared.data == {"source": harness.source.name, "file": str(path)}
    assert harness.state.errors == ()

    # A broken file that is deleted clears its errors too, and says so.
    broken = harness.root / "broken.yaml"
    write_atomic(broken, "kind: [\n")
    await harness.until(lambda: harness.state.errors, "the second error")
    broken.unlink()
    await harness.until(lambda: len(_events(harness, "manifest_error_cleared")) == 2, "cleared")
    assert "removed" in _events(harness, "manifest_error_cleared")[1].message


async def test_the_watcher_survives_an_unexpected_error_and_says_so(
    tmp_path: Path, portable: bool
) -> None:
    """A bug outside the parser (here: the listener of the source's changes fails once)
    must not end the watch: it is told, and the next write is still seen at once."""
    root = tmp_path / "desired"
    root.mkdir()
    failures = [MemoryError("out of memory")]

    def on_change(result: ReplaceResult) -> None:
        if failures and result.changed:
            raise failures.pop()

    h = Harness(root, on_change=on_change, portable=portable)
    await h.source.start()
    try:
        write_atomic(root / "a.yaml", model_yaml("tiny", "file:a.gguf"))
        await h.until(lambda: _events(h, "source_error"), "the error told")
        (told,) = _events(h, "source_error")
        assert "watching failed: MemoryError: out of memory" in told.message
        await h.until(lambda: _events(h, "source_error_cleared"), "watching again")
        write_atomic(root / "b.yaml", model_yaml("other", "file:b.gguf"))
        await h.until(lambda: h.store.desired(OTHER) is not None, "a later write, seen")
        assert h.state.errors == ()
    finally:
        await h.source.stop()


async def test_a_fifo_named_like_a_manifest_is_refused_without_blocking(harness: Harness) -> None:
    """Opened for reading, a FIFO blocks until a writer comes: the source would hang."""
    os.mkfifo(harness.root / "m.yaml")
    write_atomic(harness.root / "n.yaml", model_yaml("tiny", "file:a.gguf"))
    await harness.until(lambda: harness.store.desired(TINY) is not None, "the other file")
    await harness.source.resync()
    (error,) = harness.state.errors
    assert "is not a regular file" in error.message


_UNREADABLE_SCENARIO = """
import asyncio, json, os, sys
from pathlib import Path
from hive.core.clock import SystemClock
from hive.core.store import Store
from hive.narration.bus import Bus
from hive.portable_watch import WATCHER_THREAD
from hive.sources.directory import DirectorySource

async def main():
    root = Path(sys.argv[1])
    clock = SystemClock()
    store = Store(clock=clock)
    source = DirectorySource(root, store=store, bus=Bus(clock=clock), on_change=lambda r: None)
    steps = []

    async def step(what):
        await source.resync()
        (state,) = store.sources()
        steps.append({"step": what, "records": state.records,
                      "errors": [str(e) for e in state.errors]})

    await step("readable")
    root.chmod(0o000)
    await step("directory locked")
    root.chmod(0o755)
    (root / "m.yaml").chmod(0o000)
    await step("file locked")
    await step("file still locked")
    (root / "m.yaml").chmod(0o644)
    await step("file readable")
    print(json.dumps(steps))

asyncio.run(main())
"""


def test_an_unreadable_manifest_stays_an_error_until_it_can_be_read() -> None:
    """The issue's steps with a real EACCES: `chmod 000 desired`, resync, `chmod 755
    desired; chmod 000 desired/m.yaml`, resync, in a child that gets EACCES even as root
    (`_run_without_read_override`)."""
    base = Path(tempfile.mkdtemp(prefix="hive-unreadable-"))
    try:
        base.chmod(0o755)
        root = base / "desired"
        root.mkdir()
        (root / "m.yaml").write_text(model_yaml("tiny", "file:a.gguf"))
        steps = {s["step"]: s for s in _run_without_read_override(_UNREADABLE_SCENARIO, root)}
        assert steps["readable"] == {"step": "readable", "records": 1, "errors": []}
        assert steps["directory locked"]["records"] == 1
        assert "Permission denied" in steps["directory locked"]["errors"][0]
        for locked in ("file locked", "file still locked"):
            # Its last good record stays in force, and the status says it cannot be read.
            assert steps[locked]["records"] == 1
            assert steps[locked]["errors"] == [f"{root}/m.yaml: cannot read: Permission denied"]
        assert steps["file readable"] == {"step": "file readable", "records": 1, "errors": []}
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(base)
