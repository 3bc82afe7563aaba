"""The git source: manifests in a directory of a git repository, fetched every interval.

Every git command runs in a thread (never on the event loop), in its own process group,
killed whole at `timeout`; with GIT_TERMINAL_PROMPT=0 (a remote that wants a password
fails at once instead of waiting), git's own credential helpers and GIT_SSH_COMMAND. The
URL is given on each fetch's command line without its credentials (`git_remote`: they
go through git's environment), stored nowhere under the home, and every message git
writes is redacted before hive repeats it.

A `semver:<range>` ref lists the remote's tags (`git ls-remote --tags --refs`) at each
fetch and fetches the highest that matches; its revision is `<tag>@sha1:<sha>`.

Layout, under `<home>/state/git/<name>/`: `repo/` (a shallow repository: one fetched
commit, `refs/hive/fetched`), `tree/` (the files of the last applied revision's path: the
records in force come from there, so a `file:` source relative to a manifest stays where
it was), `tree.new/` while a revision is read.

Never pruned on error: a failed fetch, a missing path, a commit with any invalid
manifest, or a commit that would remove every record (without `allow_empty`) leaves the
last applied revision's records in force, and says so on the source and in one event
per new problem.

Suspended (`suspend`), a source fetches nothing and keeps its records until `resume`,
which fetches at once; not kept across a restart. A push notification (`notify`, from
`POST /v1/hooks/{name}` once its signature holds) wakes the poll loop to fetch now."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hive.actuators.files import write_atomic
from hive.core.clock import Clock
from hive.core.parse import Problem, is_manifest_file, merge_files, parse_file
from hive.core.store import Store
from hive.errors import Conflict, ValidationFailed
from hive.model.events import Level
from hive.model.gitsource import (
    CHANGED_SHOWN,
    HISTORY,
    GitSpec,
    GitStatus,
    GitSync,
    SyncAnswer,
    is_commit,
    push_ignored,
    revision,
)
from hive.model.ids import SourceName
from hive.model.manifests import Record
from hive.model.semver import TAGS_SHOWN, choose_tag, is_semver, parse_range
from hive.model.text import REDACTED, clip, redact_text, show, show_text, show_url
from hive.narration.bus import Bus
from hive.sources.base import OnChange
from hive.sources.git_remote import PASSWORD_VAR, USER_VAR, Remote, remote
from hive.sources.hiveignore import IGNORE_FILE, MAX_BYTES, HiveIgnore

log = logging.getLogger(__name__)

#: The ref a fetched commit is kept under (so a shallow repository keeps it).
FETCHED = "refs/hive/fetched"
#: The file naming the revision tree/ holds.
APPLIED = "applied.json"
#: The file naming the revision a swap of tree/ is making the applied one (`_recover`).
APPLYING = "applying.json"
#: How many problems of one revision are narrated (`MAX_PROBLEMS` are in /v1/status).
MAX_NARRATED_PROBLEMS = 20
#: How many problems a source shows (the last says how many more there are).
MAX_PROBLEMS = 100
#: What PEP 706's filter raises for a member that would leave the tree (none without it).
_LINK_REFUSED: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)
#: The transports git may use: a URL for any other (`ext::`, which runs a command, `fd::`)
#: is refused by git itself, whatever git's configuration allows (GIT_ALLOW_PROTOCOL).
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
#: The most bytes of git's stderr kept from one command.
STDERR_LIMIT = 64 * 1024


class GitError(Exception):
    """A git command failed; the message is redacted and bounded."""


def git_dir(home: Path, name: str) -> Path:
    return home / "state" / "git" / name


def run_git(
    args: list[str], *, cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> str:
    """`git args` in `cwd`, its stdout; raises GitError (redacted) when it fails or takes
    longer than `timeout` (then its whole process group is killed: ssh, remote helpers).
    `env` is added to hive's environment (a remote's credentials, `git_remote`)."""
    extra = dict(env or {})
    env = {
        **os.environ,
        **extra,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
    }
    try:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror or exc} (install git)") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise GitError(f"git {args[0]} took longer than {timeout:g} s and was stopped") from None
    if proc.returncode != 0:
        text = err[:STDERR_LIMIT].decode(errors="replace").strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = "; ".join(lines[-3:]) or f"exit status {proc.returncode}"
        for name in (USER_VAR, PASSWORD_VAR):  # should git ever repeat one
            if len(extra.get(name, "")) >= 3:
                why = why.replace(extra[name], REDACTED)
        raise GitError(f"git {args[0]} failed: {show_text(why, 400)}")
    return out.decode(errors="replace")


@dataclass(frozen=True)
class _Read:
    """What one revision holds: its records, or its problems."""

    records: tuple[Record, ...] = ()
    problems: tuple[Problem, ...] = ()
    outcome: str = "applied"


class GitSource:
    def __init__(
        self,
        spec: GitSpec,
        *,
        home: Path,
        store: Store,
        bus: Bus,
        clock: Clock,
        on_change: OnChange,
        timeout: float = 120.0,
    ) -> None:
        self.spec = spec
        self.name = SourceName(f"git:{spec.source_name}")
        self.dir = git_dir(home, spec.source_name)
        self._repo = self.dir / "repo"
        self._tree = self.dir / "tree"
        self._store = store
        self._bus = bus
        self._clock = clock
        self._on_change = on_change
        self._timeout = timeout
        self._url = show_url(spec.url)
        #: The URL git is given and the credentials it gets through its environment.
        self._remote: Remote = remote(spec.url)
        self._status = GitStatus(
            url=self._url, ref=spec.ref, path=spec.path, interval=spec.interval
        )
        #: The problems on the source now (narrated once each).
        self._problems: tuple[Problem, ...] = ()
        #: The commit last tried, and whether it was applied.
        self._attempted: str | None = None
        self._lock = asyncio.Lock()
        #: The sync callers of `sync_now` share, while it waits for the lock.
        self._queued: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        #: Set to fetch now (a push notification, a resume, stop).
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: What the last sync that did something came to: outcome, message.
        self._outcome: tuple[str, str | None] = ("not-synced", None)
        self._secret = read_secret(spec.webhook_secret_file)
        store.register(self.name, kind="git", location=self._where())
        store.set_detail(self.name, git=self._status)

    def _where(self) -> str:
        ref = f" {self.spec.ref}" if self.spec.ref else ""
        path = f" path {self.spec.path}" if self.spec.path else ""
        return f"{self._url}{ref}{path}"

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """The records of the revision applied before hive restarted, at once (they stay in
        force however the remote is); then the first sync in the background (a slow remote
        does not hold hive's start; the source counts as not synced until a fetch works),
        and one every interval."""
        await self._load_applied()
        self._task = asyncio.create_task(self._poll(), name=f"poll {self.name}")

    async def resync(self) -> None:
        """Nothing: the source fetches on its own interval (`sync` fetches now)."""

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.spec.interval)
                if self._stop.is_set():
                    return
            first = False
            self._wake.clear()
            if self._status.suspended:
                continue
            try:
                await self.sync()
            except Exception as exc:  # a bug: told, and the next interval tries again
                log.exception("syncing %s failed", self.name)
                self._attempted = None  # the commit is read again at the next interval
                self._set_problems(
                    [
                        Problem(
                            file=self._url,
                            message=f"sync failed: {type(exc).__name__}: "
                            f"{clip(redact_text(str(exc)))} (if this repeats, please "
                            "report it with hive's log)",
                        )
                    ],
                    revision=None,
                )

    async def _load_applied(self) -> None:
        try:
            await asyncio.to_thread(self._recover)
        except OSError as exc:
            log.warning("%s: cannot tidy %s: %s", self.name, self.dir, exc)
        try:
            saved = json.loads(await asyncio.to_thread((self.dir / APPLIED).read_bytes))
            sha, rev = str(saved["sha"]), str(saved["revision"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: cannot read %s: %s", self.name, self.dir / APPLIED, exc)
            return
        if not is_commit(sha) or not self._tree.is_dir():
            return
        read = await asyncio.to_thread(self._parse, self._tree, rev)
        if read.problems:  # a hand-edited tree: the first fetch decides
            return
        self._attempted = sha
        self._outcome = ("applied", None)
        self._status = self._status.model_copy(
            update={"lastAttemptedRevision": rev, "lastAppliedRevision": rev}
        )
        self._store.set_detail(self.name, git=self._status)
        self._on_change(self._store.replace(self.name, read.records))

    # -- suspend, resume, notifications -------------------------------------------------
    @property
    def suspended(self) -> bool:
        return self._status.suspended

    def suspend(self) -> None:
        """Stop fetching (a sync under way ends); the records stay in force. Idempotent."""
        if self._status.suspended:
            return
        self._status = self._status.model_copy(update={"suspended": True})
        self._store.set_detail(self.name, git=self._status)
        self._bus.emit(
            "source_suspended",
            f"{self.name}: suspended; its {self._records_text()} of revision "
            f"{self._status.lastAppliedRevision or '(none yet)'} stay in force, nothing is "
            f"fetched until `hive source resume {self.name}`",
            data={"source": self.name, "revision": self._status.lastAppliedRevision},
        )

    def resume(self) -> None:
        """Fetch again, the first time at once. Idempotent."""
        if not self._status.suspended:
            return
        self._status = self._status.model_copy(update={"suspended": False})
        self._store.set_detail(self.name, git=self._status)
        self._bus.emit(
            "source_resumed",
            f"{self.name}: resumed; fetching now",
            data={"source": self.name},
        )
        self._wake.set()

    @property
    def has_secret(self) -> bool:
        return self._secret is not None

    def signed(self, body: bytes, signature: str | None) -> bool:
        """Whether `signature` (`X-Hub-Signature-256`: `sha256=<hex>`) is the HMAC-SHA256 of
        `body` with this source's webhook secret (compared in constant time). False without
        a secret."""
        if self._secret is None or signature is None:
            return False
        expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())

    def token_matches(self, token: str | None) -> bool:
        """Whether `token` (GitLab's `X-Gitlab-Token`: the secret itself, sent as it is) is
        this source's webhook secret (compared in constant time). False without a secret."""
        if self._secret is None or token is None:
            return False
        return hmac.compare_digest(self._secret, token.strip().encode(errors="replace"))

    def ignores_push(self, pushed: str | None) -> str | None:
        """Why a push of ref `pushed` does not concern this source (`push_ignored`), or
        None when it does or the notification names no ref."""
        return None if pushed is None else push_ignored(self.spec.ref, pushed)

    def notify(self) -> None:
        """A push notification came: fetch now, in the poll loop (not while suspended)."""
        self._refuse_if_suspended()
        self._wake.set()

    def _refuse_if_suspended(self) -> None:
        if self._status.suspended:
            raise Conflict(
                f"source {self.name} is suspended: nothing is fetched until "
                f"`hive source resume {self.name}` (POST /v1/sources/{self.name}/resume)"
            )

    async def sync_now(self) -> SyncAnswer:
        """Fetch now (`POST /v1/sources/{name}/sync`): the revision found and what became of
        it. Refused (Conflict) while suspended."""
        self._refuse_if_suspended()
        await self._sync_shared()
        outcome, message = self._outcome
        fetched = None if outcome == "fetch-failed" else self._status.lastAttemptedRevision
        return SyncAnswer(
            source=self.name,
            revision=fetched,
            lastAppliedRevision=self._status.lastAppliedRevision,
            outcome=outcome,
            message=message,
        )

    # -- syncing -------------------------------------------------------------------------
    async def sync(self) -> str | None:
        """Fetch now and apply what the fetched commit holds; the revision in force after."""
        async with self._lock:
            return await self._sync_locked()

    async def _sync_shared(self) -> None:
        """`sync`, shared by every caller that asks while it waits for the one running (a
        flood of `POST /v1/sources/{name}/sync` costs two fetches, not one each): each
        caller gets a fetch that starts after it asked."""
        queued = self._queued
        if queued is None:
            queued = self._queued = asyncio.ensure_future(self._sync_queued())
        await asyncio.shield(queued)

    async def _sync_queued(self) -> None:
        async with self._lock:
            self._queued = None  # who asks from now on waits for the next fetch
            await self._sync_locked()

    async def _sync_locked(self) -> str | None:
        try:
            fetched = await asyncio.to_thread(self._fetch)
        except GitError as exc:
            self._attempted = None  # read the commit again once a fetch works
            self._failed(
                "fetch-failed",
                None,
                [
                    Problem(
                        file=self._url,
                        message=f"{exc} (fetching again in {self.spec.interval:g} s)",
                    )
                ],
            )
            return self._status.lastAppliedRevision
        sha, name = fetched
        rev = revision(name, sha)
        update: dict[str, object] = {"lastFetchTime": self._clock.now()}
        if is_semver(self.spec.ref):
            update["chosenTag"] = name
        self._status = self._status.model_copy(update=update)
        if sha == self._attempted and rev == self._status.lastAttemptedRevision:
            # nothing new: what was said of it stands
            self._store.set_detail(self.name, git=self._status)
            if self._status.lastAppliedRevision == rev:
                self._store.mark_synced(self.name)
            return self._status.lastAppliedRevision
        self._attempted = sha
        self._status = self._status.model_copy(update={"lastAttemptedRevision": rev})
        await asyncio.to_thread(self._tidy)
        try:
            read = await asyncio.to_thread(self._read, sha, rev)
        except GitError as exc:  # a full disk, a timeout: read the commit again
            self._attempted = None
            read = _Read(
                problems=(
                    Problem(
                        file=self._url,
                        message=f"{exc} (revision {rev}; trying again in {self.spec.interval:g} s)",
                    ),
                ),
                outcome="fetch-failed",
            )
        if read.problems:
            await asyncio.to_thread(shutil.rmtree, self.dir / "tree.new", True)
            self._failed(read.outcome, rev, list(read.problems))
            return self._status.lastAppliedRevision
        refused = self._refuse_empty(read.records, rev)
        if refused is not None:
            await asyncio.to_thread(shutil.rmtree, self.dir / "tree.new", True)
            self._failed("refused-empty", rev, [refused])
            return self._status.lastAppliedRevision
        try:
            await asyncio.to_thread(self._swap_tree, sha, rev)
        except OSError as exc:  # a full disk: finish or undo it, and try again
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._recover)
            self._attempted = None
            why = f"cannot write {self._tree}: {exc.strerror or exc}"
            self._failed(
                "fetch-failed",
                rev,
                [
                    Problem(
                        file=self._url,
                        message=f"{clip(why)} (revision {rev}; trying "
                        f"again in {self.spec.interval:g} s)",
                    )
                ],
            )
            return self._status.lastAppliedRevision
        self._apply(read.records, rev)
        return rev

    def _fetch(self) -> tuple[str, str | None]:
        """Fetch the ref into the shallow repository: the fetched commit's SHA, and the ref
        its revision names (the tag a semver range chose)."""
        self._repo.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (self._repo / "HEAD").exists():
            run_git(["init", "-q", "--bare", "."], cwd=self._repo, timeout=self._timeout)
        name = self.spec.ref
        ref = name or "HEAD"
        if is_semver(name):
            name = self._choose_tag()
            ref = f"refs/tags/{name}"
        run_git(
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--depth",
                "1",
                "--",
                self._remote.url,
                f"+{ref}:{FETCHED}",
            ],
            cwd=self._repo,
            timeout=self._timeout,
            env=self._remote.env,
        )
        sha = run_git(
            ["rev-parse", "--verify", f"{FETCHED}^{{commit}}"],
            cwd=self._repo,
            timeout=self._timeout,
        ).strip()
        if is_commit(ref) and sha != ref:
            raise GitError(f"the remote sent commit {sha} for {ref}")
        return sha, name

    def _tidy(self) -> None:
        """Drop from the repository what only earlier commits used (a file a commit
        replaced would otherwise stay forever, each fetched revision adding its own): one
        pack of the fetched commit's objects. A failure (a full disk) is logged; the next
        new commit tries again."""
        try:
            run_git(["repack", "-a", "-d", "-q"], cwd=self._repo, timeout=self._timeout)
            run_git(["prune", "--expire=now"], cwd=self._repo, timeout=self._timeout)
        except GitError as exc:
            log.warning("%s: cannot tidy %s: %s", self.name, self._repo, exc)

    def _choose_tag(self) -> str:
        """The highest of the remote's tags the semver ref matches; GitError when none does
        (naming the highest version tags seen)."""
        assert self.spec.ref is not None
        listed = run_git(
            ["ls-remote", "--tags", "--refs", "--", self._remote.url],
            cwd=self._repo,
            timeout=self._timeout,
            env=self._remote.env,
        )
        tags = [
            line.split("\t", 1)[1].removeprefix("refs/tags/")
            for line in listed.splitlines()
            if "\trefs/tags/" in line
        ]
        choice = choose_tag(parse_range(self.spec.ref), tags)
        if choice.tag is not None:
            return choice.tag
        if choice.highest_seen:
            seen = ", ".join(clip(t, 60) for t in choice.highest_seen)
            more = choice.versions_seen - len(choice.highest_seen)
            seen += f" and {more} lower" if more > 0 else ""
        else:
            seen = f"none names a version, of {len(tags)} tag(s)"
        raise GitError(
            f"no tag of {self._url} matches {show(self.spec.ref)} (tags seen, the highest "
            f"{TAGS_SHOWN} at most: {seen}); the last applied revision stays in force"
        )

    def _read(self, sha: str, rev: str) -> _Read:
        """Extract the path of commit `sha` into tree.new/ and parse it, as it will be read
        from tree/ once applied (records name their files there)."""
        path = self.spec.path
        where = f"{sha}:{path}" if path else f"{sha}^{{tree}}"
        try:
            kind = run_git(["cat-file", "-t", where], cwd=self._repo, timeout=self._timeout)
        except GitError:
            kind = ""
        if kind.strip() != "tree":
            what = "is not a directory" if kind.strip() else "does not exist"
            return _Read(
                problems=(
                    Problem(
                        file=path or ".",
                        message=f"--git-path {path or '.'} {what} in revision {rev}; the last "
                        "applied revision stays in force (fix the path or the repository)",
                    ),
                ),
                outcome="path-missing",
            )
        new = self.dir / "tree.new"
        archive = self.dir / "tree.tar"
        try:
            shutil.rmtree(new, ignore_errors=True)
            new.mkdir(parents=True, mode=0o700)
            run_git(
                ["archive", "--format=tar", "-o", str(archive), where],
                cwd=self._repo,
                timeout=self._timeout,
            )
            extract_tree(archive, new)
        except _LINK_REFUSED as exc:  # the commit's fault: a link leaving the path
            member = str(getattr(getattr(exc, "tarinfo", None), "name", "")).removeprefix("./")
            prefix = f"{path}/" if path else ""
            return _Read(
                problems=(
                    Problem(
                        file=prefix + member,
                        message=f"{clip(str(exc))}: a symbolic link must stay inside "
                        f"--git-path {path or '.'} (revision {rev}; the last applied revision "
                        "stays in force)",
                    ),
                ),
                outcome="invalid",
            )
        except (OSError, tarfile.TarError) as exc:
            raise GitError(f"cannot extract the revision: {clip(str(exc))}") from None
        finally:
            with contextlib.suppress(OSError):
                archive.unlink(missing_ok=True)
        return self._parse(new, rev)

    def _parse(self, root: Path, rev: str) -> _Read:
        prefix = f"{self.spec.path}/" if self.spec.path else ""
        try:
            ignore = HiveIgnore(read_ignore_file(root / IGNORE_FILE))
        except ValueError as exc:
            problem = Problem(
                file=prefix + IGNORE_FILE,
                message=f"{exc} (revision {rev}; the last applied revision stays in force)",
            )
            return _Read(problems=(problem,), outcome="invalid")
        per_file: dict[str, tuple[Record, ...]] = {}
        problems: list[Problem] = []
        shown: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                file = Path(dirpath, filename)
                relative = file.relative_to(root).as_posix()
                if not is_manifest_file(file) or ignore.ignored(relative):
                    continue
                final = str(self._tree / relative)
                shown[final] = prefix + relative
                result = parse_file(file, source=self.name, display=final)
                problems.extend(result.problems)
                per_file[final] = result.records
        records, duplicates = merge_files(per_file)
        problems.extend(duplicates)
        if problems:
            located = tuple(
                p.model_copy(
                    update={
                        "file": shown.get(p.file, p.file),
                        # A duplicate names the other file as hive reads it: as the
                        # repository has it instead.
                        "message": f"{p.message.replace(f'{self._tree}/', prefix)} (revision "
                        f"{rev}; the last applied revision stays in force)",
                    }
                )
                for p in problems
            )
            return _Read(problems=located, outcome="invalid")
        return _Read(records=tuple(records))

    def _swap_tree(self, sha: str, rev: str) -> None:
        """tree.new/ becomes tree/, and `applied.json` names its revision (what a restarted
        hive applies before its first fetch)."""
        for _ in self._swapping(sha, rev):
            pass

    def _swapping(self, sha: str, rev: str) -> Iterator[None]:
        """The swap, one step at a time (a kill may come between any two): `applying.json`
        names the revision first, so that `_recover` can finish or undo a swap cut short.
        Yields after each step."""
        body = json.dumps({"sha": sha, "revision": rev}).encode()
        write_atomic(self.dir / APPLYING, body, mode=0o600)
        yield
        old = self.dir / "tree.old"
        shutil.rmtree(old, ignore_errors=True)
        yield
        if self._tree.exists():
            self._tree.rename(old)
            yield
        (self.dir / "tree.new").rename(self._tree)
        yield
        write_atomic(self.dir / APPLIED, body, mode=0o600)
        yield
        (self.dir / APPLYING).unlink()
        yield
        shutil.rmtree(old, ignore_errors=True)

    def _recover(self) -> None:
        """Finish or undo a swap a kill cut short, so that tree/ and `applied.json` name the
        same revision: before tree.new/ was renamed, the old tree is put back; after, the
        revision `applying.json` names is the applied one. Then what is left is removed."""
        new, old, applying = self.dir / "tree.new", self.dir / "tree.old", self.dir / APPLYING
        if applying.exists():
            if new.exists():
                if not self._tree.exists() and old.exists():
                    old.rename(self._tree)
            else:
                write_atomic(self.dir / APPLIED, applying.read_bytes(), mode=0o600)
            applying.unlink()
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        (self.dir / "tree.tar").unlink(missing_ok=True)

    def _records_in_force(self) -> int:
        """Every record of the revision in force, those for other hives too."""
        state = next(s for s in self._store.sources() if s.name == self.name)
        return state.records + state.not_selected

    def _records_text(self) -> str:
        """`7 record(s)`, and how many more are for other hives: as status counts them."""
        state = next(s for s in self._store.sources() if s.name == self.name)
        others = f" (and {state.not_selected} for other hives)" if state.not_selected else ""
        return f"{state.records} record(s){others}"

    def _refuse_empty(self, records: tuple[Record, ...], rev: str) -> Problem | None:
        had = self._records_in_force()
        if records or not had or self.spec.allow_empty:
            return None
        return Problem(
            file=self.spec.path or ".",
            message=f"revision {rev} removes every record of source {self.name} ({had} in "
            "force); refusing to delete them all (start hive with --git-allow-empty after "
            "this --git to allow it)",
        )

    # -- outcomes ------------------------------------------------------------------------
    def _record(self, sync: GitSync) -> None:
        history = (sync, *self._status.history)[:HISTORY]
        self._status = self._status.model_copy(update={"history": history})
        self._store.set_detail(self.name, git=self._status)

    def _failed(self, outcome: str, rev: str | None, problems: list[Problem]) -> None:
        self._outcome = (outcome, clip(str(problems[0]), 400))
        new = self._set_problems(problems, revision=rev)
        if new or outcome != "fetch-failed":
            self._record(
                GitSync(
                    revision=rev,
                    time=self._clock.now(),
                    outcome=outcome,
                    message=clip(str(problems[0]), 400),
                )
            )
        else:
            self._store.set_detail(self.name, git=self._status)

    def _set_problems(self, problems: list[Problem], *, revision: str | None) -> bool:
        """Show `problems` on the source (the first `MAX_PROBLEMS`, then how many more);
        narrate those not shown before. Whether any was."""
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS + 1
            problems = [
                *problems[: MAX_PROBLEMS - 1],
                Problem(
                    file=self.spec.path or ".",
                    message=f"and {more:,} more problem(s)"
                    + (f" in revision {revision}" if revision else "")
                    + " (fix those above and the rest are shown)",
                ),
            ]
        shown = set(self._problems)
        new = [p for p in problems if p not in shown]
        kept, kept_text = self._records_in_force(), self._records_text()
        for problem in new[:MAX_NARRATED_PROBLEMS]:
            self._bus.emit(
                "source_error",
                f"{self.name}: {problem} ({kept_text} of revision "
                f"{self._status.lastAppliedRevision or '(none yet)'} stay in force; nothing is "
                "pruned)",
                level=Level.ERROR,
                data={
                    "source": self.name,
                    "revision": revision,
                    "file": problem.file,
                    "line": problem.line,
                    "field": problem.field,
                    "kept_records": kept,
                },
            )
        self._problems = tuple(problems)
        self._store.set_errors(self.name, problems)
        return bool(new)

    def _apply(self, records: tuple[Record, ...], rev: str) -> None:
        self._outcome = ("applied", None)
        if self._problems:
            self._bus.emit(
                "source_error_cleared",
                f"{self.name}: revision {rev} applies",
                data={"source": self.name, "revision": rev},
            )
        self._problems = ()
        self._store.set_errors(self.name, [])
        result = self._store.replace(self.name, records)
        self._store.mark_synced(self.name)
        changed = sorted(result.changed)
        self._status = self._status.model_copy(update={"lastAppliedRevision": rev})
        self._record(
            GitSync(
                revision=rev,
                time=self._clock.now(),
                outcome="applied",
                changed=tuple(changed[:CHANGED_SHOWN]),
                changedCount=len(changed),
            )
        )
        listed = ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        )
        self._bus.emit(
            "source_synced",
            f"{self.name}: revision {rev} applied: {self._records_text()}, "
            f"{len(changed)} object(s) changed{': ' + listed if changed else ''}",
            data={
                "source": self.name,
                "revision": rev,
                "changed": changed[:CHANGED_SHOWN],
                "changed_count": len(changed),
            },
        )
        self._on_change(result)


def read_secret(path: Path | None) -> bytes | None:
    """The webhook secret in `path` (its surrounding white space dropped), or None."""
    if path is None:
        return None
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ValidationFailed(
            f"--git-webhook-secret-file {clip(str(path))}: cannot read it: "
            f"{exc.strerror or exc} (give a readable file holding the secret)"
        ) from None
    if len(secret) < 16:
        raise ValidationFailed(
            f"--git-webhook-secret-file {clip(str(path))}: the secret is shorter than 16 "
            "bytes; put a long random one there (e.g. `openssl rand -hex 32`)"
        )
    return secret


def read_ignore_file(path: Path) -> str:
    """The `.hiveignore` at `path` ('' when there is none); ValueError when it cannot be
    read or is larger than `MAX_BYTES` (only that much more is read)."""
    if not path.is_file():
        return ""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    return raw.decode(errors="replace")


def extract_tree(archive: Path, into: Path) -> None:
    """Unpack `git archive`'s tar into `into`, refusing what could write outside it. With
    PEP 706's `data` filter where Python has it (3.11.4 and later, and Debian's patched
    3.11.2); else only plain files and directories with relative paths that stay inside
    (a repository's symbolic links and special files are left out)."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
            return
        for member in tar.getmembers():
            parts = Path(member.name).parts
            inside = not Path(member.name).is_absolute() and ".." not in parts
            if inside and (member.isfile() or member.isdir()):
                member.mode = 0o755 if member.isdir() else 0o644
                tar.extract(member, into)
