"""A worker's log rotated on a full disk (a real small tmpfs): the copy that rotation
makes fails for want of space, and nothing is lost or left half-copied."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hive.actuators.workers import rotate_log
from hive.errors import is_no_space
from tests.conftest import fill


def test_rotation_on_a_full_disk_keeps_the_log_and_leaves_no_half_copy(
    small_disk: Path,
) -> None:
    log = small_disk / "w.log"
    content = b"a line of the worker's log\n" * 50_000  # 1.35 MB, then the disk is filled
    log.write_bytes(content)
    filler = fill(small_disk)
    with pytest.raises(OSError, match="No space left") as info:
        rotate_log(log, max_bytes=4096, backups=3)
    assert info.value.errno == errno.ENOSPC and is_no_space(info.value)
    assert log.read_bytes() == content  # not truncated
    assert not log.with_name("w.log.1").exists()  # no half copy holding the space

    filler.unlink()
    assert rotate_log(log, max_bytes=4096, backups=3)
    assert log.with_name("w.log.1").read_bytes() == content
