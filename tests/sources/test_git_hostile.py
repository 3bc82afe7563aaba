"""The git source against hostile repositories, settings and failing machines: links that
leave the path, a pathological `.hiveignore`, git's command-running transports, an unpack
that fails once, and hive killed (SIGKILL, a real process) at every step of a tree swap."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from hive.model.gitsource import GitSpec
from hive.model.ids import Kind, ObjectKey
from hive.sources.git import MAX_PROBLEMS, GitError, run_git
from hive.sources.hiveignore import MAX_PATTERNS, HiveIgnore
from tests.conftest import apoll, model_yaml
from tests.sources.test_git import Harness, Repo, applied, git

A = ObjectKey.of(Kind.MODEL, "a")
B = ObjectKey.of(Kind.MODEL, "b")


async def test_a_link_leaving_the_path_is_a_problem_of_the_commit(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"m/a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, path="m", interval=3600)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    os.symlink("../../../../../etc/passwd", repo.work / "m" / "p.yaml")
    bad = repo.commit({"m/b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    answer = await h.source.sync_now()
    assert answer.outcome == "invalid" and answer.revision == f"HEAD@sha1:{bad}"
    assert h.keys() == {A} and applied(h) == f"HEAD@sha1:{first}"
    (problem,) = h.state.errors
    assert problem.file == "m/p.yaml" and "must stay inside --git-path m" in problem.message
    assert not (h.source.dir / "tree" / "p.yaml").exists()


async def test_an_unpack_that_fails_is_tried_again(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    """A failure of the machine (a full disk) while a commit is unpacked is not the
    commit's: once it is gone the same commit applies, with no new commit needed."""
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=3600)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    blocker = h.source.dir / "tree.new"
    blocker.write_text("x")  # where the commit is unpacked: it fails, as on a full disk
    second = repo.commit({"b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    failed = await h.source.sync_now()
    assert failed.outcome == "fetch-failed" and h.keys() == {A}
    blocker.unlink()
    again = await h.source.sync_now()
    assert again.outcome == "applied" and applied(h) == f"HEAD@sha1:{second}"
    assert h.keys() == {A, B} and h.state.errors == ()


async def test_a_pathological_hiveignore_is_refused_at_once(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    many = "\n".join(f"nothing{i}*/**/*.q" for i in range(100_000))
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=3600)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    repo.commit({".hiveignore": many + "\n", "b.yaml": model_yaml("b", "file:/srv/b.gguf")})
    answer = await h.source.sync_now()
    assert answer.outcome == "invalid" and h.keys() == {A}
    (problem,) = h.state.errors
    assert problem.file == ".hiveignore" and "KiB" in problem.message


def test_hiveignore_is_bounded_and_keeps_its_rules() -> None:
    with pytest.raises(ValueError, match="patterns"):
        HiveIgnore("\n".join(f"p{i}" for i in range(MAX_PATTERNS + 1)))
    ignore = HiveIgnore("*.tmp\n!keep.tmp\nbuild/\n/top/*.yaml\n" + "x\n" * (MAX_PATTERNS - 4))
    assert ignore.ignored("a/b.tmp") and not ignore.ignored("d/keep.tmp")
    assert ignore.ignored("build/m.yaml") and ignore.ignored("a/build/m.yaml")
    assert not ignore.ignored("build") and ignore.ignored("top/m.yaml")
    assert not ignore.ignored("a/top/m.yaml") and not ignore.ignored("m.yaml")
    assert HiveIgnore("**********\n").ignored("any/where/m.yaml")


def test_commands_running_transports_are_refused(tmp_path: Path) -> None:
    """`ext::` runs a command and `fd::` talks on hive's descriptors: refused by the
    settings, and by git itself whatever its configuration allows."""
    marker = tmp_path / "ran"
    for url in (f"ext::touch% {marker}", "fd::0", "ext::sh"):
        with pytest.raises(ValidationError, match="transport"):
            GitSpec(url=url)
    with pytest.raises(ValidationError, match="at most 4,096"):
        GitSpec(url="file:///" + "x" * 100_000)
    with pytest.raises(ValidationError, match="%20"):
        GitSpec(url="file:///srv/my fleet.git")
    repo = tmp_path / "r.git"
    repo.mkdir()
    git(repo, "init", "-q", "--bare")
    git(repo, "config", "protocol.allow", "always")  # an operator's lax configuration
    for url in (f"ext::touch {marker}", "fd::0"):
        with pytest.raises(GitError, match="not allowed"):
            run_git(["ls-remote", "--", url], cwd=repo, timeout=30)
    assert not marker.exists()


#: A child hive process that syncs the source and is SIGKILLed before its `kill_at`-th
#: change of the source's folder during the tree swap.
_CHILD = textwrap.dedent(
    """
    import asyncio, os, pathlib, shutil, signal, sys
    import hive.sources.git as g
    from hive.core.clock import SystemClock
    from hive.core.store import Store
    from hive.model.gitsource import GitSpec
    from hive.narration.bus import Bus

    url, ref, home, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    swapping, done = [False], [0]

    def counted(fn):
        def step(*a, **kw):
            if swapping[0]:
                done[0] += 1
                if done[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return step

    g.write_atomic = counted(g.write_atomic)
    g.shutil.rmtree = counted(shutil.rmtree)
    pathlib.Path.rename = counted(pathlib.Path.rename)
    pathlib.Path.unlink = counted(pathlib.Path.unlink)
    swap = g.GitSource._swap_tree
    def marked(self, *a):
        swapping[0] = True
        return swap(self, *a)
    g.GitSource._swap_tree = marked

    async def main():
        clock = SystemClock()
        source = g.GitSource(
            GitSpec(url=url, ref=ref, name="fleet", interval=3600), home=pathlib.Path(home),
            store=Store(clock=clock), bus=Bus(clock=clock), clock=clock,
            on_change=lambda r: None, timeout=60,
        )
        print(await source.sync())
    asyncio.run(main())
    """
)


async def test_a_kill_at_any_step_of_a_swap_leaves_one_whole_revision(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    one = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    two = repo.commit(
        {"a.yaml": model_yaml("a", "file:/srv/a2.gguf"), "b.yaml": model_yaml("b", "file:/b")}
    )
    gone = tmp_path / "gone.git"
    kill_at, finished = 1, False
    while not finished:
        home = tmp_path / f"home{kill_at}"
        first = Harness(home, GitSpec(url=repo.url, ref=one, name="fleet", interval=3600))
        assert await first.source.sync() == f"sha1:{one}"
        await first.source.stop()
        child = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _CHILD, repo.url, two, str(home), str(kill_at)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        finished = child.returncode == 0
        assert finished or child.returncode == -signal.SIGKILL, child.stderr
        # Restarted while the remote is away: the records of one revision, whole.
        repo.bare.rename(gone)
        spec = GitSpec(url=repo.url, ref=two, name="fleet", interval=3600)
        again = Harness(home, spec)
        await again.source.start()
        rev = applied(again)
        declared = again.keys()
        files = {k: again.store.desired(k) for k in declared}
        if rev == f"sha1:{one}":
            assert set(files) == {A}, (kill_at, files)
        else:
            assert rev == f"sha1:{two}" and set(files) == {A, B}, (kill_at, rev, files)
        record = files[A]
        file = record.origin.file if record is not None else None
        assert file is not None and file.is_file(), kill_at
        assert ("a2.gguf" in file.read_text()) == (rev == f"sha1:{two}")
        # The remote back: the next sync applies the second revision.
        gone.rename(repo.bare)
        assert await again.source.sync() == f"sha1:{two}"
        assert again.keys() == {A, B} and again.state.errors == ()
        await again.source.stop()
        kill_at += 1
    assert kill_at > 4  # the swap has several steps, each was cut short once


async def test_a_flood_of_sync_requests_shares_its_fetches(
    repo: Repo, make: Callable[..., Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that come while a sync waits to start share it: 50 at once, one fetch
    (a real `git` on PATH that notes each command it runs)."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    sha = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=3600)
    answers = await asyncio.gather(*(h.source.sync_now() for _ in range(50)))
    assert {a.lastAppliedRevision for a in answers} == {f"HEAD@sha1:{sha}"}
    assert calls.read_text().split().count("fetch") == 1
    again = await h.source.sync_now()  # a request after those fetches again
    assert again.outcome == "applied" and calls.read_text().split().count("fetch") == 2


async def test_a_commit_with_many_problems_shows_a_bounded_list(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    first = repo.commit({"a.yaml": model_yaml("a", "file:/srv/a.gguf")})
    h = make(repo.url, interval=3600)
    await h.source.start()
    await apoll(lambda: applied(h) == f"HEAD@sha1:{first}", what="applied")
    for round_ in range(2):
        bad = repo.commit({f"bad/f{i}.yaml": f"# {round_}\n" for i in range(MAX_PROBLEMS + 50)})
        answer = await h.source.sync_now()
        assert answer.outcome == "invalid" and h.keys() == {A}
        assert len(h.state.errors) == MAX_PROBLEMS
        last = h.state.errors[-1].message
        assert f"and 51 more problem(s) in revision HEAD@sha1:{bad}" in last
    assert len(h.events("source_error")) <= 2 * 20


async def test_the_repository_keeps_only_the_fetched_commit(
    repo: Repo, make: Callable[..., Harness]
) -> None:
    """A large file replaced at each commit (here outside the path) does not pile up in
    the repository under the home: only the fetched commit's objects are kept."""
    h = make(repo.url, path="m", interval=3600)
    mib = 1024 * 1024
    for round_ in range(3):
        (repo.work / "blob.bin").write_bytes(os.urandom(2 * mib))
        repo.commit({"m/a.yaml": model_yaml("a", f"file:/srv/a{round_}.gguf")})
        assert (await h.source.sync_now()).outcome == "applied"
    objects = h.source.dir / "repo" / "objects"
    kept = sum(f.stat().st_size for f in objects.rglob("*") if f.is_file())
    assert 2 * mib < kept < 3 * mib, kept
