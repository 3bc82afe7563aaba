"""`.hiveignore`: files of a git source's path that are not manifests of this hive.

A subset of gitignore's syntax: one pattern a line; blank lines and `#` lines skipped;
`!pattern` takes a path back; a pattern with a `/` at its start or in its middle is
anchored at the path's root, one without matches a name at any depth; a trailing `/`
matches directories only (and so everything under them); `*`, `?` and `[...]` as fnmatch
has them (`*` may cross `/`, so `**` works as it does in git for the common cases). The
last pattern that matches decides. An ignored directory ignores all it holds."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

IGNORE_FILE = ".hiveignore"


@dataclass(frozen=True)
class _Rule:
    pattern: str
    negated: bool
    anchored: bool
    directory_only: bool

    def matches(self, path: str, *, is_dir: bool) -> bool:
        if self.directory_only and not is_dir:
            return False
        if self.anchored:
            return fnmatchcase(path, self.pattern)
        return fnmatchcase(PurePosixPath(path).name, self.pattern) or fnmatchcase(
            path, f"*/{self.pattern}"
        )


class HiveIgnore:
    def __init__(self, text: str = "") -> None:
        self._rules: list[_Rule] = []
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            if line.startswith("\\"):
                line = line[1:]  # \# and \! stand for themselves
            directory_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            if line:
                self._rules.append(_Rule(line, negated, anchored, directory_only))

    def _decides(self, path: str, *, is_dir: bool) -> bool:
        ignored = False
        for rule in self._rules:
            if rule.matches(path, is_dir=is_dir):
                ignored = not rule.negated
        return ignored

    def ignored(self, path: str) -> bool:
        """Whether the file at `path` (relative, with `/`) is ignored, or a directory above."""
        parts = PurePosixPath(path).parts
        for depth in range(1, len(parts)):
            if self._decides("/".join(parts[:depth]), is_dir=True):
                return True
        return self._decides(path, is_dir=False)
