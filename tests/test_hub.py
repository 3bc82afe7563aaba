"""The test hub (`testkit/hub.py`) against huggingface_hub and a raw aiohttp client, on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._http import close_session

from testkit.hub import Hub, ThreadedHub, hf_env, use_hub_in_process

REPO = "org/model-GGUF"
DATA = bytes(range(256)) * 40  # 10 KiB
README = b"# model card\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def thub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedHub]:
    real_connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"huggingface_hub tried to reach {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    with ThreadedHub(tree_page_size=2) as hub:
        use_hub_in_process(monkeypatch, hub, tmp_path / "hf-home")
        hub.add_file(REPO, "model-Q4_K_M.gguf", DATA)
        hub.add_file(REPO, "README.md", README, lfs=False)
        hub.add_file(REPO, "split/model-00001-of-00002.gguf", DATA[:100])
        hub.add_file(REPO, "split/model-00002-of-00002.gguf", DATA[100:])
        yield hub
        close_session()  # its pooled connections point at this hub


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as h:
        h.add_file(REPO, "model.gguf", DATA)
        h.add_file(REPO, "README.md", README, lfs=False)
        yield h


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ─── huggingface_hub against the hub ────────────────────────────────────────────────────


def test_hf_hub_download_lfs_file(thub: ThreadedHub, tmp_path: Path) -> None:
    path = hf_hub_download(
        REPO, "model-Q4_K_M.gguf", cache_dir=tmp_path / "cache", endpoint=thub.url
    )
    assert Path(path).read_bytes() == DATA
    # huggingface_hub names the blob by the sha256 it read from X-Linked-Etag
    assert Path(path).resolve().name == sha256(DATA)
    assert f"snapshots/{thub.commit(REPO)}/" in path
    head, get = thub.requests_to("resolve")[0], thub.requests_to("cdn")[0]
    assert (head.method, head.status) == ("HEAD", 302)
    assert (get.method, get.status, get.sent) == ("GET", 200, len(DATA))
    assert len(thub.requests) == 2  # it reads the 302 and does not follow it off-origin


def test_hf_hub_download_plain_file_without_endpoint_argument(
    thub: ThreadedHub, tmp_path: Path
) -> None:
    # use_hub_in_process patched huggingface_hub.constants.ENDPOINT: no endpoint= needed
    path = hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == README
    assert Path(path).resolve().name == git_blob_sha1(README)
    assert [(r.method, r.route, r.status) for r in thub.requests] == [
        ("HEAD", "resolve", 200),
        ("GET", "resolve", 200),
    ]


def test_get_hf_file_metadata(thub: ThreadedHub) -> None:
    url = hf_hub_url(REPO, "model-Q4_K_M.gguf", endpoint=thub.url)
    assert url == thub.resolve_url(REPO, "model-Q4_K_M.gguf")
    meta = get_hf_file_metadata(url)
    assert meta.commit_hash == thub.commit(REPO)
    assert len(meta.commit_hash or "") == 40
    assert meta.etag == sha256(DATA)
    assert meta.size == len(DATA)
    assert meta.location.startswith(f"{thub.cdn_base}/cdn/{sha256(DATA)}?")
    assert thub.cdn_base != thub.url


def test_revision_by_commit_id_and_old_commits_stay(thub: ThreadedHub, tmp_path: Path) -> None:
    old = thub.commit(REPO)
    new_file = thub.change_etag(REPO, "model-Q4_K_M.gguf", keep_old_blob=True)
    assert thub.commit(REPO) != old
    assert get_hf_file_metadata(thub.resolve_url(REPO, "model-Q4_K_M.gguf")).etag == (
        new_file.sha256
    )
    path = hf_hub_download(REPO, "model-Q4_K_M.gguf", revision=old, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == DATA


def test_list_repo_files_tree_and_model_info(thub: ThreadedHub) -> None:
    api = HfApi(endpoint=thub.url)
    files = api.list_repo_files(REPO)  # 6 entries, 2 a page: follows the Link header
    assert sorted(files) == [
        "README.md",
        "model-Q4_K_M.gguf",
        "split/model-00001-of-00002.gguf",
        "split/model-00002-of-00002.gguf",
    ]
    assert sum(r.route == "api" for r in thub.requests) == 3
    top = {e.path: e for e in api.list_repo_tree(REPO)}
    assert set(top) == {"README.md", "model-Q4_K_M.gguf", "split"}
    gguf = top["model-Q4_K_M.gguf"]
    assert gguf.lfs is not None and gguf.lfs.sha256 == sha256(DATA)  # type: ignore[union-attr]
    assert gguf.size == len(DATA)  # type: ignore[union-attr]
    assert top["README.md"].lfs is None  # type: ignore[union-attr]
    sub = [e.path for e in api.list_repo_tree(REPO, "split")]
    assert sub == ["split/model-00001-of-00002.gguf", "split/model-00002-of-00002.gguf"]
    info = api.model_info(REPO, revision="main", files_metadata=True)
    assert info.sha == thub.commit(REPO)
    assert info.siblings is not None
    by_name = {s.rfilename: s for s in info.siblings}
    assert by_name["model-Q4_K_M.gguf"].lfs is not None
    assert by_name["model-Q4_K_M.gguf"].size == len(DATA)
    assert api.model_info(REPO).sha == thub.commit(REPO)


def test_not_found_errors(thub: ThreadedHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.gguf", cache_dir=cache, endpoint=thub.url)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "model.gguf", cache_dir=cache, endpoint=thub.url)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "README.md", revision="v9", cache_dir=cache, endpoint=thub.url)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=thub.url).list_repo_files("org/nope")
    with pytest.raises(EntryNotFoundError):
        list(HfApi(endpoint=thub.url).list_repo_tree(REPO, "no/such/dir"))


def test_token_required(thub: ThreadedHub, tmp_path: Path) -> None:
    thub.require_token("secret")
    cache = tmp_path / "cache"
    # anonymous: 401 + RepoNotFound, as huggingface.co answers for a private repo
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        hf_hub_download(REPO, "model-Q4_K_M.gguf", cache_dir=cache, endpoint=thub.url)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as wrong:
        hf_hub_download(REPO, "model-Q4_K_M.gguf", cache_dir=cache, token="x", endpoint=thub.url)
    assert wrong.value.response.status_code == 401
    assert not isinstance(wrong.value, RepositoryNotFoundError)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=thub.url).list_repo_files(REPO)

    thub.clear_requests()
    path = hf_hub_download(REPO, "model-Q4_K_M.gguf", cache_dir=cache, token="secret")
    assert Path(path).read_bytes() == DATA
    assert HfApi(endpoint=thub.url, token="secret").list_repo_files(REPO)
    # the token went to the hub, not to the CDN (another origin): its URL is signed
    assert thub.requests_to("resolve")[0].headers["Authorization"] == "Bearer secret"
    assert "Authorization" not in thub.requests_to("cdn")[0].headers


def test_token_from_hf_token_env(
    thub: ThreadedHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thub.require_token("secret")
    monkeypatch.setenv("HF_TOKEN", "secret")  # read per call
    meta = get_hf_file_metadata(thub.resolve_url(REPO, "README.md"))
    assert meta.etag == git_blob_sha1(README)


def test_hf_hub_download_resumes_after_a_dropped_connection(
    thub: ThreadedHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # http_get reads in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and resumes (after a 1 s sleep)
    # from the last whole piece: bytes of a partial piece are lost and fetched again.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    thub.drop_after(3500)
    path = hf_hub_download(REPO, "model-Q4_K_M.gguf", cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == DATA
    first, second = thub.requests_to("cdn")
    assert (first.fault, first.sent, first.aborted) == ("drop", 3500, True)
    assert (second.range, second.status, second.sent) == ("bytes=3072-", 206, len(DATA) - 3072)
    assert thub.body_bytes_sent("cdn") == len(DATA) + 3500 - 3072


def test_cdn_on_the_same_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ThreadedHub(cdn_same_origin=True) as hub:
        use_hub_in_process(monkeypatch, hub, tmp_path / "home")
        hub.add_file(REPO, "model.gguf", DATA)
        assert hub.cdn_base == hub.url
        # huggingface_hub follows a same-origin 302 on its HEAD, so the CDN answers carry
        # the commit and linked etag too
        meta = get_hf_file_metadata(hub.resolve_url(REPO, "model.gguf"))
        assert (meta.commit_hash, meta.etag, meta.size) == (
            hub.commit(REPO),
            sha256(DATA),
            len(DATA),
        )
        path = hf_hub_download(REPO, "model.gguf", cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == DATA
        close_session()


def test_hf_env_for_subprocesses(thub: ThreadedHub, tmp_path: Path) -> None:
    env = hf_env(thub, tmp_path)
    assert env["HF_ENDPOINT"] == thub.url
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["HF_HOME"] == str(tmp_path)
    assert os.environ["HF_ENDPOINT"] == thub.url  # use_hub_in_process set it here too


# ─── raw HTTP: what hive's aiohttp downloader sees ──────────────────────────────────────


async def test_resolve_redirects_lfs_files_to_the_cdn(
    hub: Hub, session: aiohttp.ClientSession
) -> None:
    f = hub.file(REPO, "model.gguf")
    async with session.head(hub.resolve_url(REPO, "model.gguf"), allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["X-Repo-Commit"] == hub.commit(REPO)
        assert r.headers["X-Linked-Etag"] == f'"{sha256(DATA)}"'
        assert r.headers["X-Linked-Size"] == str(len(DATA))
        assert r.headers["ETag"] == f'"{f.oid}"'
        location = r.headers["Location"]
        assert location.startswith(f"{hub.cdn_base}/cdn/{sha256(DATA)}?")
        assert "sig=" in location
    async with session.head(location) as r:
        assert r.status == 200
        assert r.headers["ETag"] == f'"{sha256(DATA)}"'
        assert r.headers["Content-Length"] == str(len(DATA))
        assert r.headers["Accept-Ranges"] == "bytes"
        assert "X-Repo-Commit" not in r.headers  # a CDN knows nothing of repos
        assert await r.read() == b""
    async with session.get(hub.resolve_url(REPO, "model.gguf")) as r:  # follows
        assert r.status == 200
        assert [h.status for h in r.history] == [302]
        assert await r.read() == DATA
    assert hub.requests[-1].sent == len(DATA)
    assert hub.requests[1].sent == 0  # HEAD


async def test_plain_file_and_commit_revision(hub: Hub, session: aiohttp.ClientSession) -> None:
    url = hub.resolve_url(REPO, "README.md", revision=hub.commit(REPO))
    async with session.get(url) as r:
        assert r.status == 200
        assert r.headers["ETag"] == f'"{git_blob_sha1(README)}"'
        assert r.headers["X-Repo-Commit"] == hub.commit(REPO)
        assert "X-Linked-Etag" not in r.headers
        assert await r.read() == README


async def test_a_plain_file_behind_basic_credentials_and_a_token(
    hub: Hub, session: aiohttp.ClientSession
) -> None:
    hub.add_plain_file("files/m.gguf", DATA, basic=("alice", "pw"), token="tok")
    url = f"{hub.url}/files/m.gguf"
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:no").decode()}
    for method in ("HEAD", "GET"):
        async with session.request(method, url + "?token=tok") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with session.request(method, url + "?token=tok", headers=wrong) as r:
            assert r.status == 401
        async with session.request(method, url + "?token=bad", headers=good) as r:
            assert r.status == 403
    async with session.get(url + "?token=tok", headers={**good, "Range": "bytes=10-"}) as r:
        assert r.status == 206
        assert r.headers["ETag"] == f'"{sha256(DATA)}"'
        assert await r.read() == DATA[10:]
    assert {r.route for r in hub.requests} == {"plain"}


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=1000-", 206, DATA[1000:], f"bytes 1000-{len(DATA) - 1}/{len(DATA)}"),
        ("bytes=10-19", 206, DATA[10:20], f"bytes 10-19/{len(DATA)}"),
        ("bytes=-5", 206, DATA[-5:], f"bytes {len(DATA) - 5}-{len(DATA) - 1}/{len(DATA)}"),
        ("bytes=0-999999", 206, DATA, f"bytes 0-{len(DATA) - 1}/{len(DATA)}"),
        (f"bytes={len(DATA)}-", 416, b"", f"bytes */{len(DATA)}"),
        ("bytes=0-1,5-6", 200, DATA, None),  # multi-range: the whole file, as servers may
    ],
)
async def test_ranges(
    hub: Hub,
    session: aiohttp.ClientSession,
    header: str,
    status: int,
    body: bytes,
    content_range: str | None,
) -> None:
    async with session.get(hub.resolve_url(REPO, "model.gguf"), headers={"Range": header}) as r:
        assert r.status == status
        assert r.headers.get("Content-Range") == content_range
        assert await r.read() == body
    rec = hub.requests_to("cdn")[-1]
    assert (rec.range, rec.status, rec.sent) == (header, status, len(body))


async def test_if_range_with_a_stale_etag_gets_the_whole_new_file(
    hub: Hub, session: aiohttp.ClientSession
) -> None:
    url = hub.cdn_url(REPO, "model.gguf")
    async with session.get(url, headers={"Range": "bytes=100-", "If-Range": '"stale"'}) as r:
        assert r.status == 200
        assert await r.read() == DATA
    etag = f'"{sha256(DATA)}"'
    async with session.get(url, headers={"Range": "bytes=100-", "If-Range": etag}) as r:
        assert r.status == 206


async def test_errors_carry_hub_error_codes(hub: Hub, session: aiohttp.ClientSession) -> None:
    cases = [
        (hub.resolve_url(REPO, "nope.gguf"), "EntryNotFound"),
        (hub.resolve_url("org/nope", "x.gguf"), "RepoNotFound"),
        (hub.resolve_url(REPO, "x.gguf", revision="v2"), "RevisionNotFound"),
        (f"{hub.url}/api/models/org/nope/tree/main", "RepoNotFound"),
        (f"{hub.url}/api/models/{REPO}/revision/v2", "RevisionNotFound"),
    ]
    for url, code in cases:
        async with session.get(url) as r:
            assert r.status == 404, url
            assert r.headers["X-Error-Code"] == code
            assert "error" in await r.json()
    async with session.get(f"{hub.cdn_base}/cdn/{'0' * 64}") as r:
        assert r.status == 404


async def test_require_token_and_signed_cdn_urls(hub: Hub, session: aiohttp.ClientSession) -> None:
    hub.require_token("secret")
    url = hub.resolve_url(REPO, "model.gguf")
    async with session.get(url) as r:
        assert r.status == 401
        assert r.headers["X-Error-Code"] == "RepoNotFound"
    async with session.get(url, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
        assert "X-Error-Code" not in r.headers
    async with session.get(f"{hub.url}/api/models/{REPO}") as r:
        assert r.status == 401
    # aiohttp drops Authorization on the cross-origin redirect; the signature carries it
    async with session.get(url, headers={"Authorization": "Bearer secret"}) as r:
        assert r.status == 200
        assert await r.read() == DATA
    assert "Authorization" not in hub.requests_to("cdn")[-1].headers
    cdn = hub.cdn_url(REPO, "model.gguf")
    async with session.get(cdn.replace("sig=", "sig=0")) as r:
        assert r.status == 401
    async with session.get(cdn.split("?")[0], headers={"Authorization": "Bearer secret"}) as r:
        assert r.status == 200
    hub.require_token(None)
    async with session.get(url) as r:
        assert r.status == 200


async def _read_into(
    session: aiohttp.ClientSession, url: str, into: bytearray, headers: dict[str, str]
) -> int:
    async with session.get(url, headers=headers) as r:
        async for chunk in r.content.iter_any():
            into += chunk
        return r.status


async def test_drop_after(hub: Hub, session: aiohttp.ClientSession) -> None:
    url = hub.resolve_url(REPO, "model.gguf")
    hub.drop_after(1234)
    with pytest.raises(aiohttp.ClientPayloadError):
        await _read_into(session, url, bytearray(), {})
    rec = hub.requests_to("cdn")[-1]
    assert (rec.status, rec.fault, rec.sent, rec.aborted) == (200, "drop", 1234, True)
    # bytes are counted from the start of each response's body, ranges included
    hub.drop_after(100, times=2)
    got = bytearray()
    for _ in range(2):
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read_into(session, url, got, {"Range": f"bytes={5000 + len(got)}-"})
    assert bytes(got) == DATA[5000:5200]
    assert [r.status for r in hub.requests_to("cdn")[-2:]] == [206, 206]
    got.clear()
    assert await _read_into(session, url, got, {}) == 200  # times is spent
    assert bytes(got) == DATA


async def test_throttle(hub: Hub, session: aiohttp.ClientSession) -> None:
    big = os.urandom(60_000)
    hub.add_file(REPO, "big.gguf", big)
    hub.throttle(200_000)  # 60 kB at 200 kB/s: ≥ 0.3 s
    t0 = time.monotonic()
    async with session.get(hub.resolve_url(REPO, "big.gguf")) as r:
        assert await r.read() == big
    assert time.monotonic() - t0 >= 0.28
    hub.reset_faults()
    t0 = time.monotonic()
    async with session.get(hub.resolve_url(REPO, "big.gguf")) as r:
        assert await r.read() == big
    assert time.monotonic() - t0 < 0.25


async def test_client_going_away_is_recorded(hub: Hub, session: aiohttp.ClientSession) -> None:
    hub.throttle(50_000)
    async with session.get(hub.resolve_url(REPO, "model.gguf")) as r:
        await r.content.readexactly(10)
        r.close()  # drop the connection mid-body, as a killed process would
    deadline = time.monotonic() + 5
    while not hub.requests_to("cdn")[-1].aborted:
        assert time.monotonic() < deadline, hub.requests
        await asyncio.sleep(0.02)
    assert hub.requests_to("cdn")[-1].sent < len(DATA)


async def test_fail_next(hub: Hub, session: aiohttp.ClientSession) -> None:
    hub.fail_next(503, times=2)
    url = hub.resolve_url(REPO, "model.gguf")
    for _ in range(2):
        async with session.get(url) as r:
            assert r.status == 503
    async with session.get(url) as r:
        assert r.status == 200
    hub.fail_next(429, retry_after=7)
    async with session.get(url) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "7"
    # after the redirect: the CDN fails
    hub.fail_next(500, routes=["cdn"])
    async with session.get(url) as r:
        assert r.status == 500
        assert [h.status for h in r.history] == [302]
    assert [r.fault for r in hub.requests if r.fault] == ["fail"] * 4
    hub.fail_next(500, routes=["api"])
    async with session.get(f"{hub.url}/api/models/{REPO}") as r:
        assert r.status == 500


async def test_corrupt(hub: Hub, session: aiohttp.ClientSession) -> None:
    hub.corrupt(times=1)
    url = hub.resolve_url(REPO, "model.gguf")
    async with session.get(url) as r:
        body = await r.read()
        assert r.headers["ETag"] == f'"{sha256(DATA)}"'
        assert len(body) == len(DATA)
        assert body != DATA
    async with session.get(url) as r:
        assert await r.read() == DATA
    hub.corrupt()  # until reset, ranges too
    async with session.get(url, headers={"Range": "bytes=10-"}) as r:
        assert await r.read() != DATA[10:]
    hub.reset_faults()
    async with session.get(url) as r:
        assert await r.read() == DATA


async def test_change_etag_and_replace_file(
    hub: Hub, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    old_commit, old_cdn = hub.commit(REPO), hub.cdn_url(REPO, "model.gguf")
    new = hub.change_etag(REPO, "model.gguf")
    assert new.sha256 != sha256(DATA)
    assert new.size == len(DATA)
    assert hub.commit(REPO) != old_commit
    async with session.head(hub.resolve_url(REPO, "model.gguf"), allow_redirects=False) as r:
        assert r.headers["X-Linked-Etag"] == f'"{new.sha256}"'
        assert r.headers["X-Repo-Commit"] == hub.commit(REPO)
    async with session.get(hub.resolve_url(REPO, "model.gguf")) as r:
        body = await r.read()
        assert sha256(body) == new.sha256
        assert len(body) == len(DATA)
    async with session.get(old_cdn, headers={"Range": "bytes=100-"}) as r:
        assert r.status == 404  # the old blob is gone: a resume must re-resolve
    # a file on disk, streamed in chunks
    disk = tmp_path / "v2.gguf"
    payload = os.urandom(3 * 256 * 1024 + 17)
    disk.write_bytes(payload)
    v2 = hub.replace_file(REPO, "model.gguf", disk)
    assert v2.sha256 == sha256(payload)
    async with session.get(hub.resolve_url(REPO, "model.gguf")) as r:
        assert await r.read() == payload
    v3 = hub.change_etag(REPO, "model.gguf")
    async with session.get(hub.resolve_url(REPO, "model.gguf"), headers={"Range": "bytes=7-"}) as r:
        assert r.status == 206
        tail = await r.read()
        assert tail == bytes((b + 1) % 256 for b in payload[7:])
    assert v3.sha256 == sha256(bytes((b + 1) % 256 for b in payload))


async def test_request_log(hub: Hub, session: aiohttp.ClientSession) -> None:
    async with session.get(hub.resolve_url(REPO, "model.gguf"), headers={"Range": "bytes=4000-"}):
        pass
    async with session.get(f"{hub.url}/api/models/{REPO}/tree/main?recursive=true") as r:
        assert {e["path"] for e in await r.json()} == {"model.gguf", "README.md"}
    resolve, cdn, api = hub.requests
    assert (resolve.method, resolve.route, resolve.status, resolve.range) == (
        "GET",
        "resolve",
        302,
        "bytes=4000-",
    )
    assert (cdn.route, cdn.status, cdn.range_start, cdn.sent) == ("cdn", 206, 4000, 6240)
    assert (api.route, api.query) == ("api", "recursive=true")
    assert hub.body_bytes_sent("cdn") == len(DATA) - 4000
    assert hub.body_bytes_sent("cdn") < 1.1 * len(DATA)
    hub.clear_requests()
    assert hub.requests == []


async def test_threaded_hub_from_async_code(session: aiohttp.ClientSession) -> None:
    th = ThreadedHub().start()
    try:
        th.add_file(REPO, "a.gguf", b"abc")
        async with session.get(th.resolve_url(REPO, "a.gguf")) as r:
            assert await r.read() == b"abc"
    finally:
        th.stop()
    th.stop()  # idempotent


def test_stop_ends_downloads_in_flight() -> None:
    hub = ThreadedHub().start()
    hub.add_file(REPO, "a.gguf", DATA)
    hub.throttle(1000)  # ten seconds for DATA
    errors: list[BaseException] = []

    def download() -> None:
        try:
            with urllib.request.urlopen(hub.resolve_url(REPO, "a.gguf"), timeout=10) as r:
                r.read()
        except Exception as exc:
            errors.append(exc)

    client = threading.Thread(target=download)
    client.start()
    deadline = time.monotonic() + 5
    while not any(r.sent for r in hub.requests_to("cdn")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    hub.stop()
    assert time.monotonic() - t0 < 2
    client.join(5)
    assert len(errors) == 1  # a short body, not a hang
    assert hub.requests_to("cdn")[0].aborted
