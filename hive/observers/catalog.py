"""The disk catalog observer: `<home>/models/<name>/{metadata.json, model.gguf}`.

rbee-compatible layout, named in `hive.model.provisioning`. A full pass costs three `stat`
calls per model: a directory is read again only when one of them changed.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from hive.model.ids import name_problem
from hive.model.observed import ModelMetadata, ObservedModel, PartialDownload, PartialState
from hive.model.provisioning import (
    METADATA,
    MODEL_FILE,
    PARTIAL_SUFFIX,
    SIDECAR_SUFFIX,
    is_partial_name,
    model_directory,
    models_root,
)
from hive.model.text import show_text, show_url
from hive.platform import boot_id as boot_id  # this boot, as every caller has read it here

Stamp = tuple[int | None, ...]


def _files_size(entries: dict[str, os.DirEntry[str]], metadata: ModelMetadata | None) -> int | None:
    """Bytes of the model's files on disk; None when one is missing or the wrong size
    (for a split model, every part must be there whole)."""
    names = [f.name for f in metadata.files] if metadata and metadata.files else [MODEL_FILE]
    expected = {f.name: f.size for f in metadata.files} if metadata and metadata.files else {}
    total = 0
    for name in names:
        entry = entries.get(name)
        if entry is None:
            return None
        try:
            size = entry.stat().st_size
        except FileNotFoundError:
            return None
        if name in expected and size != expected[name]:
            return None
        total += size
    return total


class ModelCatalog:
    """Reads the models directory; writing is the actuators' job.

    An observation is cached with a stamp of a few `stat` calls (the directory, its
    metadata.json, its model.gguf or split parts): while it holds, nothing is read again.
    """

    def __init__(self, home: Path) -> None:
        self.root = models_root(home)
        self._root = str(self.root)
        self._cache: dict[str, tuple[Stamp, ObservedModel]] = {}

    def directory(self, name: str) -> Path:
        return model_directory(self.root, name)

    def _stamp(self, name: str, files: tuple[str, ...] = ()) -> Stamp | None:
        """(mtime, inode) of the directory and (mtime, size, inode) of metadata.json,
        model.gguf and the parts of a split model."""
        base = f"{self._root}/{name}"
        try:
            st = os.stat(base)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        parts: list[int | None] = [st.st_mtime_ns, st.st_ino]
        for file in (METADATA, MODEL_FILE, *files):
            try:
                fst = os.stat(f"{base}/{file}")
                parts += (fst.st_mtime_ns, fst.st_size, fst.st_ino)
            except OSError:
                parts += (None, None, None)
        return tuple(parts)

    def observe(self, name: str) -> ObservedModel | None:
        self.directory(name)  # validates the name
        cached = self._cache.get(name)
        meta = cached[1].metadata if cached is not None else None
        parts = tuple(f.name for f in meta.files) if meta is not None else ()
        stamp = self._stamp(name, parts)
        if stamp is None:
            self._cache.pop(name, None)
            return None
        if cached is not None and cached[0] == stamp:
            seen = cached[1]
            if seen.partial:  # its bytes grow without touching the stamp: look again
                return seen.model_copy(update={"download": self._download(name)})
            return seen
        observed = self._read(name)
        if observed is None:
            self._cache.pop(name, None)
            return None
        meta = observed.metadata
        parts_now = tuple(f.name for f in meta.files) if meta is not None else ()
        if parts_now != parts:  # stamp what the cache will be checked against next time
            stamp = self._stamp(name, parts_now) or stamp
        self._cache[name] = (stamp, observed)
        return observed

    def _read(self, name: str) -> ObservedModel | None:
        directory = self.root / name
        try:
            entries = {e.name: e for e in os.scandir(directory)}
        except (FileNotFoundError, NotADirectoryError):
            return None
        metadata: ModelMetadata | None = None
        error: str | None = None
        if METADATA in entries:
            path = directory / METADATA
            try:
                metadata = ModelMetadata.model_validate_json(path.read_bytes())
            except (OSError, ValidationError, ValueError) as exc:
                error = f"{show_url(path)}: {show_text(str(exc).splitlines()[0])}"
        size = _files_size(entries, metadata)
        partial = any(is_partial_name(n) for n in entries)
        return ObservedModel(
            name=name,
            directory=directory,
            metadata=metadata,
            file_size=size,
            partial=partial,
            download=self._download(name) if partial else None,
            metadata_error=error,
        )

    def _download(self, name: str) -> PartialDownload | None:
        """The partial download of a model (all parts of a split one): bytes on disk and
        what the sidecars say."""
        directory = self.root / name
        try:
            partials = [e for e in os.scandir(directory) if e.name.endswith(PARTIAL_SUFFIX)]
            stats = [e.stat() for e in partials]
        except OSError:
            return None
        if not partials:
            return None
        states: list[PartialState] = []
        for entry in partials:
            try:
                sidecar = Path(entry.path + SIDECAR_SUFFIX).read_bytes()
                states.append(PartialState.model_validate_json(sidecar))
            except (OSError, ValidationError, ValueError):
                continue
        sizes = [s.size for s in states]
        return PartialDownload(
            bytes_on_disk=sum(st.st_size for st in stats),
            total_bytes=sum(s for s in sizes if s is not None)
            if None not in sizes and sizes
            else None,
            updated_at=datetime.fromtimestamp(max(st.st_mtime for st in stats), UTC),
            attempts=max((s.attempts for s in states), default=0),
            last_error=next((s.last_error for s in states if s.last_error), None),
            url=states[0].url if states else None,
        )

    def names(self) -> list[str]:
        try:
            return sorted(
                e.name
                for e in os.scandir(self.root)
                if e.is_dir(follow_symlinks=False) and name_problem(e.name) is None
            )
        except FileNotFoundError:
            return []

    def observe_all(self) -> dict[str, ObservedModel]:
        out: dict[str, ObservedModel] = {}
        for name in self.names():
            observed = self.observe(name)
            if observed is not None:
                out[name] = observed
        return out
