"""`.hiveignore`: files of a git source's path that are not manifests of this hive.

A subset of gitignore's syntax: one pattern a line; blank lines and `#` lines skipped;
`!pattern` takes a path back; a pattern with a `/` at its start or in its middle is
anchored at the path's root, one without matches a name at any depth; a trailing `/`
matches directories only (and so everything under them); `*`, `?` and `[...]` as fnmatch
has them (`*` may cross `/`, so `**` works as it does in git for the common cases). The
last pattern that matches decides. An ignored directory ignores all it holds.

Bounded: at most `MAX_BYTES` and `MAX_PATTERNS` patterns (a larger file is refused, as
an invalid manifest is), and the patterns are compiled once, each run of patterns of one
kind (ignoring, or taking back) into one regular expression, so a path costs a few
matches however many patterns there are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from pathlib import PurePosixPath

IGNORE_FILE = ".hiveignore"
#: The largest `.hiveignore` read (a real one is a few lines).
MAX_BYTES = 64 * 1024
#: The most patterns one `.hiveignore` may hold.
MAX_PATTERNS = 1000


@dataclass(frozen=True)
class _Rule:
    pattern: str
    negated: bool
    anchored: bool
    directory_only: bool

    def regex(self) -> str:
        """A regular expression matching the whole path (fnmatch's `*` crosses `/`, so an
        unanchored pattern matches the name, or any tail after a `/`)."""
        core = translate(self.pattern).removesuffix(r"\Z")
        return core if self.anchored else f"(?s:(?:.*/)?){core}"


@dataclass(frozen=True)
class _Run:
    """Consecutive rules of one kind: whether they take paths back, and one expression
    for a directory (every rule) and one for a file (those not ending in `/`)."""

    negated: bool
    for_dir: re.Pattern[str] | None
    for_file: re.Pattern[str] | None

    def matches(self, path: str, *, is_dir: bool) -> bool:
        pattern = self.for_dir if is_dir else self.for_file
        return pattern is not None and pattern.fullmatch(path) is not None


def _compile(rules: list[_Rule]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{r.regex()})" for r in rules)) if rules else None


class HiveIgnore:
    def __init__(self, text: str = "") -> None:
        """ValueError (saying what to do) for a file over `MAX_BYTES` or `MAX_PATTERNS`."""
        if len(text) > MAX_BYTES:
            raise ValueError(
                f"is larger than {MAX_BYTES // 1024} KiB; keep a few patterns (a directory "
                "ending in '/' leaves out all it holds)"
            )
        rules: list[_Rule] = []
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
                rules.append(_Rule(line, negated, anchored, directory_only))
        if len(rules) > MAX_PATTERNS:
            raise ValueError(
                f"holds {len(rules):,} patterns; at most {MAX_PATTERNS:,} are read (a "
                "directory ending in '/' leaves out all it holds)"
            )
        self._runs: list[_Run] = []
        start = 0
        for end in range(1, len(rules) + 1):
            if end == len(rules) or rules[end].negated != rules[start].negated:
                run = rules[start:end]
                self._runs.append(
                    _Run(
                        negated=run[0].negated,
                        for_dir=_compile(run),
                        for_file=_compile([r for r in run if not r.directory_only]),
                    )
                )
                start = end

    def _decides(self, path: str, *, is_dir: bool) -> bool:
        """The last rule that matches decides: the last run with a match."""
        for run in reversed(self._runs):
            if run.matches(path, is_dir=is_dir):
                return not run.negated
        return False

    def ignored(self, path: str) -> bool:
        """Whether the file at `path` (relative, with `/`) is ignored, or a directory above."""
        parts = PurePosixPath(path).parts
        for depth in range(1, len(parts)):
            if self._decides("/".join(parts[:depth]), is_dir=True):
                return True
        return self._decides(path, is_dir=False)
