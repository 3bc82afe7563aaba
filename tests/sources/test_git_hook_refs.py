"""A signed push notification is checked against what the source follows: against a real
`hive serve` on loopback and a real bare repository (interval an hour: only hooks fetch).
A push to another branch, or any push for a pinned commit, fetches nothing (202,
`ignored`); a push to the branch, a tag push for a semver source, or a body naming no ref
fetches; an unsigned one is still 401 first."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.api.test_openapi import SPEC_PATH, assert_valid
from tests.conftest import Hive, model_yaml, poll
from tests.sources.test_git import Repo, git
from tests.sources.test_git_hooks import SECRET, hook, sign


def status_of(hive: Hive, name: str) -> dict[str, Any]:
    (source,) = [s for s in hive.get("/v1/status")["sources"] if s["name"] == name]
    found: dict[str, Any] = source["git"]
    return found


def push(ref: str) -> bytes:
    return json.dumps({"ref": ref, "after": "0" * 40}).encode()


def ignored(hive: Hive, name: str, body: bytes) -> str:
    code, answer = hook(hive, body, sign(body), name)
    assert code == 202 and answer["accepted"] is False, answer
    reason: str = answer["ignored"]
    return reason


def test_a_hook_fetches_only_for_the_ref_the_source_follows(
    hive_factory: Callable[..., Hive], tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "r")
    first = repo.commit({"m.yaml": model_yaml("one", "file:/nonexistent/one.gguf")})
    git(repo.work, "tag", "v1.0.0")
    git(repo.work, "push", "-q", "origin", "v1.0.0")
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)
    common = ("--git-interval", "3600", "--git-webhook-secret-file", str(secret))
    hive = hive_factory(
        desired=[],
        extra_args=[
            *("--gpu-probe", "none"),
            *("--git", repo.url, "--git-name", "fleet", "--git-ref", "main", *common),
            *("--git", repo.url, "--git-name", "tagged", "--git-ref", "semver:^1", *common),
            *("--git", repo.url, "--git-name", "pinned", "--git-ref", first, *common),
        ],
    )
    spec = yaml.safe_load(SPEC_PATH.read_text())
    poll(
        lambda: (
            status_of(hive, "git:fleet")["lastAppliedRevision"] == f"main@sha1:{first}"
            and status_of(hive, "git:tagged")["lastAppliedRevision"] == f"v1.0.0@sha1:{first}"
            and status_of(hive, "git:pinned")["lastAppliedRevision"] == f"sha1:{first}"
        ),
        what="the three sources applied",
    )
    second = repo.commit({"m2.yaml": model_yaml("two", "file:/nonexistent/two.gguf")})
    fetched = status_of(hive, "git:fleet")["lastFetchTime"]

    # Unsigned: 401 before the ref is looked at.
    code, _ = hook(hive, push("refs/heads/main"), None)
    assert code == 401

    # Another branch, a tag: ignored, nothing fetched.
    for ref, shown in (("refs/heads/feature", "branch 'feature'"), ("refs/tags/v9", "tag 'v9'")):
        body = push(ref)
        code, answer = hook(hive, body, sign(body))
        assert code == 202 and answer["accepted"] is False, answer
        assert shown in answer["ignored"] and "'main'" in answer["ignored"], answer
        assert_valid(spec, "HookAccepted", answer)
    # A semver source ignores a branch push; a pinned commit ignores every push.
    for name, ref in (("tagged", "refs/heads/main"), ("pinned", "refs/tags/v2.0.0")):
        body = push(ref)
        code, answer = hook(hive, body, sign(body), name)
        assert code == 202 and answer["accepted"] is False, answer
    assert "pinned to commit" in ignored(hive, "pinned", push("refs/heads/main"))
    assert status_of(hive, "git:fleet")["lastFetchTime"] == fetched
    assert status_of(hive, "git:fleet")["lastAppliedRevision"] == f"main@sha1:{first}"

    # The followed branch: fetched and applied.
    body = push("refs/heads/main")
    code, answer = hook(hive, body, sign(body))
    assert (code, answer) == (202, {"source": "git:fleet", "accepted": True})
    poll(
        lambda: status_of(hive, "git:fleet")["lastAppliedRevision"] == f"main@sha1:{second}",
        what="the branch push applied",
    )

    # A tag push moves the semver source.
    git(repo.work, "tag", "v1.1.0")
    git(repo.work, "push", "-q", "origin", "v1.1.0")
    tag_push = push("refs/tags/v1.1.0")
    code, answer = hook(hive, tag_push, sign(tag_push), "tagged")
    assert (code, answer["accepted"]) == (202, True)
    poll(
        lambda: status_of(hive, "git:tagged")["lastAppliedRevision"] == f"v1.1.0@sha1:{second}",
        what="the tag push applied",
    )
    assert status_of(hive, "git:tagged")["chosenTag"] == "v1.1.0"

    # A body that is not JSON, or names no ref (GitHub's ping), fetches as before.
    third = repo.commit({"m3.yaml": model_yaml("three", "file:/nonexistent/three.gguf")})
    code, answer = hook(hive, b"not json", sign(b"not json"))
    assert (code, answer["accepted"]) == (202, True)
    poll(
        lambda: status_of(hive, "git:fleet")["lastAppliedRevision"] == f"main@sha1:{third}",
        what="the unparsed push applied",
    )
    assert status_of(hive, "git:pinned")["lastAppliedRevision"] == f"sha1:{first}"
