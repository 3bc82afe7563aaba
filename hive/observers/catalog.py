"""The disk catalog observer: `<home>/models/<name>/{metadata.json, model.gguf}`.

rbee-compatible layout. A full pass costs a few `stat` calls per model: metadata.json is
parsed again only when its mtime or size changed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from hive.model.ids import name_problem
from hive.model.observed import ModelMetadata, ObservedModel

METADATA = "metadata.json"
MODEL_FILE = "model.gguf"
PARTIAL_SUFFIX = ".partial"
#: Directories being deleted are renamed to this prefix first, so they vanish atomically.
TRASH_PREFIX = ".deleting-"


class ModelCatalog:
    """Reads the models directory; writing is the actuators' job."""

    def __init__(self, home: Path) -> None:
        self.root = home / "models"
        self._cache: dict[str, tuple[tuple[int, int, int], ModelMetadata | None, str | None]] = {}

    def directory(self, name: str) -> Path:
        problem = name_problem(name)
        if problem:  # names are validated long before; this keeps paths inside <home>
            raise ValueError(f"model name {problem}")
        return self.root / name

    def _metadata(self, name: str, path: Path) -> tuple[ModelMetadata | None, str | None]:
        try:
            st = path.stat()
        except FileNotFoundError:
            self._cache.pop(name, None)
            return None, None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        metadata: ModelMetadata | None = None
        error: str | None = None
        try:
            metadata = ModelMetadata.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            error = f"{path}: {str(exc).splitlines()[0]}"
        self._cache[name] = (stamp, metadata, error)
        return metadata, error

    def observe(self, name: str) -> ObservedModel | None:
        directory = self.directory(name)
        try:
            entries = {e.name: e for e in os.scandir(directory)}
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(name, None)
            return None
        metadata, error = self._metadata(name, directory / METADATA)
        size: int | None = None
        model = entries.get(MODEL_FILE)
        if model is not None:
            try:
                size = model.stat().st_size
            except FileNotFoundError:
                size = None
        partial = any(n.endswith(PARTIAL_SUFFIX) for n in entries)
        return ObservedModel(
            name=name,
            directory=directory,
            metadata=metadata,
            file_size=size,
            partial=partial,
            metadata_error=error,
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
