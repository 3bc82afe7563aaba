"""Observed state: what the disk catalog holds, as hive read it (rbee-compatible).

These records are written to disk and served by the API: a URL or an error in them is
redacted when it is set and again when it is written (`RedactedUrl`, `RedactedText`), so
none can carry a source's credentials, however it was built (`model_copy` included)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer

from hive.model.text import redact_text, redact_url

#: A URL shown without its credentials or signed query values.
RedactedUrl = Annotated[str, AfterValidator(redact_url), PlainSerializer(redact_url)]
#: Free text (an error message) with every URL in it redacted.
RedactedText = Annotated[str, AfterValidator(redact_text), PlainSerializer(redact_text)]


class ArtifactStatus(StrEnum):
    AVAILABLE = "Available"
    DOWNLOADING = "Downloading"
    FAILED = "Failed"


class ModelFile(BaseModel):
    """One file of a model: `model.gguf`, or one part of a split model."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: int
    sha256: str | None = None


class ModelMetadata(BaseModel):
    """`<home>/models/<name>/metadata.json`: rbee's ModelEntry plus provenance and GGUF facts."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    path: Path
    size: int
    status: ArtifactStatus
    added_at: datetime
    error: RedactedText | None = None
    sha256: str | None = None
    source: RedactedUrl | None = None
    #: The source as resolved at provisioning time (an absolute file path, a URL).
    resolved_source: RedactedUrl | None = None
    revision: str | None = None
    #: Where the bytes were fetched from (a network source's URL, pinned to the commit).
    url: RedactedUrl | None = None
    format: str = "GGUF"
    architecture: str | None = None
    quantization: str | None = None
    #: general.file_type as a number, and the tensor type holding most of the bytes.
    file_type: int | None = None
    dominant_type: str | None = None
    parameter_count: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    gguf_version: int | None = None
    tensor_count: int | None = None
    kv_count: int | None = None
    verified: bool = False
    #: False from the moment a model is published (its bytes verified in the page cache)
    #: until they are fsynced; `boot_id` says which boot of the machine published them. A
    #: model left unsynced by an earlier boot is hashed again before it is trusted.
    synced: bool = True
    boot_id: str | None = None
    #: When a worker last used the model (set by the worker runtime; None until then).
    last_accessed: datetime | None = None
    #: The parts of a split model (llama.cpp loads them from the first, `path`); empty for
    #: a model in one file.
    files: list[ModelFile] = []

    def needs_check(self, boot: str | None) -> bool:
        """Published by another boot of the machine and never synced: the bytes on disk may
        not be the ones that were verified, so nothing uses them until they are hashed again."""
        return not self.synced and (self.boot_id is None or self.boot_id != boot)


class PartialState(BaseModel):
    """The sidecar of a partial download (`model.gguf.partial.json`): what the bytes on disk
    are a prefix of, and how the download has gone."""

    model_config = ConfigDict(frozen=True)

    url: RedactedUrl
    etag: str | None
    size: int | None
    commit: str | None = None
    sha256: str | None = None
    started_at: datetime
    attempts: int = 0
    last_error: RedactedText | None = None


class PartialDownload(BaseModel):
    """What `/v1/models` and `hive get models` show of a partial download."""

    model_config = ConfigDict(frozen=True)

    bytes_on_disk: int
    total_bytes: int | None = None
    updated_at: datetime | None = None
    attempts: int = 0
    last_error: RedactedText | None = None
    url: RedactedUrl | None = None


class ObservedModel(BaseModel):
    """One directory under `<home>/models/`, as seen by the catalog observer."""

    model_config = ConfigDict(frozen=True)

    name: str
    directory: Path
    metadata: ModelMetadata | None
    #: Size of `model.gguf` on disk, None when the file is missing.
    file_size: int | None
    #: Leftover temporary files of an interrupted provisioning.
    partial: bool = False
    #: The partial download on disk, if any, with what its sidecar says.
    download: PartialDownload | None = None
    #: Why metadata.json could not be read, if it could not.
    metadata_error: str | None = None

    @property
    def complete(self) -> bool:
        """The file is whole and described: Available and the size on disk matches."""
        m = self.metadata
        return (
            m is not None
            and m.status == ArtifactStatus.AVAILABLE
            and self.file_size is not None
            and self.file_size == m.size
        )
