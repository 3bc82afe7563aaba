"""Semver refs of a git source: which tag a range chooses (a table), the ranges refused at
start, and a real GitSource on a real bare repository following a range over its tags."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hive.model.gitsource import GitSpec, push_ignored
from hive.model.semver import choose_tag, parse_range
from tests.conftest import apoll, model_yaml, run_hive
from tests.sources.test_git import Harness, Repo, applied, git

TAGS = ["v1.0.0", "v1.2.0", "1.9.0", "1.10.0", "v2.0.0-rc.1", "v2.0.0", "latest", "v3"]


@pytest.mark.parametrize(
    ("ref", "tags", "chosen"),
    [
        ("semver:>=1.2 <2", TAGS, "1.10.0"),  # 1.10 above 1.9: versions, not names
        ("semver:>=1.2, <2", TAGS, "1.10.0"),  # Flux's and Masterminds' comma: AND
        ("semver:~1.2", TAGS, "v1.2.0"),  # with a leading v
        ("semver:1.x", ["v1.2.0", "1.9.0"], "1.9.0"),
        ("semver:*", TAGS, "v2.0.0"),  # a prerelease never beats its release
        ("semver:^1.0 || ^3.1", ["v1.2.0", "v3.1.4", "v3.0.9"], "v3.1.4"),  # OR
        ("semver:^1.0 || ^3.1", ["v1.2.0", "v3.0.9"], "v1.2.0"),
        ("semver:>=2", ["v1.9.0", "v2.0.0-rc.1"], None),  # prereleases not asked for
        ("semver:>=2.0.0-rc.0", ["v1.9.0", "v2.0.0-rc.1"], "v2.0.0-rc.1"),  # asked for
        ("semver:>=2.0.0-rc.0", ["v2.0.0-rc.1", "v2.1.0-rc.1"], "v2.0.0-rc.1"),  # as npm
        ("semver:>=1", ["latest", "stable", "v3", "1.2", "release-1.0.0"], None),
        ("semver:>=1", ["1.2.0", "v1.2.0"], "v1.2.0"),  # one version: the last name
        ("semver:>=1", ["v1.2.0", "1.2.0"], "v1.2.0"),  # whatever their order
        ("semver:<1", TAGS, None),
    ],
)
def test_the_highest_matching_tag_wins(ref: str, tags: list[str], chosen: str | None) -> None:
    assert choose_tag(parse_range(GitSpec(url="file:///x", ref=ref).ref or ""), tags).tag == (
        chosen
    )


def test_no_match_names_the_highest_versions_seen() -> None:
    tags = [f"v1.{i}.0" for i in range(12)] + ["latest"]
    choice = choose_tag(parse_range("semver:>=2"), tags)
    assert choice.tag is None and choice.versions_seen == 12
    assert choice.highest_seen == ("v1.11.0", "v1.10.0", "v1.9.0", "v1.8.0", "v1.7.0")


@pytest.mark.parametrize("ref", ["semver:", "semver:  ", "semver:>=1.2 <<2", "semver:banana"])
def test_a_bad_range_is_refused_naming_the_flag(ref: str) -> None:
    with pytest.raises(ValueError, match="--git-ref") as refused:
        GitSpec(url="file:///x", ref=ref)
    assert "semver" in str(refused.value)


def test_serve_refuses_a_bad_range_at_start(tmp_path: object) -> None:
    done = run_hive(
        "serve", "--home", f"{tmp_path}/home", "--git", "file:///x", "--git-ref", "semver:>=1 <<2"
    )
    assert done.returncode != 0, done.stderr
    assert "--git-ref" in done.stderr and "not a semver range" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("ref", "pushed", "fetches"),
    [
        ("main", "refs/heads/main", True),
        ("main", "refs/heads/feature", False),
        ("main", "refs/tags/v1", False),
        ("refs/heads/main", "refs/heads/main", True),
        ("v1", "refs/tags/v1", True),  # a tag moved (force-pushed)
        ("v1", "refs/tags/v2", False),
        (None, "refs/heads/anything", True),  # HEAD's branch: hive does not know its name
        (None, "refs/tags/v1", False),
        ("semver:>=1", "refs/tags/v1.2.0", True),
        ("semver:>=1", "refs/heads/main", False),
        ("a" * 40, "refs/heads/main", False),  # a pinned commit never moves
        ("a" * 40, "refs/tags/v1", False),
        ("main", "refs/notes/commits", True),  # not a branch or tag: cannot tell
    ],
)
def test_which_pushes_concern_a_source(ref: str | None, pushed: str, fetches: bool) -> None:
    reason = push_ignored(ref, pushed)
    assert (reason is None) == fetches, reason


def names(h: Harness) -> set[str]:
    return {key.name for key in h.store.declared_keys()}


def tag(repo: Repo, name: str) -> None:
    git(repo.work, "tag", name)
    git(repo.work, "push", "-q", "origin", name)


async def test_a_range_follows_the_highest_matching_tag(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    v120 = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    tag(repo, "v1.2.0")
    v190 = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    tag(repo, "1.9.0")
    tag(repo, "not-a-version")
    repo.commit({"c.yaml": model_yaml("c", "file:/srv/c.gguf")})
    tag(repo, "v2.0.0")  # outside the range
    h = make(repo.url, ref="semver:>=1.2 <2", interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"1.9.0@sha1:{v190}", what="the highest match")
    assert names(h) == {"a", "b"}
    assert h.state.git is not None
    assert h.state.git.ref == "semver:>=1.2 <2" and h.state.git.chosenTag == "1.9.0"
    assert v120 != v190

    # A new matching tag moves the source; the branch moving does not.
    v1100 = repo.commit({"d.yaml": model_yaml("d", "file:/srv/d.gguf")})
    tag(repo, "v1.10.0")
    await apoll(lambda: applied(h) == f"v1.10.0@sha1:{v1100}", what="the new match")
    assert h.state.git is not None and h.state.git.chosenTag == "v1.10.0"
    assert names(h) == {"a", "b", "c", "d"}

    # A tag outside the range (and a prerelease) does not; the source fetches on.
    repo.commit({"e.yaml": model_yaml("e", "file:/srv/e.gguf")})
    tag(repo, "v2.1.0")
    tag(repo, "v1.11.0-rc.1")
    fetched = h.state.git.lastFetchTime
    await apoll(
        lambda: h.state.git is not None and h.state.git.lastFetchTime != fetched,
        what="another fetch",
    )
    assert applied(h) == f"v1.10.0@sha1:{v1100}"
    assert "e" not in names(h)


async def test_no_matching_tag_is_a_problem_and_prunes_nothing(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    tag(repo, "v1.0.0")
    h = make(repo.url, ref="semver:^1", interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"v1.0.0@sha1:{first}", what="applied")
    # The only matching tag is deleted: the remote's tags match no more.
    git(repo.work, "push", "-q", "origin", ":refs/tags/v1.0.0")
    tag(repo, "v2.0.0")
    tag(repo, "latest")
    await apoll(lambda: h.state.errors, what="the problem")
    message = h.state.errors[0].message
    assert f"no tag of {repo.url} matches 'semver:^1'" in message, message
    assert "v2.0.0" in message and "latest" not in message
    assert names(h) == {"a"}
    assert applied(h) == f"v1.0.0@sha1:{first}"
    assert h.state.git is not None and h.state.git.history[0].outcome == "fetch-failed"
    errors = h.events("source_error")
    assert len(errors) == 1 and "matches 'semver:^1'" in errors[0].message
