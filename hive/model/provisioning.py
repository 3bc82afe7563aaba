"""The words provisioning shares: how far a transfer got (`Progress`), what it produced
(`ProvisionOutcome`), that it was called off (`Cancelled`), and the catalog's layout on
disk. The actuators write that layout, the catalog observer reads it. Pure: names and path
arithmetic, no I/O.

`<home>/models/<name>/` holds `metadata.json` and `model.gguf` (or the parts of a split
model); a download's bytes grow in `<file>.partial`, described by `<file>.partial.json`; a
directory being deleted is first renamed to `.deleting-<name>-<token>`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from hive.model.ids import name_problem
from hive.model.observed import ModelMetadata

#: Under hive's home, the directory of every model's own directory.
MODELS_DIR = "models"
METADATA = "metadata.json"
MODEL_FILE = "model.gguf"
PARTIAL_SUFFIX = ".partial"
#: Beside `X.partial`, `X.partial.json` says what the partial bytes are a prefix of.
SIDECAR_SUFFIX = ".json"
#: The mode of metadata.json and of sidecars: they name where a model came from, and a URL
#: may hold a secret that redaction cannot recognise (a signature in a path segment), so
#: only hive's own user reads them. The model's bytes keep their own mode.
PRIVATE_FILE_MODE = 0o600
#: Directories being deleted are renamed to this prefix first, so they vanish atomically.
TRASH_PREFIX = ".deleting-"


def models_root(home: Path) -> Path:
    """Where the models of the hive at `home` live."""
    return home / MODELS_DIR


def model_directory(root: Path, name: str) -> Path:
    """The directory of the model `name` under `root` (`models_root`); a name that could
    leave `root` is refused (names are validated long before: this keeps paths inside)."""
    problem = name_problem(name)
    if problem:
        raise ValueError(f"model name {problem}")
    return root / name


def partial_name(file: str) -> str:
    """The name `file`'s bytes have while they arrive."""
    return file + PARTIAL_SUFFIX


def sidecar_name(file: str) -> str:
    """The name of the record that says what `file`'s partial bytes are a prefix of."""
    return file + PARTIAL_SUFFIX + SIDECAR_SUFFIX


def is_partial_name(name: str) -> bool:
    """A partial download or its sidecar: never a model, however long it stays."""
    return name.endswith((PARTIAL_SUFFIX, PARTIAL_SUFFIX + SIDECAR_SUFFIX))


def part_names(count: int) -> list[str]:
    """`model.gguf`, or llama.cpp's split names for the `count` parts of a split model."""
    if count == 1:
        return [MODEL_FILE]
    return [f"model-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def trash_name(name: str, token: str) -> str:
    """What the directory of the model `name` is renamed to while it is deleted."""
    return f"{TRASH_PREFIX}{name}-{token}"


class Progress(BaseModel):
    """Bytes of a model in place so far, of `total` (0 when the size is not known)."""

    model_config = ConfigDict(frozen=True)

    done: int
    total: int


#: Told how far a transfer got. Called from the thread that does the transfer, never from
#: the event loop: a caller that touches the loop's objects hands the call over itself.
ProgressFn = Callable[[Progress], None]


class ProvisionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    metadata: ModelMetadata
    method: Literal["hardlink", "copy", "download"]


class Cancelled(Exception):
    """The action was cancelled (its record changed or went away, or hive is stopping)."""
