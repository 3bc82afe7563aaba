"""Desired-state records: the `Model` and `Worker` manifests (apiVersion hive/v1).

These are the only shapes a source may hand to the store; validation of a
document happens here, the file and line bookkeeping in `hive.core.parse`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hive.model.ids import NAME_MAX_LENGTH, NAME_PATTERN, Kind, ObjectKey, SourceName, name_problem
from hive.model.text import redact_url, show

API_VERSION = "hive/v1"
SUPPORTED_SCHEMES = ("hf://", "https://", "http://", "file:")
_SCHEME_HINT = "use hf://, https://, http:// or file:"
# Every pattern here is checked with `fullmatch`: `$` alone lets a final newline through.
_HF_RE = re.compile(
    r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
    r"(?:(?P<path>/[^@:]+)|:(?P<quant>[\w.-]+))(?:@(?P<rev>[\w./-]+))?"
)
#: The longest source: a URL longer than browsers, proxies and servers accept (about 2,000
#: to 8,000 characters) is a mistake, and every copy of it (status, metadata.json) is bounded.
SOURCE_MAX_LENGTH = 4096
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DEVICE_RE = re.compile(r"CPU-0|GPU-(0|[1-9][0-9]{0,2})")
#: A control character (a newline, a tab, an escape): refused in sources and labels, which
#: are printed in tables and log lines (and a URL's would be dropped by `urlsplit`).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_source(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise ValueError(
            f"{show(value)} holds a control character (a newline, a tab, …); write the "
            "source on one line"
        )
    scheme = value.split(":", 1)[0] if ":" in value else ""
    if not value.startswith(SUPPORTED_SCHEMES):
        if scheme and f"{scheme.lower()}:" in {s.rstrip("/") for s in SUPPORTED_SCHEMES}:
            raise ValueError(f"write the scheme {show(scheme)} in lower case ({_SCHEME_HINT})")
        if scheme:
            raise ValueError(f"scheme {show(scheme)} is not supported ({_SCHEME_HINT})")
        raise ValueError(f"{show(value)} has no scheme ({_SCHEME_HINT})")
    if value.startswith("hf://") and not _HF_RE.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a Hugging Face source "
            "(use hf://org/repo/path/file.gguf[@revision] or hf://org/repo:QUANT[@revision])"
        )
    if value.startswith("hf://") and {".", ".."} & set(value.split("@", 1)[0][5:].split("/")):
        raise ValueError(
            f"{show(value)}: a Hugging Face repository or file path has no '.' or '..' part "
            "(the hub refuses them; name the file as the repository lists it)"
        )
    if value.startswith(("https://", "http://")):
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"{show(value)} has no host")
    if value.startswith("file:"):
        rest = value.removeprefix("file:")
        if rest.startswith("//") and len(rest) > 2 and not rest.startswith("///"):
            raise ValueError(
                f"{show(value)} names a host; file: sources are local "
                "(use file:relative/path.gguf or file:///absolute/path.gguf)"
            )
        if not rest.removeprefix("//"):
            raise ValueError(
                "file: source has no path (use file:relative/path.gguf or file:///abs)"
            )
    return value


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise ValueError("must be 64 lower-case hex digits (the SHA-256 of the GGUF file)")
    return value


def _check_device(value: str) -> str:
    if not _DEVICE_RE.fullmatch(value):
        raise ValueError(f"{show(value)} is not a device (use CPU-0 or GPU-<n>, for example GPU-0)")
    return value


Name = Annotated[
    str,
    AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH}),
]


def _check_label_text(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise ValueError(
            f"{show(value)} holds a control character (a newline, a tab, …); labels are "
            "printed in tables and log lines: write them on one line, without control "
            "characters"
        )
    return value


LabelKey = Annotated[str, AfterValidator(_check_label_text)]
LabelValue = Annotated[str, Field(max_length=63), AfterValidator(_check_label_text)]
_Strict = ConfigDict(extra="forbid", frozen=True, strict=True)


class ObjectMeta(BaseModel):
    model_config = _Strict

    name: Name = Field(description="Unique per kind on this hive; DNS-label style, <= 63 chars.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*/\s*s\s*", re.IGNORECASE)
_RATE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_rate(text: str) -> int:
    """`20MB/s`, `500KiB/s`, `1GB/s` → bytes per second; ValueError with a hint otherwise."""
    match = _RATE_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{show(text)} is not a rate (use for example 20MB/s, 500KiB/s, 1GB/s)")
    value = float(match.group(1)) * _RATE_UNITS[(match.group(2) or "B").lower()]
    if value < 1000:
        raise ValueError(f"{show(text)} is below 1 KB/s, which would stall the download")
    return int(value)


def _check_rate(value: str) -> str:
    parse_rate(value)
    return value


Rate = Annotated[str, AfterValidator(_check_rate)]


class SelectorRequirement(BaseModel):
    """One of `matchExpressions`: Kubernetes' `{key, operator, values}`."""

    model_config = _Strict

    key: Annotated[LabelKey, Field(min_length=1)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default_factory=list, validate_default=True)

    @field_validator("values")
    @classmethod
    def _values_fit(cls, values: list[str], info: ValidationInfo) -> list[str]:
        operator = info.data.get("operator")
        if operator in ("In", "NotIn") and not values:
            raise ValueError(f"operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"operator {operator} takes no values (remove `values`)")
        return values

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


class LabelSelector(BaseModel):
    """The hives a record applies to, as Kubernetes selects: every `matchLabels` pair and
    every `matchExpressions` requirement must hold; an empty selector selects every hive."""

    model_config = _Strict

    matchLabels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    matchExpressions: list[SelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchLabels.items()) and all(
            e.matches(labels) for e in self.matchExpressions
        )


#: What `spec.hiveSelector` means, in the schema and the docs.
_SELECTOR_HELP = (
    "The hives this record applies to, by their labels (hive serve --label; hive.name and "
    "hive.hostname are set by hive): matchLabels and matchExpressions (In, NotIn, Exists, "
    "DoesNotExist) as Kubernetes has them. None: every hive."
)


class DownloadSpec(BaseModel):
    model_config = _Strict

    rateLimit: Rate | None = Field(
        default=None,
        description="Bandwidth cap for this model's download, e.g. 20MB/s or 500KiB/s; "
        "a change applies to a download in progress.",
    )


class ModelSpec(BaseModel):
    model_config = _Strict

    source: Annotated[str, AfterValidator(_check_source)] = Field(
        max_length=SOURCE_MAX_LENGTH,
        description="hf://org/repo/file.gguf[@rev], hf://org/repo:QUANT[@rev], "
        f"https://..., http://..., or file:path (relative to the manifest's file); at most "
        f"{SOURCE_MAX_LENGTH} characters.",
    )
    sha256: Annotated[str, AfterValidator(_check_sha256)] | None = Field(
        default=None, description="Expected SHA-256 of the GGUF file; verified on provisioning."
    )
    state: Literal["present", "absent"] = Field(
        default="present", description="present: keep the file; absent: delete it."
    )
    download: DownloadSpec | None = Field(
        default=None, description="How network sources are fetched (hf://, https://)."
    )
    hiveSelector: LabelSelector | None = Field(default=None, description=_SELECTOR_HELP)


ArgValue = int | float | str | bool


class WorkerSpec(BaseModel):
    model_config = _Strict

    model: Name = Field(description="The name of a Model on this hive.")
    runtime: Name = Field(description="An entry of the worker catalog (never a command line).")
    device: Annotated[str, AfterValidator(_check_device)] = Field(
        default="CPU-0", description="CPU-0 or GPU-<n>."
    )
    port: int | None = Field(
        default=None, ge=1024, le=65535, description="Default: first free port in 9000-9999."
    )
    args: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ArgValue] = Field(
        default_factory=dict, description="Only keys that the runtime entry declares."
    )
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"
    state: Literal["running", "stopped"] = "running"
    hiveSelector: LabelSelector | None = Field(default=None, description=_SELECTOR_HELP)


class ModelManifest(BaseModel):
    model_config = _Strict

    apiVersion: Literal["hive/v1"]
    kind: Literal["Model"]
    metadata: ObjectMeta
    spec: ModelSpec


class WorkerManifest(BaseModel):
    model_config = _Strict

    apiVersion: Literal["hive/v1"]
    kind: Literal["Worker"]
    metadata: ObjectMeta
    spec: WorkerSpec


Manifest = ModelManifest | WorkerManifest
MANIFEST_TYPES: dict[str, type[ModelManifest] | type[WorkerManifest]] = {
    Kind.MODEL.value: ModelManifest,
    Kind.WORKER.value: WorkerManifest,
}


class Origin(BaseModel):
    """Where a record came from: its source and, for files, the file and line."""

    model_config = ConfigDict(frozen=True)

    source: SourceName
    file: Path | None = None
    line: int | None = None

    def where(self) -> str:
        if self.file is None:
            return f"source {self.source}"
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    def described(self) -> str:
        """Where, and the source when a file is named: `a.yaml:3 (source dir:/srv/d)`, or
        `source api` for a record written over HTTP."""
        if self.file is None:
            return self.where()
        return f"{self.where()} (source {self.source})"


class Record(BaseModel):
    """One validated desired-state document and where it came from."""

    model_config = ConfigDict(frozen=True)

    manifest: Manifest = Field(discriminator="kind")
    origin: Origin

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(Kind(self.manifest.kind), self.manifest.metadata.name)

    @property
    def name(self) -> str:
        return self.manifest.metadata.name


def selected(manifest: Manifest, labels: Mapping[str, str] | None) -> bool:
    """Whether a hive with `labels` applies `manifest`; `labels` None: every record applies
    (the offline tools without --labels)."""
    selector = manifest.spec.hiveSelector
    return labels is None or selector is None or selector.matches(labels)


def spec_view(manifest: Manifest) -> dict[str, Any]:
    """A record's spec as the API shows it (and `hive diff` compares it): every default
    filled in, a Model's source with its credentials and signed query values redacted (the
    record in memory keeps them, to download with)."""
    spec: dict[str, Any] = manifest.spec.model_dump(mode="json")
    if isinstance(spec.get("source"), str):
        spec["source"] = redact_url(spec["source"])
    return spec
