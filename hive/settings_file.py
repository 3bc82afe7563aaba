"""`hive serve --config FILE` (or HIVE_CONFIG): the daemon's settings in one YAML mapping.

Keys are the settings' names, with `-` or `_` (`resync-interval` or `resync_interval`),
so a file reads like the flags it stands for; `git` is a list of sources with the
`--git*` options' names (`url`, `ref`, `path`, `interval`, `name`, `allow-empty`,
`webhook-secret-file`). Relative paths are taken from the file's directory, as a
manifest's `file:` source is. The file comes first: HIVE_* variables override it and
flags override both; `git` sources add up (the file's, then the flags'), and `labels`
merge key by key.

Every problem names the file, its line and the field, and hive does not start: a typo in
a settings file must not leave a hive running without its git sources. A file holding a
token must not be readable by others (as ssh treats a private key)."""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hive.core.parse import (
    Document,
    FieldPath,
    Problem,
    format_field,
    load_document,
    pydantic_problems,
)
from hive.errors import ValidationFailed
from hive.model.gitsource import GitSpec

#: A settings file is a few dozen lines.
MAX_BYTES = 256 * 1024
#: Settings whose values are paths (or lists of paths), resolved against the file's folder.
PATH_KEYS = frozenset({"home", "desired", "file_roots"})
#: Settings a file may give as one value or a list.
LIST_KEYS = frozenset({"desired", "file_roots", "cors_origins"})
GIT_PATH_KEYS = frozenset({"webhook_secret_file"})


def read_settings_file(
    path: Path, *, fields: Iterable[str], validate: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """The settings `path` gives, by field name, checked against `fields` (the Settings'
    names) and by `validate` (the Settings' own checks, on what the file gives alone);
    raises ValidationFailed naming file, line and field of every problem."""
    file = str(path)
    text = _read(path)
    doc = load_document(text, file=file)
    if isinstance(doc, list):
        raise _failed(file, doc)
    if not isinstance(doc.data, dict):
        raise _failed(file, [Problem(file=file, line=1, message=_NOT_A_MAPPING)])
    values, problems = _normal(doc, (), doc.data, known=frozenset(fields), file=file)
    base = path.parent
    for key in PATH_KEYS & values.keys():
        values[key] = _resolved(base, values[key])
    gits = values.get("git")
    if gits is not None and not isinstance(gits, list):
        problems.append(_at(doc, file, ("git",), "must be a list of git sources"))
    elif gits is not None:
        values["git"] = []
        for i, entry in enumerate(gits):
            where: FieldPath = (_original(doc, ("git",)), i)
            if not isinstance(entry, dict):
                problems.append(_at(doc, file, where, "must be a mapping with at least url"))
                continue
            spec, found = _normal(
                doc, where, entry, known=frozenset(GitSpec.model_fields), file=file
            )
            problems += found
            for key in GIT_PATH_KEYS & spec.keys():
                spec[key] = _resolved(base, spec[key])
            values["git"].append(spec)
    if "token" in values and _readable_by_others(path):
        problems.append(
            _at(
                doc,
                file,
                (_original(doc, ("token",)),),
                "the file holds a token and others can read it; `chmod 600` it (or give "
                "the token in HIVE_TOKEN instead)",
            )
        )
    if not problems:
        try:
            validate(values)
        except ValidationError as exc:
            problems = pydantic_problems(
                exc,
                file=file,
                line_of=doc.line_of,
                written=lambda where: _written_path(doc, where),
            )
    if problems:
        raise _failed(file, problems)
    return values


def _resolved(base: Path, value: Any) -> Any:
    """A path (or each of a list of paths) taken from the file's folder, `~` expanded;
    anything else as it is, for the settings to refuse with its line."""
    if isinstance(value, list):
        return [_resolved(base, v) for v in value]
    if isinstance(value, str) and value:
        return str(base / Path(value).expanduser())
    return value


_NOT_A_MAPPING = "must be a YAML mapping of settings (port: 7835, labels: {gpu: a}, git: [...])"


def _written_path(doc: Document, path: FieldPath) -> FieldPath:
    """`path` (the settings' names) as `doc` writes it (`resync_interval` may be written
    `resync-interval`)."""
    written: list[str | int] = []
    for part in path:
        if isinstance(part, str):
            part = _original_part(doc, tuple(written), part)
        written.append(part)
    return tuple(written)


def _original_part(doc: Document, parent: FieldPath, part: str) -> str:
    node: Any = doc.data
    for p in parent:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return part
    if isinstance(node, dict):
        for key in node:
            if isinstance(key, str) and key.replace("-", "_") == part:
                return key
    return part


def _original(doc: Document, path: FieldPath) -> str:
    """The key as the file writes it, for the settings' name at the end of `path`."""
    last = path[-1]
    assert isinstance(last, str)
    return _original_part(doc, path[:-1], last)


def _normal(
    doc: Document, where: FieldPath, data: dict[Any, Any], *, known: frozenset[str], file: str
) -> tuple[dict[str, Any], list[Problem]]:
    """`data`'s keys as the settings name them; unknown keys are problems (with the
    nearest known name)."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if not isinstance(key, str) or name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            hint = (
                f"did you mean {near[0].replace('_', '-')}?" if near else "see docs/operations.md"
            )
            problems.append(_at(doc, file, (*where, str(key)), f"unknown setting ({hint})"))
            continue
        if name in LIST_KEYS and isinstance(value, str | int | float):
            value = [value]
        values[name] = value
    return values, problems


def _at(doc: Document, file: str, where: FieldPath, message: str) -> Problem:
    return Problem(file=file, line=doc.line_of(where), field=format_field(where), message=message)


def _read(path: Path) -> str:
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValidationFailed(f"--config {where}: is not a regular file")
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValidationFailed(
            f"--config {where}: cannot read it: {exc.strerror or exc} (give a readable YAML file)"
        ) from None
    if len(raw) > MAX_BYTES:
        raise ValidationFailed(f"--config {where}: is larger than {MAX_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(f"--config {where}: is not UTF-8 text") from None


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def _failed(file: str, problems: list[Problem]) -> ValidationFailed:
    """Every problem, one per line (each names the file, its line and the field)."""
    texts = [str(p) for p in problems]
    if len(texts) == 1:
        return ValidationFailed(texts[0], texts)
    listed = "\n".join(f"  {t}" for t in texts)
    return ValidationFailed(f"the settings file {file} has {len(texts)} problems:\n{listed}", texts)
