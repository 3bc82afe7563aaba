"""A git source as hive's settings and status name it: where it fetches from (`GitSpec`),
its revisions (`revision`: `<ref>@sha1:<sha>`, as Flux writes them) and what `/v1/status`
shows of it (`GitStatus`, its last syncs as `GitSync`)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hive.model.ids import name_problem
from hive.model.semver import is_semver, parse_range
from hive.model.text import show, show_url
from hive.model.units import parse_duration

#: How many syncs a source's status keeps.
HISTORY = 5
#: How many changed objects one sync lists (it counts them all).
CHANGED_SHOWN = 50
#: The longest URL accepted (git passes it on command lines).
MAX_URL = 4096
#: `<transport>::<address>`: a URL for one of git's remote helpers (`ext::` runs a command).
_HELPER = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)::")
#: A full commit id.
_SHA = re.compile(r"[0-9a-f]{40}")


def is_commit(ref: str) -> bool:
    """Whether `ref` is a full commit SHA (pinned: the source never moves)."""
    return bool(_SHA.fullmatch(ref))


def revision(ref: str | None, sha: str) -> str:
    """`main@sha1:<sha>`; a pinned commit is `sha1:<sha>`; no ref: the remote's HEAD."""
    if ref is not None and is_commit(ref):
        return f"sha1:{sha}"
    return f"{ref or 'HEAD'}@sha1:{sha}"


def default_name(url: str) -> str:
    """The source name a URL gives: its last path part without `.git`, lower case, every
    other character a '-' (`https://h/org/Fleet.git` -> `fleet`); `repo` when nothing is
    left."""
    path = urlsplit(url).path if "://" in url else url.rsplit(":", 1)[-1]
    last = PurePosixPath(path.rstrip("/")).name.removesuffix(".git").lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", last).strip("-.")
    name = re.sub(r"\.{2,}", ".", name)[:63].strip("-.")
    return name or "repo"


def path_problem(path: str) -> str | None:
    """Why `path` cannot be a --git-path (a directory inside the repository), or None."""
    if path.startswith("/") or path.startswith("\\"):
        return f"{show(path)} is absolute; give a directory inside the repository"
    if ".." in PurePosixPath(path).parts:
        return f"{show(path)} leaves the repository ('..'); give a directory inside it"
    if "\0" in path:
        return "contains a NUL character"
    return None


class GitSpec(BaseModel):
    """One `--git URL [--git-ref R] [--git-path P] [--git-interval S] [--git-name N]`."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str = Field(min_length=1, repr=False)
    #: A branch, a tag, a full commit SHA or `semver:<range>` (the highest tag the npm
    #: range matches); None: the remote's HEAD.
    ref: str | None = Field(default=None, max_length=255)
    #: The directory of manifests inside the repository ('' for its root).
    path: str = Field(default="", max_length=1024)
    #: Seconds between fetches (at most a week).
    interval: float = Field(default=60.0, gt=0, le=7 * 24 * 3600)
    name: str | None = None
    #: Let a commit remove every record of the source (otherwise refused).
    allow_empty: bool = False
    #: The file holding the secret a git host signs its push notifications with
    #: (`POST /v1/hooks/{name}`); read once at start, never shown. None: no webhook.
    webhook_secret_file: Path | None = Field(default=None, repr=False)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> float:
        """Seconds, or a duration as Flux writes it (`60s`, `5m`, `1h`)."""
        return parse_duration(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if len(value) > MAX_URL:
            raise ValueError(f"is {len(value):,} characters long; at most {MAX_URL:,} are allowed")
        if value.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"{show_url(value)} is not a git URL")
        helper = _HELPER.match(value)
        if helper is not None:
            raise ValueError(
                f"{show_url(value)} names git's {show(helper.group(1))} transport, which hive "
                "does not use; give a file://, git://, http(s):// or ssh URL"
            )
        if any(c.isspace() for c in value):
            raise ValueError(
                f"{show_url(value)} holds white space; write a space as %20 "
                "(file:///srv/my%20fleet.git)"
            )
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if is_semver(value):
            try:
                parse_range(value)
            except ValueError as exc:
                raise ValueError(f"--git-ref {show(value)}: {exc}") from None
            return value
        bad = (
            not value
            or value.startswith("-")
            or ".." in value
            or any(c.isspace() or c in "~^:?*[\\" or ord(c) < 32 for c in value)
        )
        if bad:
            raise ValueError(
                f"--git-ref {show(value)} is not a branch, a tag, a full commit SHA or "
                "'semver:<range>'"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        problem = path_problem(value)
        if problem:
            raise ValueError(f"--git-path {problem}")
        return str(PurePosixPath(value)) if value.strip("/.") else ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = name_problem(value)
        if problem:
            raise ValueError(f"--git-name {problem}")
        return value

    @property
    def source_name(self) -> str:
        """The name without `git:`: --git-name, or the URL's last part."""
        return self.name or default_name(self.url)


def push_ignored(ref: str | None, pushed: str) -> str | None:
    """Why a push of `pushed` (a push notification's `ref`: `refs/heads/X`, `refs/tags/T`)
    does not concern a source following `ref`, or None when it does (the source fetches).

    A pinned commit never moves; a `semver:` range follows tags only; the remote's HEAD
    (no ref) follows a branch whose name hive does not know, so any branch push concerns
    it; a branch or tag `X` is concerned by a push of `refs/heads/X` or `refs/tags/X` (a
    ref that is not under refs/heads/ or refs/tags/ always is: hive cannot tell)."""
    if ref is not None and is_commit(ref):
        return f"the source is pinned to commit {ref}: a push never moves it"
    if pushed.startswith("refs/heads/"):
        kind, name = "branch", pushed.removeprefix("refs/heads/")
    elif pushed.startswith("refs/tags/"):
        kind, name = "tag", pushed.removeprefix("refs/tags/")
    else:
        return None
    if is_semver(ref):
        if kind == "tag":
            return None
        return f"the push is to branch {show(name)}; the source follows the tags matching {ref}"
    if ref is None:
        if kind == "branch":
            return None
        return f"the push is of tag {show(name)}; the source follows the remote's HEAD"
    if ref in (name, pushed):
        return None
    return f"the push is to {kind} {show(name)}; the source follows {show(ref)}"


class GitSync(BaseModel):
    """One sync that did something: a new revision tried, or a fetch that failed."""

    model_config = ConfigDict(frozen=True)

    #: None when the fetch failed before a commit was known.
    revision: str | None
    time: datetime
    #: applied, invalid (a manifest is wrong), path-missing, refused-empty, fetch-failed.
    outcome: str
    #: The objects (`Kind/name`) whose record changed, the first `CHANGED_SHOWN`.
    changed: tuple[str, ...] = ()
    changedCount: int = 0
    #: What went wrong (redacted, bounded), for every outcome but applied.
    message: str | None = None


class GitStatus(BaseModel):
    """The git part of a source's entry in `/v1/status`."""

    model_config = ConfigDict(frozen=True)

    #: The remote, its credentials redacted.
    url: str
    ref: str | None
    path: str
    interval: float
    lastAttemptedRevision: str | None = None
    lastAppliedRevision: str | None = None
    #: The last successful fetch.
    lastFetchTime: datetime | None = None
    #: The last `HISTORY` syncs, the newest first.
    history: tuple[GitSync, ...] = ()
    #: Suspended (`hive source suspend`): no fetch until resumed; its records stay.
    suspended: bool = False
    #: The tag a `semver:` ref chose at the last fetch that found one (None otherwise).
    chosenTag: str | None = None


class SyncAnswer(BaseModel):
    """`POST /v1/sources/{name}/sync`'s answer: the revision fetched and what became of it
    (`outcome` as `GitSync` names it; `message` says what went wrong, bounded)."""

    model_config = ConfigDict(frozen=True)

    source: str
    #: The revision the fetch found (None when the fetch failed).
    revision: str | None
    lastAppliedRevision: str | None
    outcome: str
    message: str | None = None


class SuspendAnswer(BaseModel):
    """`POST /v1/sources/{name}/suspend|resume`'s answer."""

    model_config = ConfigDict(frozen=True)

    source: str
    suspended: bool
