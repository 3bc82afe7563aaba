"""Manifest text → validated records, or problems that name file, line and field.

Pure: takes text and the path it came from; reading files is the sources' job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hive.model.ids import Kind, SourceName
from hive.model.manifests import API_VERSION, MANIFEST_TYPES, Origin, Record
from hive.model.text import clip, redact_text, show
from hive.model.units import MIB, megabytes

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
#: Larger files are refused: a manifest set is kilobytes, a 50 MB file is a mistake.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: The most values (scalars, lists, mappings) one document may hold once its aliases are
#: expanded, each use of an anchor counted whole. A manifest holds a few dozen; an alias
#: bomb (`&a [x, x]`, `&b [*a, *a]`, … nested) holds billions in a few hundred bytes.
#: A text longer than four times this may hold a value per four of its characters.
MAX_EXPANDED_VALUES = 100_000
#: The most characters of one part of a field path (a key as written in the file).
_FIELD_PART_LIMIT = 80

FieldPath = tuple[str | int, ...]


class Problem(BaseModel):
    """One thing wrong with a manifest file, located as precisely as we can."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ParseResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    records: tuple[Record, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: The file could not be read at all (no permission, an I/O error, not a regular
    #: file): what it holds is unknown, so a source reads it again until it can.
    unreadable: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def is_manifest_file(path: Path) -> bool:
    """Manifest files by name: not hidden, not an editor's backup or swap file."""
    name = path.name
    return (
        not name.startswith((".", "#"))
        and not name.endswith(("~", ".swp", ".swx"))
        and path.suffix.lower() in MANIFEST_SUFFIXES
    )


def format_field(path: FieldPath) -> str:
    """`spec.args.ctx_size`, `items[2]`: each key bounded, and quoted when it holds a
    character that is not printable (a newline would break the line of a message)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if part.isprintable() else repr(part)
        text = clip(text, _FIELD_PART_LIMIT)
        out += f".{text}" if out else text
    return out


class _Located:
    """A document's data plus the line of each field path."""

    def __init__(self, data: Any, lines: dict[FieldPath, int], start: int) -> None:
        self.data = data
        self.lines = lines
        self.start = start

    def line_of(self, path: FieldPath) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.start


def _walk(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], dups: list[str]) -> None:
    """Record the line of every field path; iterative, and each node is walked once, so
    neither deep nesting nor an alias bomb (`&a [*a, *a]`, nested) can hang or overflow."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, FieldPath]] = [(node, path)]
    while stack:
        current, where = stack.pop()
        lines.setdefault(where, current.start_mark.line + 1)
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in current.value:
                # A key that is a list or a mapping (`? [a, b]`) is named by its shape:
                # the node's own str() is its whole tree.
                key = (
                    str(key_node.value)
                    if isinstance(key_node, yaml.ScalarNode)
                    else f"<{key_node.id}>"
                )
                if key in keys:
                    dups.append(f"{format_field((*where, key))}@{key_node.start_mark.line + 1}")
                keys.add(key)
                lines[(*where, key)] = key_node.start_mark.line + 1
                stack.append((value_node, (*where, key)))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, (*where, i)) for i, item in enumerate(current.value))


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield key_node
            yield value_node
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _expansion_problem(root: yaml.Node, *, file: str, limit: int) -> Problem | None:
    """Why the document `root` may not be built: an alias used inside its own anchor (a
    value without end), or more than `limit` values once every alias is expanded.

    An alias is the very node of its anchor in the composed graph, so the expanded size is
    a sum over a graph, each node's computed once: iterative, linear in the text, and
    stopped as soon as the count passes `limit`. Nothing is built before this says yes."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Each frame: the node, its children still to count, the count so far.
    stack: list[tuple[yaml.Node, Iterator[yaml.Node], list[int]]] = [(root, _children(root), [1])]
    on_path.add(id(root))
    message: str | None = None
    while stack:
        node, todo, count = stack[-1]
        child = next(todo, None)
        if child is None:
            stack.pop()
            on_path.discard(id(node))
            sizes[id(node)] = count[0]
            if stack:
                stack[-1][2][0] += count[0]
                if stack[-1][2][0] > limit:
                    break
            continue
        if id(child) in on_path:
            message = (
                "an alias is used inside its own anchor (a value without end); "
                "write the value out instead"
            )
            break
        known = sizes.get(id(child))
        if known is not None:
            count[0] += known
            if count[0] > limit:
                break
            continue
        on_path.add(id(child))
        stack.append((child, _children(child), [1]))
    else:
        return None
    if message is None:
        distinct = len(sizes) + len(stack)
        message = (
            f"aliases expand to more than {limit:,} values; write the values out or use "
            "fewer anchors"
            if distinct <= limit
            else f"holds more than {limit:,} values; a manifest needs a few dozen"
        )
    # Name the top-level field being counted when the limit was passed (or the cycle met).
    line, field = root.start_mark.line + 1, None
    if len(stack) > 1 and isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if stack[1][0] is value_node or stack[1][0] is key_node:
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode):
                    field = format_field((str(key_node.value),))
                break
    return Problem(file=file, line=line, field=field, message=message)


#: libyaml's parser when PyYAML has it (12x faster on a 100-document file: B5), else
#: PyYAML's own. Both are safe on absurd input: libyaml refuses nesting deeper than its
#: limit with a clear error, and `_walk` is iterative.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _documents(text: str, file: str) -> Iterator[_Located | Problem]:
    loader: yaml.SafeLoader | None = None
    document: int | None = None  # the line of the document being read
    # A value written out takes a few characters: a long text (a request body of 10,000
    # records as one JSON list) may hold that many; only aliases expand beyond it.
    limit = max(MAX_EXPANDED_VALUES, len(text) // 4)
    try:
        loader = _Loader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            document = node.start_mark.line + 1
            too_big = _expansion_problem(node, file=file, limit=limit)
            if too_big is not None:
                yield too_big
                continue
            lines: dict[FieldPath, int] = {}
            dups: list[str] = []
            _walk(node, (), lines, dups)
            start = node.start_mark.line + 1
            for dup in dups:
                field, _, line = dup.rpartition("@")
                yield Problem(
                    file=file,
                    line=int(line),
                    field=field,
                    message="duplicate key (each field may appear once)",
                )
            if dups:
                continue
            yield _Located(loader.construct_document(node), lines, start)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        yield Problem(file=file, line=where, message=f"malformed YAML: {clip(str(what))}")
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        # A tag or value PyYAML cannot build (`2024-02-30`, `!!int abc`), or absurd nesting.
        where = document
        yield Problem(
            file=file,
            line=where,
            message=f"malformed YAML: {type(exc).__name__}: {_message_text(exc)}",
        )
    finally:
        if loader is not None:
            loader.dispose()


class Document:
    """One YAML document's data and the line of each of its field paths."""

    def __init__(self, located: _Located) -> None:
        self.data: Any = located.data
        self._located = located

    def line_of(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor written in the file."""
        return self._located.line_of(path)


def load_document(text: str, *, file: str) -> Document | list[Problem]:
    """The one YAML document of `text` (a settings file), read as manifests are (aliases
    bounded, duplicate keys refused), or every problem with its line."""
    found = list(_documents(text, file))
    problems = [f for f in found if isinstance(f, Problem)]
    documents = [f for f in found if isinstance(f, _Located) and f.data is not None]
    if problems:
        return problems
    if len(documents) != 1:
        many = "several documents" if documents else "no document"
        return [Problem(file=file, message=f"holds {many}; write one YAML mapping")]
    return Document(documents[0])


def pydantic_problems(
    err: ValidationError,
    *,
    file: str,
    line_of: Callable[[FieldPath], int],
    written: Callable[[FieldPath], FieldPath] = lambda path: path,
) -> list[Problem]:
    """A pydantic error as problems with file, line (`line_of` a field path) and field
    (`written`: a model's field path as the file writes it)."""
    problems = []
    for item in err.errors():
        path, message = _location(item)
        path = written(path)
        problems.append(
            Problem(
                file=file,
                line=line_of(path),
                field=format_field(path) or None,
                message=message,
            )
        )
    return problems


def _message_text(value: object) -> str:
    """A message (not a value: no quotes added) as a problem may repeat it: bounded, redacted."""
    return clip(redact_text(str(value)))


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field (remove it; see specs/manifest.schema.json for the allowed fields)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"got {show(err.get('input'))}; allowed: {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch":
        return f"{show(err.get('input'))} does not match {ctx.get('pattern')}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "value_error":
        return _message_text(ctx.get("error", err["msg"]))
    if kind in {"model_type", "dict_type"}:
        return f"must be a mapping, got {type(err.get('input')).__name__}"
    return _message_text(err["msg"])


_UNION_MEMBERS = {"int", "float", "str", "bool"}
_SCALAR_TYPE_ERRORS = {"int_type", "int_from_float", "float_type", "string_type", "bool_type"}


def _location(err: Any) -> tuple[FieldPath, str]:
    """The field path as written in the file, and the message, of a pydantic error."""
    loc = tuple(part for part in err["loc"] if part != "[key]")
    if err["type"] in _SCALAR_TYPE_ERRORS and loc and loc[-1] in _UNION_MEMBERS:
        return loc[:-1], "must be a number, a string or a boolean"
    return loc, _pydantic_message(err)


def _validate(doc: _Located, *, file: str, source: SourceName) -> Record | list[Problem]:
    data = doc.data

    def problem(path: FieldPath, message: str) -> list[Problem]:
        return [
            Problem(
                file=file, line=doc.line_of(path), field=format_field(path) or None, message=message
            )
        ]

    if not isinstance(data, dict):
        return problem(
            (),
            f"a document must be a mapping (apiVersion, kind, metadata, spec), "
            f"not a {type(data).__name__}",
        )
    version = data.get("apiVersion")
    if version != API_VERSION:
        if version is None:
            return problem(("apiVersion",), f"required field is missing (use {API_VERSION})")
        return problem(("apiVersion",), f"{show(version)} is not supported (use {API_VERSION})")
    kind = data.get("kind")
    manifest_type = MANIFEST_TYPES.get(kind) if isinstance(kind, str) else None
    if manifest_type is None:
        allowed = ", ".join(k.value for k in Kind)
        if kind is None:
            return problem(("kind",), f"required field is missing (use {allowed})")
        return problem(("kind",), f"{show(kind)} is not supported (use {allowed})")
    try:
        manifest = manifest_type.model_validate(data)
    except ValidationError as exc:
        problems: list[Problem] = []
        for err in exc.errors():
            loc, message = _location(err)
            found = problem(loc, message)
            if found[0] not in problems:  # a union reports once per member
                problems.extend(found)
        return problems
    return Record(manifest=manifest, origin=Origin(source=source, file=Path(file), line=doc.start))


def _items(doc: _Located) -> list[_Located] | None:
    """The documents inside a list: a JSON/YAML list of manifests, or `kind: List` with
    `items` (as `kubectl get -o yaml` writes one); None when `doc` is not a list. Each
    item keeps the lines of the text it came from."""
    data = doc.data
    prefix: FieldPath
    if isinstance(data, list):
        prefix = ()
    elif isinstance(data, dict) and data.get("kind") == "List" and "items" in data:
        if not isinstance(data["items"], list):
            return None
        data, prefix = data["items"], ("items",)
    else:
        return None
    # The lines of each item, in one pass over the document's (a pass per item was
    # quadratic: minutes for a body of a few thousand records).
    size = len(prefix) + 1
    per_item: dict[FieldPath, dict[FieldPath, int]] = {}
    for path, line in doc.lines.items():
        if len(path) >= size and path[: size - 1] == prefix:
            per_item.setdefault(path[:size], {})[path[size:]] = line
    out = []
    for index, item in enumerate(data):
        head = (*prefix, index)
        out.append(_Located(item, per_item.get(head, {}), doc.line_of(head)))
    return out


def parse_text(text: str, *, file: str, source: SourceName, lists: bool = False) -> ParseResult:
    """Every document of one file: all records, or every problem found (never both).

    For a request body (`PUT /v1/desired/{source}`): with `lists`, a document that is a
    list of manifests, or `kind: List` with `items`, stands for its items (an empty list is
    an empty set; no document at all is still refused)."""
    records: list[Record] = []
    problems: list[Problem] = []
    if file.lower().endswith(".json"):
        # JSON allows tab indentation, YAML does not; a JSON string cannot hold a raw tab.
        text = text.replace("\t", " ")
    seen = False
    for found in _documents(text, file):
        if isinstance(found, Problem):
            problems.append(found)
            continue
        if found.data is None:
            continue
        seen = True
        items = _items(found) if lists else None
        docs = [found] if items is None else items
        for doc in docs:
            result = _validate(doc, file=file, source=source)
            if isinstance(result, Record):
                records.append(result)
            else:
                problems.extend(result)
    if not records and not problems and not seen:
        problems.append(
            Problem(
                file=file,
                message="no documents (an empty body is refused; to empty the source, "
                "send [] with ?allowEmpty=true)"
                if lists
                else "no documents (an empty file is refused; "
                "delete the file to remove its records)",
            )
        )
    records, duplicates = merge_files({file: tuple(records)})
    problems.extend(duplicates)
    if problems:
        return ParseResult(problems=tuple(problems))
    return ParseResult(records=tuple(records))


def parse_bytes(raw: bytes, *, file: str, source: SourceName, lists: bool = False) -> ParseResult:
    """Like parse_text, with the size cap and UTF-8 decoding checked first."""
    if len(raw) > MAX_MANIFEST_BYTES:
        return ParseResult(
            problems=(
                Problem(
                    file=file,
                    message=f"file is {megabytes(len(raw))}; manifests are limited to "
                    f"{MAX_MANIFEST_BYTES // MIB} MiB (split it or remove what is not "
                    "a manifest)",
                ),
            )
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return ParseResult(
            problems=(
                Problem(
                    file=file,
                    line=line,
                    message="not UTF-8 text (manifests are UTF-8 YAML or JSON)",
                ),
            )
        )
    return parse_text(text, file=file, source=source, lists=lists)


def parse_file(path: Path, *, source: SourceName, display: str | None = None) -> ParseResult:
    """Read and parse one manifest file. I/O is confined to the one read.

    Only a regular file is read: a FIFO named `m.yaml` would block the read until some
    writer came, and a device would never end."""
    file = display or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return _unreadable(
                    file,
                    "is not a regular file (a FIFO, a socket or a device); manifests are "
                    "regular files",
                )
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        return _unreadable(file, f"cannot read: {exc.strerror or exc}")
    return parse_bytes(raw, file=file, source=source)


def _unreadable(file: str, message: str) -> ParseResult:
    return ParseResult(problems=(Problem(file=file, message=message),), unreadable=True)


def merge_files(per_file: Mapping[str, tuple[Record, ...]]) -> tuple[list[Record], list[Problem]]:
    """The records of many files of one source; a key declared again in a later file (in
    path order) is a problem of that file, and the first declaration stays."""
    seen: dict[str, Record] = {}
    problems: list[Problem] = []
    for file in sorted(per_file):
        for record in per_file[file]:
            first = seen.setdefault(record.key, record)
            if first is not record:
                problems.append(
                    Problem(
                        file=file,
                        line=record.origin.line,
                        field="metadata.name",
                        message=f"{record.key} is already declared at {first.origin.where()}; "
                        "remove one of the two",
                    )
                )
    return list(seen.values()), problems
