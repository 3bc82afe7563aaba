"""Suspend, resume, sync and signed push hooks of a git source, against a real `hive serve`
on loopback and a real bare repository (its interval an hour: only these routes fetch)."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.api.test_openapi import SPEC_PATH, assert_valid
from tests.conftest import Hive, model_yaml, poll, run_hive
from tests.sources.test_git import Repo

TOKEN = "hook-test-token-hook-test"
SECRET = b"0123456789abcdef-webhook-secret"


def git_status(hive: Hive) -> dict[str, Any]:
    (source,) = [s for s in hive.get("/v1/status")["sources"] if s["name"] == "git:fleet"]
    git: dict[str, Any] = source["git"]
    return git


def hook(
    hive: Hive,
    body: bytes,
    signature: str | None,
    name: str = "fleet",
    *,
    gitlab_token: str | None = None,
) -> tuple[int, Any]:
    """A push notification as a git host sends it: no bearer token."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if gitlab_token is not None:
        headers["X-Gitlab-Token"] = gitlab_token
    request = urllib.request.Request(
        f"{hive.url}/v1/hooks/{name}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_suspend_resume_sync_and_signed_hooks(
    hive_factory: Callable[..., Hive], tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "r")
    first = repo.commit({"m.yaml": model_yaml("one", "file:/nonexistent/one.gguf")})
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    hive = hive_factory(
        desired=[],
        env={"HIVE_TOKEN": TOKEN},
        extra_args=[
            *("--gpu-probe", "none", "--git", repo.url, "--git-name", "fleet"),
            *("--git-interval", "3600", "--git-webhook-secret-file", str(secret)),
        ],
    )
    spec = yaml.safe_load(SPEC_PATH.read_text())
    poll(lambda: git_status(hive)["lastAppliedRevision"] == f"HEAD@sha1:{first}", what="first")

    # Suspended: a sync is refused, the records stay, status and an event say so.
    code, body = hive.post("/v1/sources/git:fleet/suspend")
    assert (code, body) == (200, {"source": "git:fleet", "suspended": True})
    assert_valid(spec, "SuspendAnswer", body)
    hive.wait_event("source_suspended")
    second = repo.commit({"m2.yaml": model_yaml("two", "file:/nonexistent/two.gguf")})
    code, body = hive.post("/v1/sources/git:fleet/sync")
    assert code == 409 and "suspended" in body["error"]["message"]
    code, body = hook(hive, b"{}", sign(b"{}"))
    assert code == 409
    status = git_status(hive)
    assert status["suspended"] is True
    assert status["lastAppliedRevision"] == f"HEAD@sha1:{first}"
    assert hive.model("one") is not None and hive.model("two") is None
    table = run_hive("get", "status", "--url", hive.url, env={"HIVE_TOKEN": TOKEN})
    assert "; suspended (`hive source resume git:fleet` fetches again)" in table.stdout

    # Resumed: fetched at once, without waiting for the interval.
    code, body = hive.post("/v1/sources/git:fleet/resume")
    assert (code, body) == (200, {"source": "git:fleet", "suspended": False})
    hive.wait_event("source_resumed")
    poll(lambda: git_status(hive)["lastAppliedRevision"] == f"HEAD@sha1:{second}", what="resume")
    assert git_status(hive)["suspended"] is False

    # Sync answers the revision it applied.
    third = repo.commit({"m3.yaml": model_yaml("three", "file:/nonexistent/three.gguf")})
    code, body = hive.post("/v1/sources/git:fleet/sync")
    assert code == 200, body
    assert body == {
        "source": "git:fleet",
        "revision": f"HEAD@sha1:{third}",
        "lastAppliedRevision": f"HEAD@sha1:{third}",
        "outcome": "applied",
        "message": None,
    }
    assert_valid(spec, "SyncAnswer", body)

    # A hook with a bad or missing signature: 401, and no fetch at all.
    fourth = repo.commit({"m4.yaml": model_yaml("four", "file:/nonexistent/four.gguf")})
    fetched = git_status(hive)["lastFetchTime"]
    payload = json.dumps({"ref": "refs/heads/main", "after": fourth}).encode()
    for signature in (None, sign(payload, b"another-secret-entirely"), "sha256=zz", ""):
        code, body = hook(hive, payload, signature)
        assert code == 401, (signature, body)
        assert SECRET.decode() not in json.dumps(body)
    code, _ = hook(hive, payload, sign(payload + b" "))  # signed over another body
    assert code == 401
    code, _ = hive.post("/v1/hooks/nosuch")  # unknown: 401 too (names nothing)
    assert code == 401
    for token in ("another-secret-entirely", SECRET.decode()[:-1], ""):  # GitLab's, wrong
        code, _ = hook(hive, payload, None, gitlab_token=token)
        assert code == 401, token
    status = git_status(hive)
    assert status["lastFetchTime"] == fetched
    assert status["lastAppliedRevision"] == f"HEAD@sha1:{third}"

    # A good signature: 202 at once, and the commit is applied.
    code, body = hook(hive, payload, sign(payload))
    assert (code, body) == (202, {"source": "git:fleet", "accepted": True})
    assert_valid(spec, "HookAccepted", body)
    poll(lambda: git_status(hive)["lastAppliedRevision"] == f"HEAD@sha1:{fourth}", what="hook")
    assert_valid(spec, "HiveStatus", hive.get("/v1/status"))

    # GitLab sends the secret itself as X-Gitlab-Token (no signature): taken too.
    fifth = repo.commit({"m5.yaml": model_yaml("five", "file:/nonexistent/five.gguf")})
    code, body = hook(hive, payload, None, gitlab_token=SECRET.decode())
    assert (code, body) == (202, {"source": "git:fleet", "accepted": True})
    poll(lambda: git_status(hive)["lastAppliedRevision"] == f"HEAD@sha1:{fifth}", what="GitLab")
    fourth = fifth

    # Unknown source: 404; a source that is not a git source: 409, saying so.
    code, body = hive.post("/v1/sources/git:nosuch/suspend")
    assert code == 404 and "git:fleet" in body["error"]["message"]
    for verb in ("suspend", "resume", "sync"):
        code, body = hive.post(f"/v1/sources/api/{verb}")
        assert code == 409 and "not a git source" in body["error"]["message"], body

    # The CLI, through the typed client.
    env = {"HIVE_TOKEN": TOKEN}
    done = run_hive("source", "suspend", "git:fleet", "--url", hive.url, env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "git:fleet: suspended"), done.stderr
    assert git_status(hive)["suspended"] is True
    done = run_hive("source", "resume", "git:fleet", "--url", hive.url, env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "git:fleet: resumed"), done.stderr
    assert git_status(hive)["suspended"] is False
    done = run_hive("source", "sync", "git:fleet", "--url", hive.url, env=env)
    assert done.returncode == 0 and f"applied HEAD@sha1:{fourth}" in done.stdout, done.stderr
    done = run_hive("source", "suspend", "api", "--url", hive.url, env=env)
    assert done.returncode == 2 and "not a git source" in done.stderr
    done = run_hive("source", "suspend", "git:fleet", "--url", hive.url)  # no token
    assert done.returncode == 2 and "Authorization: Bearer" in done.stderr, done.stderr


def test_a_source_without_a_secret_refuses_every_hook(
    hive_factory: Callable[..., Hive], tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "r")
    first = repo.commit({"m.yaml": model_yaml("one", "file:/nonexistent/one.gguf")})
    hive = hive_factory(
        desired=[],
        extra_args=["--gpu-probe", "none", "--git", repo.url, "--git-name", "fleet"],
    )
    poll(lambda: git_status(hive)["lastAppliedRevision"] == f"HEAD@sha1:{first}", what="first")
    code, body = hook(hive, b"{}", sign(b"{}"))
    assert code == 401, body


def test_an_unreadable_or_short_secret_file_stops_the_start(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    url = f"file://{tmp_path}/none.git"
    missing = tmp_path / "missing.secret"
    done = run_hive(
        "serve", "--home", home, "--git", url, "--git-webhook-secret-file", str(missing)
    )
    assert done.returncode != 0 and "cannot read it" in done.stderr, done.stderr
    short = tmp_path / "short.secret"
    short.write_text("abc\n")
    done = run_hive("serve", "--home", home, "--git", url, "--git-webhook-secret-file", str(short))
    assert done.returncode != 0 and "shorter than 16" in done.stderr, done.stderr
    assert "abc" not in done.stderr
