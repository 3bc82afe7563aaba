"""The git source against real repositories: a bare repository made by the test in a temp
dir, commits made with the `git` command, fetched over file:// by a real GitSource (and,
at the end, by a real `hive serve --git`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hive.core.clock import SystemClock
from hive.core.store import ReplaceResult, SourceState, Store
from hive.model.gitsource import GitSpec, default_name, path_problem, revision
from hive.model.ids import Kind, ObjectKey
from hive.model.text import redact_url
from hive.narration.bus import Bus
from hive.sources.git import GitError, GitSource, run_git
from hive.sources.hiveignore import HiveIgnore
from tests.api.test_openapi import SPEC_PATH, assert_valid
from tests.conftest import Hive, apoll, model_yaml, poll, run_hive

A = ObjectKey.of(Kind.MODEL, "a")
B = ObjectKey.of(Kind.MODEL, "b")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Repo:
    """A bare repository (the remote) and a clone the test commits in and pushes from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.bare.mkdir(parents=True)
        git(self.bare, "init", "-q", "--bare", "-b", "main")
        git(root, "clone", "-q", str(self.bare), str(self.work))
        git(self.work, "checkout", "-q", "-b", "main")
        self.url = f"file://{self.bare}"

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def revert(self) -> str:
        git(self.work, "revert", "--no-edit", "HEAD")
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


class Harness:
    def __init__(self, home: Path, spec: GitSpec) -> None:
        clock = SystemClock()
        self.store = Store(clock=clock)
        self.bus = Bus(clock=clock)
        self.changes: list[ReplaceResult] = []
        self.source = GitSource(
            spec,
            home=home,
            store=self.store,
            bus=self.bus,
            clock=clock,
            on_change=self.changes.append,
            timeout=30,
        )

    @property
    def state(self) -> SourceState:
        return next(s for s in self.store.sources() if s.name == self.source.name)

    def keys(self) -> set[ObjectKey]:
        return self.store.declared_keys()

    def events(self, action: str) -> list[Any]:
        return [e for e in self.bus.read(0, limit=1000)[0] if e.action == action]


def applied(h: Harness) -> str | None:
    return h.state.git.lastAppliedRevision if h.state.git else None


async def test_commit_applied_bad_commit_kept_revert_applied(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"m/a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="the first commit applied")
    assert h.keys() == {A}
    assert h.state.synced and h.state.errors == ()
    assert h.state.name == "git:remote"
    synced = h.events("source_synced")
    assert synced[-1].data["revision"] == f"HEAD@sha1:{first}"
    assert synced[-1].data["changed"] == ["Model/a"]
    # The records come from the applied tree under the home.
    record = h.store.desired(A)
    assert record is not None and record.origin.file == h.source.dir / "tree" / "m" / "a.yaml"

    bad = repo.commit(
        {
            "m/a.yaml": model_yaml("a", "file:/srv/a.gguf") + "  replicas: many\n",
            "m/b.yaml": model_yaml("b", "file:/srv/b.gguf"),
        }
    )
    await apoll(lambda: h.state.errors, what="the bad commit's error")
    assert h.keys() == {A}  # b is not applied, a is kept as it was
    assert applied(h) == f"HEAD@sha1:{first}"
    assert h.state.git is not None
    assert h.state.git.lastAttemptedRevision == f"HEAD@sha1:{bad}"
    assert len(h.state.errors) == 1
    problem = h.state.errors[0]
    assert problem.file == "m/a.yaml" and problem.line is not None
    assert bad in problem.message
    assert h.state.git.history[0].outcome == "invalid"
    errors = h.events("source_error")
    assert len(errors) == 1 and errors[0].data["revision"] == f"HEAD@sha1:{bad}"
    assert errors[0].data["file"] == "m/a.yaml" and errors[0].data["line"] == problem.line

    fixed = repo.revert()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{fixed}", what="the revert applied")
    assert h.keys() == {A} and h.state.errors == ()
    assert [s.outcome for s in h.state.git.history][:3] == ["applied", "invalid", "applied"]
    assert len(h.events("source_error")) == 1  # one event per new error, not one per poll


async def test_a_tag_and_a_commit_are_pinned(repo: Repo, make: Callable[..., Harness]) -> None:
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    git(repo.work, "tag", "v1")
    git(repo.work, "push", "-q", "origin", "v1")
    tag = make(repo.url, ref="v1", interval=0.1, name="by-tag")
    sha = make(repo.url, ref=first, interval=0.1, name="by-sha")
    await tag.source.start()
    await sha.source.start()
    await apoll(lambda: applied(tag) == f"v1@sha1:{first}", what="the tag applied")
    await apoll(lambda: applied(sha) == f"sha1:{first}", what="the commit applied")
    branch = make(repo.url, ref="main", interval=0.1, name="by-branch")
    await branch.source.start()
    second = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    await apoll(lambda: applied(branch) == f"main@sha1:{second}", what="the branch moved")
    # Both pinned sources fetched again meanwhile, and stayed where they were.
    for pinned in (tag, sha):
        fetched = pinned.state.git.lastFetchTime if pinned.state.git else None

        def fetched_again(p: Harness = pinned, f: Any = fetched) -> bool:
            return p.state.git is not None and p.state.git.lastFetchTime != f

        await apoll(fetched_again, what="another fetch")
        assert [r.key for r in pinned.store.records()] == [A]
        assert pinned.state.git is not None
        assert [s.revision for s in pinned.state.git.history] == [applied(pinned)]


async def test_a_missing_path_prunes_nothing(repo: Repo, make: Callable[..., Harness]) -> None:
    first = repo.commit({"fleet/a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, path="fleet", interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    moved = repo.commit({"fleet/a.yaml": None, "other/a.yaml": model_yaml("a", "file:/x")})
    await apoll(lambda: h.state.errors, what="the missing path")
    assert h.keys() == {A}
    assert "fleet does not exist in revision" in h.state.errors[0].message
    assert moved in h.state.errors[0].message
    assert h.state.git is not None and h.state.git.history[0].outcome == "path-missing"


async def test_a_failed_fetch_keeps_everything(
    repo: Repo, make: Callable[..., Harness], tmp_path: Path
) -> None:
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    repo.bare.rename(tmp_path / "gone.git")
    await apoll(lambda: h.state.errors, what="the fetch error")
    assert h.keys() == {A} and applied(h) == f"HEAD@sha1:{first}"
    assert "git fetch failed" in h.state.errors[0].message
    assert h.state.git is not None and h.state.git.history[0].outcome == "fetch-failed"
    # A hive restarted while the remote is away applies the revision it had applied.
    await h.source.stop()
    again = make(repo.url, interval=0.1)
    await again.source.start()
    assert again.keys() == {A} and applied(again) == f"HEAD@sha1:{first}"
    await apoll(lambda: again.state.errors, what="the fetch error after the restart")
    assert not again.state.synced  # nothing is pruned on its account meanwhile
    (tmp_path / "gone.git").rename(repo.bare)
    await apoll(lambda: not again.state.errors, what="the error cleared")
    await apoll(lambda: again.state.synced, what="synced")
    assert again.keys() == {A}


async def test_an_emptying_commit_is_refused_unless_allowed(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    refused = make(repo.url, interval=0.1, name="refused")
    allowed = make(repo.url, interval=0.1, name="allowed", allow_empty=True)
    await refused.source.start()
    await allowed.source.start()
    await apoll(lambda: refused.keys() == {A} and allowed.state.records == 1, what="applied")
    empty = repo.commit({"a.yaml": None, "README.md": "nothing here\n"})
    await apoll(lambda: refused.state.errors, what="the refusal")
    assert refused.state.records == 1
    assert "--git-allow-empty" in refused.state.errors[0].message
    assert refused.state.git is not None
    assert refused.state.git.history[0].outcome == "refused-empty"
    await apoll(lambda: applied(allowed) == f"HEAD@sha1:{empty}", what="emptied")
    assert allowed.state.records == 0


async def test_hiveignore_excludes_files(repo: Repo, make: Callable[..., Harness]) -> None:
    repo.commit(
        {
            ".hiveignore": "# drafts\ndrafts/\n*.draft.yaml\n/top.yaml\n!keep.draft.yaml\n",
            "a.yaml": model_yaml("a", "file:/srv/a.gguf"),
            "drafts/broken.yaml": "kind: [\n",
            "x.draft.yaml": "not: a manifest\n",
            "keep.draft.yaml": model_yaml("b", "file:/srv/b.gguf"),
            "top.yaml": "kind: [\n",
            "sub/top.yaml": model_yaml("c", "file:/srv/c.gguf"),
        }
    )
    h = make(repo.url, interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h), what="applied")
    assert h.state.errors == ()
    assert h.keys() == {A, B, ObjectKey.of(Kind.MODEL, "c")}


def test_hiveignore_rules() -> None:
    ignore = HiveIgnore("a/b/\n*.tmp\n!x.tmp\n/root.yaml\n")
    assert ignore.ignored("a/b/c.yaml") and ignore.ignored("q/y.tmp")
    assert not ignore.ignored("x.tmp") and not ignore.ignored("d/a/b/c.yaml")
    assert ignore.ignored("root.yaml") and not ignore.ignored("d/root.yaml")


def test_credentials_never_shown(tmp_path: Path) -> None:
    url = "https://user:s3cret-pw@git.example.invalid/org/fleet.git"
    assert "s3cret-pw" not in redact_url(url)
    spec = GitSpec(url=url)
    assert spec.source_name == "fleet"
    clock = SystemClock()
    store = Store(clock=clock)
    bus = Bus(clock=clock)
    source = GitSource(
        spec, home=tmp_path, store=store, bus=bus, clock=clock, on_change=lambda r: None
    )
    (state,) = store.sources()
    assert "s3cret-pw" not in state.location and state.git is not None
    assert "s3cret-pw" not in state.git.url
    # A fetch that fails (no such host: git names the URL in its message) shows no password.
    with pytest.raises(GitError) as failed:
        run_git(["ls-remote", "--", url], cwd=tmp_path, timeout=30)
    assert "s3cret-pw" not in str(failed.value)
    assert source.name == "git:fleet"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path


async def test_a_failed_fetch_with_credentials_shows_no_password(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    h = make("https://user:s3cret-pw@127.0.0.1:9/fleet.git", interval=60)
    await h.source.start()
    await apoll(lambda: h.state.errors, what="the fetch error")
    shown = repr(h.state) + repr([e.message for e in h.bus.read(0, limit=1000)[0]])
    shown += repr([e.data for e in h.bus.read(0, limit=1000)[0]])
    assert "s3cret-pw" not in shown and "fetch failed" in shown
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path


def test_names_paths_and_revisions() -> None:
    assert default_name("file:///srv/Fleet Repo.git/") == "fleet-repo"
    assert default_name("git@github.com:org/fleet.git") == "fleet"
    assert path_problem("../x") and path_problem("/etc") and path_problem("a/../../b")
    assert path_problem("fleet/prod") is None
    sha = "0" * 40
    assert revision("main", "abc") == "main@sha1:abc"
    assert revision(sha, sha) == f"sha1:{sha}"
    assert revision(None, "abc") == "HEAD@sha1:abc"
    with pytest.raises(ValueError, match="leaves the repository"):
        GitSpec(url="file:///x", path="../up")


def test_serve_with_git_converges_a_model(
    hive_factory: Callable[..., Hive], tmp_path: Path, tiny_model: Path
) -> None:
    repo = Repo(tmp_path / "r")
    sha = repo.commit({"fleet/m.yaml": model_yaml("from-git", f"file:{tiny_model}")})
    hive = hive_factory(
        desired=[],
        extra_args=["--git", repo.url, "--git-path", "fleet", "--git-interval", "0.2"],
    )
    hive.wait_phase("from-git", "Available")
    status = hive.get("/v1/status")
    (source,) = [s for s in status["sources"] if s["name"] == "git:remote"]
    assert source["git"]["lastAppliedRevision"] == f"HEAD@sha1:{sha}"
    assert source["git"]["history"][0]["changed"] == ["Model/from-git"]
    assert_valid(yaml.safe_load(SPEC_PATH.read_text()), "HiveStatus", status)
    poll(
        lambda: any(e.get("action") == "source_synced" for e in hive.events),
        what="the source_synced event",
    )
    assert (hive.home / "state" / "git" / "remote" / "tree" / "m.yaml").is_file()

    def ready() -> list[Any]:
        (s,) = [s for s in hive.get("/v1/status")["sources"] if s["name"] == "git:remote"]
        return [c for c in s["conditions"] if c["type"] == "Ready" and c["status"] == "True"]

    (condition,) = poll(ready, what="the source Ready")
    assert condition["message"] == f"revision HEAD@sha1:{sha}: 1 object(s) converged"
    told = poll(
        lambda: [e for e in hive.events if e.get("action") == "source_ready"],
        what="the source_ready event",
    )
    assert told[0]["data"]["revision"] == f"HEAD@sha1:{sha}"
    table = run_hive("get", "status", "--url", hive.url)
    assert f"  git:remote: applied HEAD@sha1:{sha}\n" in table.stdout, table.stdout


def test_serve_refuses_bad_git_options(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    early = run_hive("serve", "--home", home, "--git-ref", "main")
    assert early.returncode != 0 and "give --git URL first" in early.stderr
    up = run_hive("serve", "--home", home, "--git", "file:///x", "--git-path", "../up")
    assert up.returncode != 0 and "leaves the repository" in up.stderr
    twice = run_hive("serve", "--home", home, "--git", "file:///a/x", "--git", "file:///b/x")
    assert twice.returncode != 0 and "--git-name" in twice.stderr
    for result in (early, up, twice):
        assert "Traceback" not in result.stderr


async def test_an_unexpected_failure_is_told_and_the_commit_read_again(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    blocker = h.source.dir / "tree.new"
    blocker.write_text("a file where hive extracts a revision")
    second = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    await apoll(lambda: h.state.errors, what="the failure told")
    assert "cannot extract the revision: [Errno 17] File exists" in h.state.errors[0].message
    assert h.keys() == {A}
    blocker.unlink()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{second}", what="the commit read again")
    assert h.keys() == {A, B} and h.state.errors == ()


@pytest.mark.parametrize("pep706", [True, False])
def test_a_tree_is_unpacked_inside_its_directory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pep706: bool
) -> None:
    """With PEP 706's filter, or without it (Python before 3.11.4): a member that would land
    outside the tree, or a link, is never written outside it."""
    import io
    import tarfile

    from hive.sources.git import extract_tree

    if not pep706:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("fleet/m.yaml", b"ok"), ("../evil", b"x"), ("/abs-evil", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("fleet/out")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    into = tmp_path / "tree"
    into.mkdir()
    try:
        extract_tree(archive, into)
    except tarfile.TarError:
        assert pep706  # the data filter refuses the archive outright
    assert not (tmp_path / "evil").exists() and not Path("/abs-evil").exists()
    assert not (into / "fleet" / "out").is_symlink() or (
        into / "fleet" / "out"
    ).resolve().is_relative_to(into)
    if not pep706:
        assert (into / "fleet" / "m.yaml").read_bytes() == b"ok"


async def test_a_duplicate_names_both_files_as_the_repository_has_them(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"fleet/a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, path="fleet", interval=0.1)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="the first commit")
    twice = repo.commit({"fleet/x/b.yaml": model_yaml("a", "file:/srv/b.gguf")})
    await apoll(lambda: h.state.errors, what="the duplicate")
    (problem,) = h.state.errors
    assert problem.file == "fleet/x/b.yaml"
    assert "already declared at fleet/a.yaml:" in problem.message, problem.message
    assert str(h.source.dir) not in problem.message and twice in problem.message
