"""Where a network source's bytes are: `hf://` resolved through huggingface_hub (endpoint
from HF_ENDPOINT, token from HF_TOKEN or the token file), `http(s)://` through a HEAD.
Blocking: it runs in the download's thread.

The answer is a `RemoteFile`: the URL to GET (never with user info: that goes in its
headers), its size, ETag, the SHA-256 the hub vouches for, and the commit a revision
resolved to. Messages show a URL redacted and bounded (`hive.model.text.show_url`).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from hive.actuators.http_get import USER_AGENT, BadUrl, HttpGet, split_credentials
from hive.errors import PermanentError, TransientError
from hive.model.text import clip, show, show_text, show_url

_HF_RE = re.compile(
    r"^hf://(?P<repo>[^/@:]+/[^/@:]+)(?:/(?P<path>[^@:]+)|:(?P<quant>[\w.-]+))(?:@(?P<rev>.+))?$"
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Split GGUF models: `name-00001-of-00003.gguf`, llama.cpp loads the set from part 1.
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
#: A quantization tag at the end of a GGUF file name (before `.gguf` or a split suffix).
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=\.gguf$|-\d{5}-of-\d{5}\.gguf$)",
    re.IGNORECASE,
)


def quant_of(path: str) -> str | None:
    """The quantization tag a GGUF file's name ends with (`Q4_K_M`, `IQ2_XS`, `F16`, …),
    upper-cased; None when it names none."""
    match = _QUANT_RE.search(path.rsplit("/", 1)[-1])
    return match.group(1).upper() if match else None


#: Told the request in flight (None when there is none), so that a cancellation can abort it.
Watch = Callable[[HttpGet | None], None]


class Unauthorized(PermanentError):
    reason = "Unauthorized"


class RemoteNotFound(PermanentError):
    reason = "NotFound"


class AmbiguousSource(PermanentError):
    reason = "AmbiguousSource"


class RemoteFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: What to GET, without user info; it may still carry a signed query: show it redacted.
    url: str
    filename: str
    size: int | None = None
    etag: str | None = None
    #: The SHA-256 the server vouches for (the hub's LFS hash), if any.
    sha256: str | None = None
    #: The commit a hub revision resolved to.
    commit: str | None = None
    #: Headers to send with every request for these bytes (authorization: kept out of repr).
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    #: The ETag names these exact bytes, so a GET may be checked against it (and resumed
    #: with If-Range). False for a hub file, whose CDN answers with an ETag of its own (the
    #: commit in the URL pins the bytes, and the SHA-256 checks them), and for weak ETags.
    etag_checkable: bool = False


def _unquote(etag: str | None) -> str | None:
    if etag is None:
        return None
    return etag.removeprefix("W/").strip('"')


def pick_quant(files: list[str], quant: str, *, repo: str) -> str:
    """The one GGUF file of a repository for a quantization tag, as llama.cpp's
    `-hf repo:quant` picks it; the first part of a split model."""
    tag = re.compile(rf"(^|[-._/]){re.escape(quant)}([-._]|$)", re.IGNORECASE)
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    matching = sorted(f for f in ggufs if tag.search(f.rsplit("/", 1)[-1]))
    firsts = [
        f
        for f in matching
        if not re.search(r"-\d{5}-of-\d{5}\.gguf$", f) or re.search(r"-00001-of-\d{5}\.gguf$", f)
    ]
    if len(firsts) == 1:
        return firsts[0]
    known = sorted({m.group(1).upper() for f in ggufs if (m := _QUANT_RE.search(f))})
    there = clip(", ".join(known) or "none")
    source = show_url(f"hf://{repo}:{quant}")
    if not firsts:
        raise RemoteNotFound(
            f"{source}: no GGUF file with quantization {show(quant, 40)} "
            f"(quantizations there: {there})"
        )
    raise AmbiguousSource(
        f"{source}: {len(firsts)} files match: "
        f"{clip(', '.join(firsts))}; name the file instead (hf://{clip(repo)}/FILE)"
    )


def _hf_error(exc: Exception, source: str) -> Exception:
    from huggingface_hub import errors

    source = show_url(source)

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError) or status in (401, 403):
        return Unauthorized(
            f"{source}: access denied ({status}); set HF_TOKEN (or run "
            "`hf auth login`) with a token that can read this repository"
        )
    if (
        isinstance(
            exc,
            errors.RepositoryNotFoundError
            | errors.RevisionNotFoundError
            | errors.EntryNotFoundError,
        )
        or status == 404
    ):
        return RemoteNotFound(f"{source}: not found on the hub ({type(exc).__name__})")
    if status is not None and status < 500 and status != 429:
        return PermanentError(f"{source}: the hub answered {status}")
    return TransientError(
        f"{source}: cannot reach the hub: {type(exc).__name__}: {show_text(str(exc))}"
    )


def split_parts(path: str) -> list[str]:
    """Every part of a split GGUF named by any of its parts, or just `path`."""
    match = SPLIT_RE.search(path)
    if match is None:
        return [path]
    count = int(match.group(2))
    if count < 1 or count > 9999:
        raise PermanentError(f"{show_url(path)}: a split of {count} parts is not a GGUF split")
    stem = path[: match.start()]
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def _resolve_hf_blocking(source: str) -> list[RemoteFile]:
    # The file-metadata half of huggingface_hub only: its HfApi costs another 0.13 s to
    # import, and only a `:QUANT` source needs it.
    from huggingface_hub import constants, get_token
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

    match = _HF_RE.match(source)
    if match is None:
        raise PermanentError(f"{show_url(source)}: not a Hugging Face source")
    repo, path, quant = match["repo"], match["path"], match["quant"]
    revision = match["rev"] or "main"
    endpoint = constants.ENDPOINT
    token = get_token()
    try:
        if quant is not None:
            from huggingface_hub import HfApi

            files = HfApi(endpoint=endpoint).list_repo_files(repo, revision=revision, token=token)
            path = pick_quant(files, quant, repo=repo)
        assert path is not None
        parts = [
            (
                part,
                get_hf_file_metadata(
                    hf_hub_url(repo, part, revision=revision, endpoint=endpoint),
                    token=token,
                    endpoint=endpoint,
                ),
            )
            for part in split_parts(path)
        ]
    except PermanentError:
        raise
    except Exception as exc:
        raise _hf_error(exc, source) from exc
    out = []
    for part, meta in parts:
        commit = meta.commit_hash
        etag = _unquote(meta.etag)
        out.append(
            RemoteFile(
                # Pin the commit so a push during the download cannot mix two versions.
                url=hf_hub_url(repo, part, revision=commit or revision, endpoint=endpoint),
                filename=part.rsplit("/", 1)[-1],
                size=meta.size,
                etag=etag,
                sha256=etag if etag and _SHA256_RE.match(etag) else None,
                commit=commit,
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
        )
    return out


def _resolve_http(source: str, watch: Watch) -> RemoteFile:
    # The user info of the URL travels as an Authorization header, on this HEAD and on
    # every GET (and, as HttpGet does, not to another origin after a redirect).
    url, auth = split_credentials(source)
    shown = show_url(source)
    filename = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "model.gguf"
    request = HttpGet(url, {"User-Agent": USER_AGENT, **auth}, method="HEAD")
    watch(request)
    try:
        request.open()
        status, headers = request.status, request.headers
    except BadUrl as exc:
        raise PermanentError(f"{shown}: {show_text(str(exc))}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"{shown}: {type(exc).__name__}: {show_text(str(exc))}") from exc
    finally:
        watch(None)
        request.close()
    if status == 401:
        raise Unauthorized(f"{shown}: access denied ({status})")
    if status == 404:
        raise RemoteNotFound(f"{shown}: not found (404)")
    if status in (403, 405):
        # No HEAD (405), or a URL signed for GET only (403, as presigned S3/GCS URLs are):
        # learn what we can from the GET itself, which decides.
        return RemoteFile(url=url, filename=filename, headers=auth)
    if status == 429 or status >= 500:
        raise TransientError(f"{shown}: the server answered {status}")
    if status >= 400:
        raise PermanentError(f"{shown}: the server answered {status}")
    length = headers.get("Content-Length")
    etag = headers.get("ETag")
    return RemoteFile(
        url=url,  # as written, less the user info: each request follows redirects afresh
        filename=filename,
        size=int(length) if length and length.isdigit() else None,
        etag=_unquote(etag),
        etag_checkable=etag is not None and not etag.startswith("W/"),
        headers=auth,
    )


def resolve_remote(source: str, *, watch: Watch) -> list[RemoteFile]:
    """Where `source`'s bytes are, with what the server says about them: one file, or every
    part of a split model in order. Blocking. `watch` is told each HEAD request before it
    is sent (and None after), so that a cancellation can abort it; the hub's API, through
    huggingface_hub, is not interrupted (it ends within its own timeout)."""
    if source.startswith("hf://"):
        return _resolve_hf_blocking(source)
    if source.startswith(("https://", "http://")):
        base, _, query = source.partition("?")
        urls = [p + (f"?{query}" if query else "") for p in split_parts(base)]
        return [_resolve_http(url, watch) for url in urls]
    raise PermanentError(f"{show_url(source)}: not a network source")
