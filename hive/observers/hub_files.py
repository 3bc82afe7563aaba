"""A Hugging Face repository's GGUF files, for the dashboard's download form
(`GET /v1/hub/files`): listed through huggingface_hub (endpoint from HF_ENDPOINT, token from
HF_TOKEN or the token file, as downloads use them), each with its size and the quantization
tag its name ends with, the parts of a split model grouped into one entry. Blocking: the
route runs it in a thread, under a timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from hive.actuators.remote import SPLIT_RE, quant_of
from hive.errors import BadRequest, HiveError, NotFound
from hive.model.text import clip, show, show_text

#: Tree entries read at most (files and folders, GGUF or not): a bigger repository is
#: listed in part, and the answer says so (`truncated`).
MAX_ENTRIES = 10_000
#: Pages of the tree read at most (the hub sends 1,000 entries a page).
MAX_PAGES = 10
#: Seconds one request to the hub may take (connect, or wait between bytes).
REQUEST_TIMEOUT = 8.0
#: GGUF entries answered at most (a split model counts once).
MAX_FILES = 1_000
#: A repository id as the hub takes it: `org/name`, each part of letters, digits, `-_.`.
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")
#: `hf://org/name`, with a file path, `:QUANT` or `@revision` after it (all ignored but
#: the revision).
_HF_URL_RE = re.compile(r"^hf://(?P<repo>[^/@:]+/[^/@:]+)(?:[/:][^@]*)?(?:@(?P<rev>.+))?$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,99}\Z")


class HubAccessDenied(HiveError):
    """The hub refused the listing (a gated or private repository, a bad token)."""

    reason = "HubAccessDenied"
    http_status = 403


class HubUnreachable(HiveError):
    """The hub did not answer, or answered with an error of its own."""

    reason = "HubUnreachable"
    http_status = 502


class HubFile(BaseModel):
    """One GGUF model of a repository: a file, or every part of a split one."""

    model_config = ConfigDict(frozen=True)

    #: The file's path in the repository (a split model's first part).
    path: str
    #: Bytes, all parts together; None when the hub did not say.
    size: int | None
    #: `Q4_K_M`, `IQ2_XS`, `F16`, … from the name; None when it names none.
    quantization: str | None
    #: Parts of a split model (1 for a single file), and those the repository holds.
    parts: int
    parts_present: int
    #: What a Model's `spec.source` (or the download job's `source`) names to fetch it.
    source: str


class HubListing(BaseModel):
    model_config = ConfigDict(frozen=True)

    repo: str
    revision: str
    files: list[HubFile]
    #: Every tag of `files`, sorted.
    quantizations: list[str]
    #: True when the repository held more than hive reads (MAX_ENTRIES / MAX_FILES).
    truncated: bool


def parse_repo(raw: str | None, revision: str | None) -> tuple[str, str]:
    """The repository id and revision of `repo` (`org/name` or `hf://org/name…`) and
    `revision` query values; BadRequest naming the parameter otherwise."""
    if not raw:
        raise BadRequest("repo: missing; send ?repo=org/name (a Hugging Face model id)")
    url_rev = None
    match = _HF_URL_RE.match(raw)
    if match is not None:
        raw, url_rev = match["repo"], match["rev"]
    if not _REPO_RE.match(raw):
        raise BadRequest(
            f"repo: {show(raw, 100)} is not a Hugging Face model id; send org/name "
            "(letters, digits, '-', '_', '.') or hf://org/name"
        )
    rev = revision if revision is not None else (url_rev or "main")
    # Sent quoted whole (`/` too) as one segment of the hub's URL.
    if not _REVISION_RE.match(rev):
        raise BadRequest(
            f"revision: {show(rev, 100)} is not a branch, tag or commit; leave it out for main"
        )
    return raw, rev


def group(paths: list[tuple[str, int | None]], *, repo: str, revision: str) -> list[HubFile]:
    """The GGUF files among `paths` (path, size), split parts grouped under their first
    part, in path order."""
    singles: list[HubFile] = []
    splits: dict[tuple[str, int], list[tuple[str, int | None]]] = {}
    for path, size in paths:
        if not path.lower().endswith(".gguf"):
            continue
        match = SPLIT_RE.search(path)
        if match is None:
            singles.append(_entry(path, size, parts=1, present=1, repo=repo, revision=revision))
        else:
            splits.setdefault((path[: match.start()], int(match.group(2))), []).append((path, size))
    for (stem, count), parts in splits.items():
        sizes = [s for _, s in parts]
        first = f"{stem}-00001-of-{count:05d}.gguf"
        singles.append(
            _entry(
                first,
                None if None in sizes else sum(s for s in sizes if s is not None),
                parts=count,
                present=len(parts),
                repo=repo,
                revision=revision,
            )
        )
    return sorted(singles, key=lambda f: f.path)


def _entry(
    path: str, size: int | None, *, parts: int, present: int, repo: str, revision: str
) -> HubFile:
    at = "" if revision == "main" else f"@{revision}"
    return HubFile(
        path=path,
        size=size,
        quantization=quant_of(path),
        parts=parts,
        parts_present=present,
        source=f"hf://{repo}/{path}{at}",
    )


def list_gguf_files(repo: str, revision: str) -> HubListing:
    """The listing of `repo` at `revision` (blocking: it asks the hub, page by page)."""
    paths: list[tuple[str, int | None]] = []
    truncated = False
    try:
        for entry in _tree(repo, revision):
            if len(paths) >= MAX_ENTRIES:
                truncated = True
                break
            if entry.get("type") == "file" and isinstance(entry.get("path"), str):
                lfs = entry.get("lfs")
                size = lfs.get("size") if isinstance(lfs, dict) else entry.get("size")
                paths.append((entry["path"], size if isinstance(size, int) else None))
    except Exception as exc:
        raise _hub_error(exc, f"{clip(repo, 200)}@{clip(revision, 100)}") from None
    files = group(paths, repo=repo, revision=revision)
    if len(files) > MAX_FILES:
        files, truncated = files[:MAX_FILES], True
    quants = sorted({f.quantization for f in files if f.quantization})
    return HubListing(
        repo=repo, revision=revision, files=files, quantizations=quants, truncated=truncated
    )


def _tree(repo: str, revision: str) -> Iterator[dict[str, Any]]:
    """The entries of the repository's tree, as `HfApi.list_repo_tree` pages through them
    (its endpoint, headers and errors), but with one retry, not five over 23 s: a form
    waits for this answer."""
    from huggingface_hub import constants, get_token, hf_raise_for_status
    from huggingface_hub.utils._http import http_backoff  # exported lazily: mypy misses it

    url: str | None = (
        f"{constants.ENDPOINT}/api/models/{repo}/tree/{quote(revision, safe='')}"
        "?recursive=true&expand=false"
    )
    token = get_token()  # HF_TOKEN, or the token file; it goes in a header, never shown
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    pages = 0
    while url is not None and pages < MAX_PAGES:
        pages += 1
        response = http_backoff(
            "GET", url, headers=headers, max_retries=1, base_wait_time=0.5, timeout=REQUEST_TIMEOUT
        )
        hf_raise_for_status(response)
        page = response.json()
        if not isinstance(page, list):
            raise ValueError(f"the hub's tree is not a list: {show(page, 80)}")
        yield from (e for e in page if isinstance(e, dict))
        url = response.links.get("next", {}).get("url")


def _hub_error(exc: Exception, shown: str) -> HiveError:
    """The answer for what huggingface_hub raised; its message bounded and redacted (it
    names URLs, never the token, which travels in a header)."""
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError) or status in (401, 403):
        return HubAccessDenied(
            f"{shown}: the hub denied access ({status}); set HF_TOKEN for hive (or run "
            "`hf auth login` as its user) with a token that can read this repository"
        )
    if isinstance(exc, errors.RepositoryNotFoundError | errors.RevisionNotFoundError) or (
        status == 404
    ):
        return NotFound(f"{shown}: no such model repository or revision on the hub")
    where = f"the hub answered {status}" if status is not None else "cannot reach the hub"
    return HubUnreachable(
        f"{shown}: {where}: {type(exc).__name__}: {show_text(str(exc))} "
        "(check HF_ENDPOINT and the network; try again later)"
    )
