"""The worker catalog on disk: built-ins plus `<home>/workers/<id>/metadata.json`; a bad
entry is reported with its path and skipped, and an edit is picked up by refresh()."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hive.observers.runtimes import RuntimeCatalog
from tests.conftest import install_scripted_runtime, write_atomic


@pytest.fixture(autouse=True)
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with no llama-server on it, so the built-ins do not depend on this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def write_entry(home: Path, directory: str, content: str | bytes | dict[str, Any]) -> Path:
    path = home / "workers" / directory / "metadata.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        path.write_text(json.dumps(content, indent=2))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def entry(runtime_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": runtime_id, "argv": ["{binary}", "--port", "{port}"], **fields}


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- built-ins -------------------------------------------------------------------------------
def test_the_built_ins_say_whether_they_can_run_here(tmp_path: Path) -> None:
    catalog = RuntimeCatalog(tmp_path / "home")
    assert [e.id for e in catalog.entries()] == ["llama-cpp", "llama-server"]
    assert catalog.errors == []

    llama_cpp = catalog.get("llama-cpp")
    assert llama_cpp is not None
    assert llama_cpp.origin == "built-in"
    assert llama_cpp.available, "xllamacpp is installed in this environment"
    assert llama_cpp.unavailable_reason is None
    assert llama_cpp.argv[:3] == ("{python}", "-m", "hive.launchers.llama_cpp")

    llama_server = catalog.get("llama-server")
    assert llama_server is not None
    assert not llama_server.available
    assert llama_server.unavailable_reason == "no llama-server on PATH"
    assert llama_server.path is None


def test_llama_server_on_path_is_available_with_its_binary(tmp_path: Path, bare_path: Path) -> None:
    binary = executable(bare_path / "llama-server")
    llama_server = RuntimeCatalog(tmp_path / "home").get("llama-server")
    assert llama_server is not None
    assert llama_server.available
    assert llama_server.path == binary
    assert llama_server.argv[0] == "{binary}"


def test_an_unknown_id_is_none(tmp_path: Path) -> None:
    assert RuntimeCatalog(tmp_path / "home").get("nope") is None


# -- entries on disk -------------------------------------------------------------------------
def test_a_valid_entry_on_disk_is_listed_after_the_built_ins(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = install_scripted_runtime(home, grace=3.0)
    catalog = RuntimeCatalog(home)
    assert [e.id for e in catalog.entries()] == ["llama-cpp", "llama-server", "scripted"]
    scripted = catalog.get("scripted")
    assert scripted is not None
    assert scripted.origin == str(path)
    assert scripted.available
    assert scripted.grace_seconds == 3.0
    assert set(scripted.args) == {"mode", "delay", "child"}
    assert catalog.errors == []


def test_a_relative_binary_resolves_in_the_entry_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_entry(home, "mine", entry("mine", path="bin/server"))
    binary = executable(home / "workers" / "mine" / "bin" / "server")
    mine = RuntimeCatalog(home).get("mine")
    assert mine is not None
    assert mine.available
    assert mine.path == binary


def test_an_entry_whose_binary_is_missing_is_listed_but_unavailable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_entry(home, "gone", entry("gone", path="bin/server"))
    catalog = RuntimeCatalog(home)
    gone = catalog.get("gone")
    assert gone is not None
    assert not gone.available
    expected = home / "workers" / "gone" / "bin" / "server"
    assert gone.path == expected
    assert gone.unavailable_reason == f"{expected} is missing or not executable"
    assert catalog.errors == []


def test_an_entry_whose_binary_is_not_executable_is_unavailable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    binary = tmp_path / "server"
    binary.write_text("not a program")
    write_entry(home, "plain", entry("plain", path=str(binary)))
    plain = RuntimeCatalog(home).get("plain")
    assert plain is not None
    assert not plain.available
    assert plain.unavailable_reason == f"{binary} is missing or not executable"


def test_available_in_the_file_does_not_override_the_check(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_entry(home, "claims", entry("claims", available=False, unavailable_reason="x"))
    claims = RuntimeCatalog(home).get("claims")
    assert claims is not None
    assert claims.available
    assert claims.origin == str(home / "workers" / "claims" / "metadata.json")


@pytest.mark.parametrize(
    ("directory", "content", "message"),
    [
        (
            "broken",
            '{\n  "id": "broken",\n  "argv": [oops]\n}',
            "line 3: not JSON (Expecting value)",
        ),
        ("list", "[1, 2]", "must be a JSON object"),
        ("string", '"llama"', "must be a JSON object"),
        ("binary", b"\xff\xfe\x00garbage", "cannot read it: 'utf-8' codec can't decode"),
        ("other", entry("another"), "id 'another' differs from its directory 'other'"),
        ("llama-cpp", entry("llama-cpp"), "id 'llama-cpp' is a built-in runtime; choose another"),
        (
            "unknown",
            entry("unknown", argv=["{binary}", "--x", "{nope}"]),
            "placeholder {nope} in '{nope}' is neither hive's",
        ),
        (
            "shadow",
            entry("shadow", args={"port": {"type": "int", "default": 1}}),
            "args ['port'] shadow hive's own placeholders",
        ),
        (
            "baddefault",
            entry("baddefault", args={"n": {"type": "int", "default": 5, "max": 1}}),
            "args.n: Value error, default 5 is above the maximum 1",
        ),
        ("noargv", {"id": "noargv"}, "argv: Field required"),
        ("Upper", entry("Upper"), "id: String should match pattern"),
    ],
)
def test_a_bad_entry_is_reported_with_its_path_and_skipped(
    tmp_path: Path, directory: str, content: str | bytes | dict[str, Any], message: str
) -> None:
    home = tmp_path / "home"
    install_scripted_runtime(home)
    bad = write_entry(home, directory, content)
    catalog = RuntimeCatalog(home)
    entries = catalog.entries()  # never raises
    assert [e.id for e in entries] == ["llama-cpp", "llama-server", "scripted"]
    assert len(catalog.errors) == 1
    error = catalog.errors[0]
    assert error.path == bad
    assert message in error.message
    llama_cpp = catalog.get("llama-cpp")
    assert llama_cpp is not None
    assert llama_cpp.origin == "built-in"


def test_every_bad_entry_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = write_entry(home, "a", "{")
    second = write_entry(home, "b", "[]")
    catalog = RuntimeCatalog(home)
    catalog.refresh()
    assert [(e.path, e.message) for e in catalog.errors] == [
        (first, "line 1: not JSON (Expecting property name enclosed in double quotes)"),
        (second, "must be a JSON object"),
    ]


def test_what_is_not_an_entry_directory_is_ignored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "workers" / "empty").mkdir(parents=True)
    (home / "workers" / "notes").mkdir()
    (home / "workers" / "notes" / "README.md").write_text("# my workers\n")
    (home / "workers" / "stray-file.json").write_text("{}")
    catalog = RuntimeCatalog(home)
    assert [e.id for e in catalog.entries()] == ["llama-cpp", "llama-server"]
    assert catalog.errors == []


def test_a_home_without_a_workers_directory_has_the_built_ins(tmp_path: Path) -> None:
    catalog = RuntimeCatalog(tmp_path / "nowhere")
    assert catalog.refresh()  # the first look always reads
    assert [e.id for e in catalog.entries()] == ["llama-cpp", "llama-server"]
    assert catalog.errors == []


# -- refresh ----------------------------------------------------------------------------------
def test_an_edit_is_picked_up_and_nothing_is_read_while_nothing_changed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = write_entry(home, "mine", entry("mine", version="1"))
    catalog = RuntimeCatalog(home)
    assert catalog.refresh()
    assert not catalog.refresh()
    mine = catalog.get("mine")
    assert mine is not None
    assert mine.version == "1"

    write_atomic(path, json.dumps(entry("mine", version="2.0")))  # another size, renamed over
    assert catalog.refresh()
    mine = catalog.get("mine")
    assert mine is not None
    assert mine.version == "2.0"

    with path.open("r+") as fh:  # the same size, rewritten in place: the mtime moves
        text = fh.read()
        fh.seek(0)
        fh.write(text.replace('"2.0"', '"3.0"'))
    assert len(path.read_text()) == len(text)
    assert catalog.refresh()
    mine = catalog.get("mine")
    assert mine is not None
    assert mine.version == "3.0"
    assert not catalog.refresh()


def test_a_fixed_entry_leaves_the_errors_and_a_removed_one_leaves_the_list(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    path = write_entry(home, "mine", "{not json")
    catalog = RuntimeCatalog(home)
    assert catalog.get("mine") is None
    assert [e.path for e in catalog.errors] == [path]

    write_atomic(path, json.dumps(entry("mine")))
    assert catalog.get("mine") is not None
    assert catalog.errors == []

    path.unlink()
    assert catalog.get("mine") is None
    assert [e.id for e in catalog.entries()] == ["llama-cpp", "llama-server"]


def test_a_new_entry_directory_is_picked_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    catalog = RuntimeCatalog(home)
    assert catalog.get("late") is None
    write_entry(home, "late", entry("late"))
    assert catalog.get("late") is not None


def test_an_entry_replaced_with_the_same_size_and_mtime_is_picked_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = write_entry(home, "mine", entry("mine", version="1"))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    catalog = RuntimeCatalog(home)
    mine = catalog.get("mine")
    assert mine is not None
    assert mine.version == "1"

    write_atomic(path, json.dumps(entry("mine", version="2"), indent=2))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    mine = catalog.get("mine")
    assert mine is not None
    assert mine.version == "2"
