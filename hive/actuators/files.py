"""Small file primitives the actuators share: atomic writes and durable renames."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hive.model.provisioning import is_partial_name


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of `data` (`os.write` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old content or the new, never half.
    `durable=False` skips the fsyncs, for records that need not outlive a reboot."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def clear_partials(directory: Path) -> None:
    """Remove every partial download (and its sidecar) in a model's directory."""
    for entry in directory.iterdir():
        if is_partial_name(entry.name):
            entry.unlink(missing_ok=True)


def remove_stale_model_files(directory: Path, *, keep: set[str]) -> None:
    """After a model is published, remove GGUF files of its earlier versions (a split model
    replaced by one file, or the other way round). Called only once the new metadata.json
    is written, so a crash leaves at worst extra files, never missing ones."""
    for entry in directory.iterdir():
        if entry.name.endswith(".gguf") and entry.name not in keep:
            entry.unlink(missing_ok=True)
