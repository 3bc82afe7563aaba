"""Real small filesystems for the full-disk tests: a tmpfs mounted for one test, filled to
the last byte, and sparse GGUF files of a chosen size."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(where: Path, size: str) -> None:
    """Mount a tmpfs of `size` (as mount's `size=`, e.g. "20m") at `where`, or skip the test
    saying why it cannot (the reason shows in pytest's `-ra` summary)."""
    if os.geteuid() != 0:
        pytest.skip(
            f"a real {size} tmpfs needs root to mount (running as uid {os.geteuid()}); "
            "the RLIMIT_FSIZE tests still run"
        )
    where.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"mount refused a {size} tmpfs here ({mounted.stderr.strip() or mounted.returncode}); "
            "the RLIMIT_FSIZE tests still run"
        )


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


def grow(where: Path, size: str) -> None:
    """Give the tmpfs at `where` more room, as freeing space would."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with a file (removing it frees them again)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096):
            block = bytes(size)
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


def padded(tiny_model: Path, path: Path, size: int) -> Path:
    """A real GGUF of `size` bytes: the tiny model followed by zeros (sparse on disk)."""
    shutil.copy(tiny_model, path)
    with path.open("ab") as fh:
        fh.truncate(size)
    return path
