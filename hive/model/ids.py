"""Identifiers shared by every layer: object keys (`Kind/name`) and names."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, NewType

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from hive.model.text import show

#: A DNS-label style name: lower case letters, digits, '-' and '.', at most 63 characters.
#: (JSON Schema's form, anchored; checked with `fullmatch`: `$` alone would let a final
#: newline through, and `abc\n` would name a directory `models/abc\n/`.)
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")

#: The name of a source of desired state: a watched directory, `api`, `queen`, ...
SourceName = NewType("SourceName", str)


class Kind(StrEnum):
    MODEL = "Model"
    WORKER = "Worker"


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid object name, or None when it is."""
    if not name:
        return "must not be empty"
    if len(name) > NAME_MAX_LENGTH:
        return f"is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed"
    if ".." in name:
        return "must not contain '..'"
    if not _NAME_RE.fullmatch(name):
        return (
            f"{show(name)} is not a valid name (use lower case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return None


class ObjectKey(str):
    """`Kind/name`, the unit the reconciler works on."""

    __slots__ = ()

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls.parse, core_schema.str_schema())

    @classmethod
    def of(cls, kind: Kind, name: str) -> ObjectKey:
        return cls(f"{kind.value}/{name}")

    @property
    def kind(self) -> Kind:
        return Kind(self.split("/", 1)[0])

    @property
    def name(self) -> str:
        return self.split("/", 1)[1]

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """Parse `Kind/name`; raises ValueError with a readable message."""
        kind, sep, name = text.partition("/")
        if not sep or kind not in {k.value for k in Kind}:
            raise ValueError(
                f"{show(text)} is not an object key (use Model/<name> or Worker/<name>)"
            )
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{show(text)}: name {problem}")
        return cls.of(Kind(kind), name)
