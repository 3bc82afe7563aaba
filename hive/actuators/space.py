"""Free space under hive's home: the check before a model's bytes are written, and the one
mapping of a write that found no room (ENOSPC, EDQUOT, EFBIG) to `InsufficientSpace`,
saying what was needed, what is free, and where (the path and its filesystem)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from hive.errors import InsufficientSpace
from hive.model.actions import Action, ProvisionModel
from hive.model.observed import ObservedModel
from hive.model.text import show_url
from hive.model.units import megabytes

#: Room left free beyond a model's bytes (at most a tenth of the disk): a full disk harms
#: everything else on the machine.
FREE_SPACE_MARGIN = 256 * 1024 * 1024
#: What a write of hive's own records (metadata.json, a sidecar, a state record) needs.
RECORDS = "a few KB for hive's records"
KEPT = "hive tries again with back-off, and goes on once space is freed"


def existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a model's directory may not yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def same_filesystem(source: os.stat_result, directory: Path) -> bool:
    """Whether a file (its stat) is on the filesystem of a model's `directory` (which may
    not exist yet): then it is hard-linked, else copied."""
    return source.st_dev == os.stat(existing(directory)).st_dev


def filesystem(path: Path) -> Path:
    """The mount point of the filesystem that holds `path`."""
    path = existing(path.absolute())
    try:
        dev = path.stat().st_dev
        while path != path.parent and path.parent.stat().st_dev == dev:
            path = path.parent
    except OSError:
        pass
    return path


def _where(path: Path) -> str:
    return f"{show_url(path)} (filesystem {show_url(filesystem(path))})"


def free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(existing(path)).free
    except OSError:
        return 0


def ensure_space(directory: Path, *, needed: int, doing: str, kept: str) -> None:
    """Raise InsufficientSpace unless `needed` bytes and the margin fit in `directory`'s
    filesystem; `doing` says what the bytes are for ("still to download"), `kept` what
    becomes of what is there and when it goes on."""
    usage = shutil.disk_usage(existing(directory))
    margin = min(FREE_SPACE_MARGIN, usage.total // 10)
    if usage.free < needed + margin:
        raise InsufficientSpace(
            f"not enough free space in {_where(directory)}: {megabytes(needed)} {doing} + "
            f"{megabytes(margin)} margin, {megabytes(usage.free)} free; {kept}"
        )


def no_space(exc: OSError, *, where: Path, needed: str, kept: str = KEPT) -> InsufficientSpace:
    """A write under `where` that failed for want of room, as the condition it is.
    `needed` says how much was still needed ("12.0 MB still to download")."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EFBIG:
        why += " (a file-size limit: see `ulimit -f`)"
    return InsufficientSpace(
        f"no room to write in {_where(where)}: {why} ({code}); {needed}, "
        f"{megabytes(free_bytes(where))} free; {kept}"
    )


def provisioning_no_space(
    exc: OSError, *, action: Action | None, directory: Path, observed: ObservedModel | None
) -> InsufficientSpace:
    """The one place where a model's action that found the disk full becomes
    InsufficientSpace (the reconciler calls it for any OSError it maps): what the action
    still needed, as far as the disk tells."""
    if not isinstance(action, ProvisionModel):
        return no_space(exc, where=directory, needed=f"{RECORDS} needed")
    if action.source.startswith("file:"):
        try:
            source = os.stat(action.resolved_source)
            same = same_filesystem(source, directory)
        except OSError:
            return no_space(exc, where=directory, needed=f"{RECORDS} needed")
        if same:  # hard-linked: no bytes copied, only names and records
            return no_space(exc, where=directory, needed=f"{RECORDS} needed")
        return no_space(
            exc,
            where=directory,
            needed=f"{megabytes(source.st_size)} to copy",
            kept=f"nothing of the copy is kept; {KEPT}",
        )
    download = observed.download if observed is not None else None
    if download is None:  # nothing received yet: it was writing its records
        return no_space(exc, where=directory, needed=f"{RECORDS} needed to begin")
    on_disk, total = download.bytes_on_disk, download.total_bytes
    needed = (
        f"{megabytes(max(total - on_disk, 0))} still to download"
        if total is not None
        else "how much is still to download is unknown (the server did not say the size)"
    )
    return no_space(
        exc,
        where=directory,
        needed=needed,
        kept=f"the partial download ({megabytes(on_disk)}) is kept and resumes when space is freed",
    )
