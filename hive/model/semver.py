"""A git source's semver ref (`--git-ref 'semver:>=1.2 <2'`): the range as npm reads it,
and the choice of the highest tag of a remote it matches (pure: the tags come from
`git ls-remote`, which the git source runs)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from semantic_version import NpmSpec, Version

from hive.model.text import clip, show

#: What a ref starts with to be a semver range over the remote's tags.
SEMVER_PREFIX = "semver:"
#: How many of the highest version tags a "no tag matches" message names.
TAGS_SHOWN = 5
#: A comma between two comparators (Masterminds' and Flux's AND), outside `||`.
_COMMA = re.compile(r"\s*,\s*")


def is_semver(ref: str | None) -> bool:
    """Whether `ref` is a semver range (`semver:...`)."""
    return ref is not None and ref.startswith(SEMVER_PREFIX)


def parse_range(ref: str) -> NpmSpec:
    """The npm range of `semver:<range>`: space is AND, `||` is OR, a comma is AND too (as
    Flux and Masterminds write `>=1.2, <2`); `^`, `~`, `x` and hyphen ranges as npm has
    them. ValueError (saying what is wrong) when it is not one."""
    text = ref.removeprefix(SEMVER_PREFIX).strip()
    if not text:
        raise ValueError("the range after 'semver:' is empty (e.g. 'semver:>=1.2 <2')")
    if any(ord(c) < 32 for c in text):
        raise ValueError("the range holds a control character")
    normalized = " || ".join(_COMMA.sub(" ", part.strip()) for part in text.split("||"))
    try:
        return NpmSpec(normalized)
    except ValueError as exc:
        raise ValueError(
            f"{show(text)} is not a semver range ({clip(str(exc), 120)}); write it as npm "
            "does: 'semver:>=1.2 <2', 'semver:^1.4 || ^2', 'semver:~1.2.3', 'semver:1.x'"
        ) from None


def tag_version(tag: str) -> Version | None:
    """The version a tag names (`v1.2.0` and `1.2.0` alike), or None when it names none
    (`latest`, `1.2`, `release-3`)."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return Version(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class TagChoice:
    """The highest tag the range matches (None: none does), and the highest version tags
    seen (at most `TAGS_SHOWN`, the highest first) for a message."""

    tag: str | None
    highest_seen: tuple[str, ...]
    versions_seen: int


def choose_tag(spec: NpmSpec, tags: Iterable[str]) -> TagChoice:
    """The highest tag whose version `spec` matches; prereleases match only as npm lets
    them (a comparator of the same `major.minor.patch` names a prerelease). Tags that
    name no version are left out; of two naming one version (`v1.2.0`, `1.2.0`), the
    one that sorts last by name wins, so that the choice never depends on their order."""
    versioned = sorted(
        ((version, tag) for tag in set(tags) if (version := tag_version(tag)) is not None),
        key=lambda pair: (pair[0], pair[1]),
        reverse=True,
    )
    chosen = next((tag for version, tag in versioned if spec.match(version)), None)
    return TagChoice(
        tag=chosen,
        highest_seen=tuple(tag for _, tag in versioned[:TAGS_SHOWN]),
        versions_seen=len(versioned),
    )
