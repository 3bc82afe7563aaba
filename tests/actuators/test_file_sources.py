"""`file:` sources on real files: the `file_roots` setting (symbolic links followed), and
the mode of a copy (never more readable than its source)."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hive.actuators.provision import ProvisionOutcome, provision_file
from hive.errors import PermanentError
from hive.model.actions import ProvisionModel
from hive.observers.catalog import MODEL_FILE, ModelCatalog
from hive.settings import Settings

WHEN = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def provision(
    catalog: ModelCatalog, source: Path, *, roots: tuple[Path, ...] = ()
) -> ProvisionOutcome:
    action = ProvisionModel(
        name="tiny", reason="test", source=f"file:{source}", resolved_source=str(source)
    )
    return provision_file(
        action,
        catalog=catalog,
        now=WHEN,
        cancel=threading.Event(),
        progress=lambda _: None,
        roots=roots,
    )


@pytest.fixture
def roots(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """An allowed directory with a model in it, and another one outside it."""
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    shutil.copyfile(tiny_model, allowed / "ok.gguf")
    shutil.copyfile(tiny_model, outside / "no.gguf")
    return allowed, outside


def test_a_source_under_a_file_root_is_provisioned(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    allowed, _ = roots
    catalog = ModelCatalog(tmp_path / "home")
    provision(catalog, allowed / "ok.gguf", roots=(tmp_path / "elsewhere", allowed))
    assert (catalog.directory("tiny") / MODEL_FILE).exists()


@pytest.mark.parametrize("via", ["path", "symlink", "dotdot"])
def test_a_source_outside_every_file_root_is_refused_naming_the_roots(
    tmp_path: Path, roots: tuple[Path, Path], via: str
) -> None:
    allowed, outside = roots
    if via == "path":
        source = outside / "no.gguf"
    elif via == "symlink":  # a link inside the root to a file outside it
        source = allowed / "link.gguf"
        source.symlink_to(outside / "no.gguf")
    else:
        source = allowed / ".." / "outside" / "no.gguf"
    catalog = ModelCatalog(tmp_path / "home")
    with pytest.raises(PermanentError) as info:
        provision(catalog, source, roots=(allowed,))
    message = info.value.message
    assert str(outside / "no.gguf") in message  # where it really is
    assert f"file_roots: {allowed}" in message
    assert "HIVE_FILE_ROOTS" in message  # what to do
    assert not (catalog.directory("tiny") / MODEL_FILE).exists()


def test_without_file_roots_a_source_may_be_anywhere(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    _, outside = roots
    catalog = ModelCatalog(tmp_path / "home")
    provision(catalog, outside / "no.gguf")
    assert (catalog.directory("tiny") / MODEL_FILE).exists()


def test_file_roots_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HIVE_FILE_ROOTS", f"/srv/models{os.pathsep}relative/dir")
    settings = Settings.from_env(home=tmp_path)
    assert settings.file_roots == (Path("/srv/models"), Path("relative/dir").absolute())
    monkeypatch.delenv("HIVE_FILE_ROOTS")
    assert Settings.from_env(home=tmp_path).file_roots == ()


@pytest.mark.parametrize(
    ("source_mode", "copy_mode"),
    [
        (0o600, 0o600),  # private stays private
        (0o640, 0o640),
        (0o400, 0o400),
        (0o644, 0o644),
        (0o666, 0o644),  # never group- or other-writable
        (0o755, 0o644),  # never executable
    ],
)
def test_a_copy_is_never_more_permissive_than_its_source(
    tmp_path: Path, tiny_model_elsewhere: Path, source_mode: int, copy_mode: int
) -> None:
    tiny_model_elsewhere.chmod(source_mode)
    catalog = ModelCatalog(tmp_path / "home")
    old = os.umask(0o022)  # hive's usual umask, which would make 0644 of any source
    try:
        assert provision(catalog, tiny_model_elsewhere).method == "copy"
    finally:
        os.umask(old)
    model = catalog.directory("tiny") / MODEL_FILE
    assert stat.S_IMODE(model.stat().st_mode) == copy_mode


def test_a_hard_link_is_the_source_itself_with_its_mode(tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "private.gguf"
    shutil.copyfile(tiny_model, source)
    source.chmod(0o600)
    catalog = ModelCatalog(tmp_path / "home")
    assert provision(catalog, source).method == "hardlink"
    model = catalog.directory("tiny") / MODEL_FILE
    assert model.stat().st_ino == source.stat().st_ino
    assert stat.S_IMODE(model.stat().st_mode) == 0o600
