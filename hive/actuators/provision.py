"""Provisioning actuator: brings a model's bytes into the catalog and deletes them.

`file:` sources are hard-linked when on the same filesystem, else copied in a stream
(free space checked first, the copy never more readable than the source); either way
hashed with SHA-256, verified, checked to be GGUF, and published with an atomic rename.
Network sources arrive with the downloader. Runs in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import threading
from asyncio import CancelledError
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from hive.actuators.files import (
    clear_partials,
    remove_stale_model_files,
    write_all,
    write_atomic,
)
from hive.actuators.space import ensure_space, same_filesystem
from hive.errors import (
    ChecksumMismatch,
    GgufError,
    HiveError,
    PermanentError,
    SourceNotFound,
)
from hive.model.actions import ProvisionModel
from hive.model.gguf import GgufFacts
from hive.model.observed import ArtifactStatus, ModelFile, ModelMetadata, PartialState
from hive.model.provisioning import (
    METADATA,
    MODEL_FILE,
    PARTIAL_SUFFIX,
    PRIVATE_FILE_MODE,
    SIDECAR_SUFFIX,
    TRASH_PREFIX,
    Cancelled,
    Progress,
    ProgressFn,
    ProvisionOutcome,
    partial_name,
    trash_name,
)
from hive.model.text import clip, show_text, show_url
from hive.observers.catalog import ModelCatalog, boot_id
from hive.observers.gguf import read_gguf_facts

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


def _sha256_of(path: Path, *, cancel: threading.Event, progress: ProgressFn, total: int) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if cancel.is_set():
                raise Cancelled
            digest.update(chunk)
            done += len(chunk)
            progress(Progress(done=done, total=total))
    return digest.hexdigest()


def copy_mode(source_mode: int) -> int:
    """The mode of a copy: the source's read and owner-write bits, never more (no group or
    other write, no execute), and always readable by its owner, hive, whose workers read it
    (hive could read the source, so that lets no one new read the bytes)."""
    return (stat.S_IMODE(source_mode) & 0o644) | 0o400


def _hard_link(src: Path, partial: Path) -> bool:
    """Link `src` as `partial`; False where the filesystem cannot (then it is copied)."""
    try:
        os.link(src, partial)
    except OSError as exc:
        if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}:
            raise
        return False
    return True


def _ensure_room_to_copy(directory: Path, *, src: Path, size: int) -> None:
    ensure_space(
        directory,
        needed=size,
        doing=f"to copy from {show_url(src)}",
        kept="nothing is copied until it fits; hive tries again when space is freed",
    )


def _copy_hashing(
    src: Path, dst: Path, *, mode: int, cancel: threading.Event, progress: ProgressFn, total: int
) -> str:
    digest = hashlib.sha256()
    done = 0
    with src.open("rb") as inp:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # exactly: the umask may only have taken bits away
            while chunk := inp.read(CHUNK):
                if cancel.is_set():
                    raise Cancelled
                digest.update(chunk)
                write_all(fd, chunk)
                done += len(chunk)
                progress(Progress(done=done, total=total))
        finally:
            os.close(fd)
    return digest.hexdigest()  # fsynced after it is published (`sync_model`)


def write_metadata(directory: Path, metadata: ModelMetadata, *, durable: bool = True) -> None:
    """metadata.json, mode 0600 (its URLs are redacted, but see PRIVATE_FILE_MODE)."""
    data = metadata.model_dump_json(indent=2).encode()
    write_atomic(directory / METADATA, data, durable=durable, mode=PRIVATE_FILE_MODE)


#: Read-modify-writes of a metadata.json (the sync's `synced`, a worker's `last_accessed`)
#: come from the loop and from threads: one at a time, so that neither loses the other's.
_METADATA_UPDATE = threading.Lock()


def update_metadata(directory: Path, *, durable: bool, **changes: object) -> ModelMetadata | None:
    """Change some fields of the metadata.json on disk as it is now; None if it is gone."""
    with _METADATA_UPDATE:
        try:
            current = ModelMetadata.model_validate_json((directory / METADATA).read_bytes())
        except FileNotFoundError:
            return None
        updated = current.model_copy(update=changes)
        write_metadata(directory, updated, durable=durable)
        return updated


def publish_metadata(directory: Path, metadata: ModelMetadata) -> None:
    """Write the entry of a model whose bytes were just verified and renamed into place:
    not fsynced yet (`sync_model` does that next, off the model's way to Available)."""
    write_metadata(directory, metadata, durable=False)


def begin_metadata(
    action: ProvisionModel,
    *,
    directory: Path,
    path: Path,
    size: int,
    now: datetime,
    url: str | None = None,
    revision: str | None = None,
) -> ModelMetadata:
    """The catalog entry while a model's bytes arrive (`Downloading`), written to disk."""
    base = ModelMetadata(
        id=action.name,
        name=action.name,
        path=path,
        size=size,
        status=ArtifactStatus.DOWNLOADING,
        added_at=now,
        source=action.source,
        resolved_source=action.resolved_source,
        url=url,
        revision=revision,
    )
    write_metadata(directory, base)
    return base


def why_stopped(exc: BaseException) -> str:
    """What a catalog entry records of why its provisioning stopped (bounded, redacted)."""
    if isinstance(exc, Cancelled | CancelledError):
        return "stopped: the record changed or was removed; the partial download is kept"
    if isinstance(exc, HiveError):
        return exc.message
    return f"{type(exc).__name__}: {show_text(str(exc))}"


def mark_stopped(directory: Path, why: str) -> None:
    """After provisioning stopped short (failure, cancellation), the catalog entry says so:
    `Failed` with the reason, never a `Downloading` that nothing is doing. Best effort: a
    full disk refusing this note must not hide why provisioning stopped."""
    try:
        metadata = ModelMetadata.model_validate_json((directory / METADATA).read_bytes())
    except (OSError, ValidationError, ValueError):
        return
    if metadata.status == ArtifactStatus.DOWNLOADING:
        with contextlib.suppress(OSError):
            write_metadata(
                directory,
                metadata.model_copy(update={"status": ArtifactStatus.FAILED, "error": why}),
            )


def check_file_root(action: ProvisionModel, real: Path, roots: Sequence[Path]) -> None:
    """Refuse a `file:` source that resolves (symbolic links followed) outside every one of
    the `file_roots` setting's directories; no roots: anywhere is allowed."""
    if not roots:
        return
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return
    shown = ", ".join(clip(str(r), 100) for r in roots)
    raise PermanentError(
        f"{show_url(action.source)}: {show_url(real)} is outside the directories file: sources "
        f"may come from (file_roots: {clip(shown)}); move the file under one of them, or add "
        "its directory to HIVE_FILE_ROOTS"
    )


def finish_metadata(
    base: ModelMetadata, *, sha: str, verified: bool, facts: GgufFacts
) -> ModelMetadata:
    """The catalog entry of a model whose bytes are whole, hashed and parsed (in the page
    cache: `synced` once `sync_model` has put them on disk)."""
    return base.model_copy(
        update={
            "status": ArtifactStatus.AVAILABLE,
            "sha256": sha,
            "verified": verified,
            "synced": False,
            "boot_id": boot_id(),
            "architecture": facts.architecture,
            "quantization": facts.quantization,
            "file_type": facts.file_type,
            "dominant_type": facts.dominant_type,
            "parameter_count": facts.parameter_count_label,
            "parameters": facts.parameter_count,
            "context_length": facts.context_length,
            "embedding_length": facts.embedding_length,
            "block_count": facts.block_count,
            "head_count": facts.head_count,
            "head_count_kv": facts.head_count_kv,
            "gguf_version": facts.gguf_version,
            "tensor_count": facts.tensor_count,
            "kv_count": facts.kv_count,
        }
    )


def provision_file(
    action: ProvisionModel,
    *,
    catalog: ModelCatalog,
    now: datetime,
    cancel: threading.Event,
    progress: ProgressFn,
    roots: Sequence[Path] = (),
) -> ProvisionOutcome:
    """Bring a `file:` source into `<home>/models/<name>/model.gguf`; blocking. With `roots`
    (the `file_roots` setting), only a source that resolves under one of them."""
    src = Path(action.resolved_source)
    try:
        real = Path(os.path.realpath(src, strict=True))
        check_file_root(action, real, roots)
        src = real  # the file checked is the file read, whatever its links do meanwhile
        st = src.stat()
    except FileNotFoundError:
        raise SourceNotFound(
            f"{show_url(action.source)}: {show_url(src)} does not exist (relative file: paths "
            "resolve against the manifest's own directory)"
        ) from None
    except OSError as exc:
        raise SourceNotFound(
            f"{show_url(action.source)}: cannot read {show_url(src)}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceNotFound(f"{show_url(action.source)}: {show_url(src)} is not a regular file")

    directory = catalog.directory(action.name)
    copy = not same_filesystem(st, directory)
    if copy:  # known before anything is written: a copy that cannot fit leaves no trace
        _ensure_room_to_copy(directory, src=src, size=st.st_size)
    directory.mkdir(parents=True, exist_ok=True)
    clear_partials(directory)
    partial = directory / partial_name(MODEL_FILE)
    base = begin_metadata(
        action, directory=directory, path=directory / MODEL_FILE, size=st.st_size, now=now
    )
    try:
        if not copy and not _hard_link(src, partial):
            copy = True  # a filesystem that refuses hard links: the check comes now
            _ensure_room_to_copy(directory, src=src, size=st.st_size)
        method: Literal["copy", "hardlink"] = "copy" if copy else "hardlink"
        if not copy:
            sha = _sha256_of(partial, cancel=cancel, progress=progress, total=st.st_size)
        else:
            sha = _copy_hashing(
                src,
                partial,
                mode=copy_mode(st.st_mode),
                cancel=cancel,
                progress=progress,
                total=st.st_size,
            )
        if action.sha256 is not None and sha != action.sha256:
            raise ChecksumMismatch(
                f"sha256 of {show_url(src)} is {sha}, but spec.sha256 is {action.sha256}; "
                "fix spec.sha256 or the file"
            )
        try:
            facts = read_gguf_facts(partial)
        except GgufError as exc:
            raise GgufError(
                f"{show_url(action.source)} is not a usable GGUF file: {clip(exc.message)}"
            ) from None
        os.replace(partial, directory / MODEL_FILE)
    except BaseException as exc:
        # The partial goes first: on a full disk, that frees the room the note needs.
        partial.unlink(missing_ok=True)
        mark_stopped(directory, why_stopped(exc))
        raise
    metadata = finish_metadata(base, sha=sha, verified=action.sha256 is not None, facts=facts)
    if method == "hardlink":
        # No new bytes, only names: made durable at once, as cheaply as a sync would (the
        # metadata's durable write fsyncs the directory), and no SyncModel follows.
        metadata = metadata.model_copy(update={"synced": True})
        write_metadata(directory, metadata)
    else:
        publish_metadata(directory, metadata)
    remove_stale_model_files(directory, keep={MODEL_FILE})
    return ProvisionOutcome(metadata=metadata, method=method)


def sync_model(
    name: str, *, catalog: ModelCatalog, verify: bool, cancel: threading.Event
) -> str | None:
    """Put a published model's bytes on disk: fsync its files and directory, then record
    `synced` durably. With `verify`, hash each file first; if one is not what was verified
    (an earlier boot published it and crashed before the bytes reached the disk), delete
    the model, so that it is provisioned again, and return why. None when synced."""
    directory = catalog.directory(name)
    metadata = ModelMetadata.model_validate_json((directory / METADATA).read_bytes())
    files = metadata.files or [
        ModelFile(name=metadata.path.name, size=metadata.size, sha256=metadata.sha256)
    ]
    for file in files:
        path = directory / file.name
        if verify:
            sha = _sha256_of(path, cancel=cancel, progress=lambda _: None, total=file.size)
            if sha != file.sha256:
                delete_model(name, catalog=catalog)
                return (
                    f"{show_url(path)} hashes to {sha}, not {file.sha256} as when it was published "
                    "(its bytes never reached the disk before the machine restarted); the "
                    "model was removed and is provisioned again"
                )
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    # The durable write ends with an fsync of the directory, which makes the files'
    # renames durable too.
    update_metadata(directory, durable=True, synced=True)
    return None


def delete_model(name: str, *, catalog: ModelCatalog) -> bool:
    """Remove a model's directory: renamed away atomically, then removed. False if absent."""
    directory = catalog.directory(name)
    if not directory.exists():
        return False
    trash = catalog.root / trash_name(name, secrets.token_hex(4))
    os.replace(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def cleanup_partial(name: str, *, catalog: ModelCatalog) -> None:
    """Remove leftovers of an interrupted provisioning; the directory too if nothing else is
    in it but metadata that never became Available."""
    directory = catalog.directory(name)
    if not directory.exists():
        return
    clear_partials(directory)
    if not (directory / MODEL_FILE).exists():
        delete_model(name, catalog=catalog)


def purge_trash(catalog: ModelCatalog) -> None:
    """Finish deletions that a crash interrupted."""
    if not catalog.root.exists():
        return
    for entry in catalog.root.iterdir():
        if entry.name.startswith(TRASH_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


#: The fields of a record that hold a URL or an error (which may quote one).
_REDACTED_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    ModelMetadata: ("source", "resolved_source", "url", "error"),
    PartialState: ("url", "last_error"),
}


def secure_records(catalog: ModelCatalog) -> int:
    """Bring the records an older hive wrote up to this one's rules, once, at start: every
    metadata.json and sidecar readable by hive's user only (PRIVATE_FILE_MODE), its URLs
    and errors redacted. An older hive wrote them 0644 with a source's URL as written,
    credentials included, and nothing else rewrites them until their model changes. A
    record that cannot be read or written is left as it is (the catalog says why, a full
    disk lets the next start try again). Returns how many were changed."""
    changed = 0
    for name in catalog.names():
        directory = catalog.directory(name)
        try:
            entries = [e.name for e in os.scandir(directory)]
        except OSError:
            continue
        for entry in entries:
            if entry == METADATA:
                kind: type[BaseModel] = ModelMetadata
            elif entry.endswith(PARTIAL_SUFFIX + SIDECAR_SUFFIX):
                kind = PartialState
            else:
                continue
            try:
                changed += _secure_record(directory / entry, kind)
            except OSError as exc:
                log.warning("cannot secure %s: %s", show_url(directory / entry), exc.strerror)
    if changed:
        log.info(
            "%d record(s) under %s written by an older hive now mode 0600, URLs redacted",
            changed,
            show_url(catalog.root),
        )
    return changed


def _secure_record(path: Path, kind: type[BaseModel]) -> bool:
    """Narrow one record's mode and redact its URLs; whether anything changed."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return False
    wide = stat.S_IMODE(st.st_mode) & ~PRIVATE_FILE_MODE
    if wide:  # first, so that it holds even where the rewrite finds no room
        os.chmod(path, PRIVATE_FILE_MODE)
    with _METADATA_UPDATE:
        raw = path.read_bytes()
        try:
            stored = json.loads(raw)
            record = kind.model_validate(stored)
        except (ValidationError, ValueError):
            return bool(wide)
        if not isinstance(stored, dict) or all(
            stored.get(field) == getattr(record, field) for field in _REDACTED_FIELDS[kind]
        ):
            return bool(wide)
        if isinstance(record, ModelMetadata):
            write_metadata(path.parent, record)
        else:  # a sidecar, as the downloader writes it
            write_atomic(path, record.model_dump_json().encode(), mode=PRIVATE_FILE_MODE)
    return True
