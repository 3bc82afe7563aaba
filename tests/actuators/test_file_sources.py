"""`file:` sources on real files: the `file_roots` setting (symbolic links followed), the
mode of a copy (never more readable than its source), and the catalog entry of a copy that
cannot fit or stops short (never a `Downloading` that nothing is doing)."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hive.actuators.provision import provision_file
from hive.errors import InsufficientSpace, PermanentError
from hive.model.actions import ProvisionModel
from hive.model.observed import ArtifactStatus, ModelMetadata
from hive.model.provisioning import METADATA, MODEL_FILE, Cancelled, ProvisionOutcome
from hive.observers.catalog import ModelCatalog
from hive.settings import Settings
from tests.disk import padded

WHEN = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def provision(
    catalog: ModelCatalog,
    source: Path,
    *,
    roots: tuple[Path, ...] = (),
    cancel: threading.Event | None = None,
) -> ProvisionOutcome:
    action = ProvisionModel(
        name="tiny", reason="test", source=f"file:{source}", resolved_source=str(source)
    )
    return provision_file(
        action,
        catalog=catalog,
        now=WHEN,
        cancel=cancel or threading.Event(),
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


@pytest.fixture
def small_disk_size() -> str:
    return "8m"


@pytest.fixture
def small_home(small_disk: Path) -> Path:
    """A home on a real 8 MiB filesystem of its own."""
    return small_disk / "home"


def test_a_copy_that_cannot_fit_is_refused_before_anything_is_written(
    tmp_path: Path, tiny_model: Path, small_home: Path
) -> None:
    """Known in advance (another filesystem): no byte copied and no catalog entry, so
    `hive get models` never shows a `Downloading` that nothing is doing."""
    source = padded(tiny_model, tmp_path / "big.gguf", 30_000_000)
    catalog = ModelCatalog(small_home)
    with pytest.raises(InsufficientSpace) as refused:
        provision(catalog, source)
    assert "30.0 MB to copy" in refused.value.message
    assert not (catalog.directory("tiny") / METADATA).exists()
    observed = catalog.observe("tiny")
    assert observed is None or observed.metadata is None


@pytest.mark.parametrize("elsewhere", [False, True], ids=["hardlink", "copy"])
def test_a_provisioning_that_stops_short_leaves_its_entry_failed(
    tmp_path: Path, tiny_model: Path, request: pytest.FixtureRequest, elsewhere: bool
) -> None:
    """Any failure, not only a permanent one (here a cancellation: the record changed)."""
    source = request.getfixturevalue("tiny_model_elsewhere") if elsewhere else tiny_model
    catalog = ModelCatalog(tmp_path / "home")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        provision(catalog, source, cancel=cancel)
    metadata = ModelMetadata.model_validate_json(
        (catalog.directory("tiny") / METADATA).read_bytes()
    )
    assert metadata.status == ArtifactStatus.FAILED
    assert metadata.error is not None and "the record changed" in metadata.error
    assert not list(catalog.directory("tiny").glob("*.partial"))
