"""The planner: `plan(desired, observed) -> actions`, a pure function with no I/O.

It decides *what* must happen for each Model; the runtime decides *when*.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath

from hive.model.actions import Action, CleanupPartial, DeleteModel, ProvisionModel, SyncModel
from hive.model.manifests import ModelManifest, Record
from hive.model.observed import ObservedModel
from hive.model.text import redact_url

#: Partial downloads of models no record wants are kept this long (seconds) for a resume.
DEFAULT_PARTIAL_TTL = 24 * 3600.0


@functools.lru_cache(maxsize=8192)
def resolve_source(source: str, *, manifest_file: Path | None) -> str:
    """Make a source concrete: `file:` paths become absolute (relative to the manifest's
    own file); other sources are returned as written."""
    if not source.startswith("file:"):
        return source
    raw = source.removeprefix("file:")
    if raw.startswith("//"):
        raw = raw[2:]
        # file://host/path is not supported; file:///abs leaves "/abs" here.
    path = PurePosixPath(raw)
    if not path.is_absolute():
        base = manifest_file.parent if manifest_file is not None else Path.cwd()
        return os.path.normpath(Path(base, path).absolute())
    return os.path.normpath(path)


def _up_to_date(spec_sha: str | None, resolved: str, observed: ObservedModel) -> str | None:
    """None when the catalog entry satisfies the spec, else why not."""
    m = observed.metadata
    if observed.metadata_error:
        return f"metadata unreadable: {observed.metadata_error}"
    if m is None:
        return "not in the catalog"
    if observed.file_size is None:
        return "model.gguf is missing"
    if not observed.complete:
        return f"catalog entry is {m.status.value.lower()}, size {observed.file_size}/{m.size}"
    if spec_sha is not None:
        if m.sha256 != spec_sha:
            return f"sha256 differs (have {m.sha256}, want {spec_sha})"
        return None
    # The catalog keeps a URL redacted (hive.model.text): a change of its credentials or
    # signature alone names the same bytes, and downloads nothing again.
    if m.resolved_source != redact_url(resolved):
        return f"source changed (was {m.resolved_source})"
    return None


def _sync(name: str, observed: ObservedModel | None, boot: str | None) -> list[Action]:
    """A published model whose bytes are not known to be on disk yet: sync it (verify it
    first when an earlier boot of the machine published it)."""
    m = observed.metadata if observed is not None else None
    if m is None or m.synced or observed is None or not observed.complete:
        return []
    if m.needs_check(boot):
        reason = "published by an earlier boot of the machine and never synced: hashing it again"
        return [SyncModel(name=name, reason=reason, verify=True)]
    return [SyncModel(name=name, reason="published; its bytes are not on disk yet")]


def plan_model(
    name: str,
    *,
    record: Record | None,
    observed: ObservedModel | None,
    prune_allowed: bool,
    now: datetime,
    partial_ttl: float = DEFAULT_PARTIAL_TTL,
    boot: str | None = None,
) -> list[Action]:
    """What must happen for one Model so that disk matches its record. `boot` is this boot
    of the machine (`catalog.boot_id()`): unsynced models of another boot are checked."""
    if record is None:
        # Removing a record keeps the files. Only leftovers of an interrupted provisioning
        # (a partial file, or a directory without model.gguf) go, and only once every source
        # has synced (the record may yet come back).
        leftover = observed is not None and (observed.partial or observed.file_size is None)
        if not leftover:
            return _sync(name, observed, boot)
        if not prune_allowed:
            return []
        assert observed is not None
        download = observed.download
        if download is not None and download.updated_at is not None:
            # A partial download is kept for a while: its record may come back and resume it.
            age = (now - download.updated_at).total_seconds()
            if age < partial_ttl:
                return []
            return [
                CleanupPartial(
                    name=name,
                    reason=f"partial download untouched for {age / 3600:.1f} h, no record wants it",
                )
            ]
        return [CleanupPartial(name=name, reason="leftovers of a model no record wants")]
    manifest = record.manifest
    assert isinstance(manifest, ModelManifest)
    spec = manifest.spec
    if spec.state == "absent":
        if observed is not None:
            return [DeleteModel(name=name, reason="state: absent")]
        return []
    resolved = resolve_source(spec.source, manifest_file=record.origin.file)
    why = "not in the catalog" if observed is None else _up_to_date(spec.sha256, resolved, observed)
    if why is None:
        return _sync(name, observed, boot)
    return [
        ProvisionModel(
            name=name, reason=why, source=spec.source, resolved_source=resolved, sha256=spec.sha256
        )
    ]


def plan(
    desired: Mapping[str, Record],
    observed: Mapping[str, ObservedModel],
    *,
    prune_allowed: bool,
    now: datetime,
    partial_ttl: float = DEFAULT_PARTIAL_TTL,
    boot: str | None = None,
) -> list[Action]:
    """Every action needed, over all Models, in name order (stable for `hive plan`)."""
    actions: list[Action] = []
    for name in sorted(set(desired) | set(observed)):
        actions.extend(
            plan_model(
                name,
                record=desired.get(name),
                observed=observed.get(name),
                prune_allowed=prune_allowed,
                now=now,
                partial_ttl=partial_ttl,
                boot=boot,
            )
        )
    return actions
