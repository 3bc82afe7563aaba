"""The watched-directory source: manifest files under a directory, followed with inotify
on Linux (`tree_watch`), with watchfiles elsewhere or when asked (`portable_tree_watch`).
Each file's last good records stay in force while it is broken, and a directory that
suddenly holds nothing does not delete them all (see `ALLOW_EMPTY_MARKER`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from hive.core.parse import ParseResult, Problem, is_manifest_file, merge_files, parse_file
from hive.core.store import Store
from hive.model.events import Level
from hive.model.ids import SourceName
from hive.model.manifests import Record
from hive.model.text import clip, redact_text
from hive.narration.bus import Bus
from hive.platform import native_watch
from hive.sources.base import OnChange
from hive.sources.hiveignore import IGNORE_FILE, HiveIgnore
from hive.sources.portable_tree_watch import PortableTreeWatch
from hive.sources.tree_watch import ALLOW_EMPTY_MARKER, TreeChanges, TreeWatch

log = logging.getLogger(__name__)

#: What says a file is the same as when it was read: mtime, size, inode, and ctime (a
#: chmod changes only the ctime, and may make a readable file unreadable or back).
Stamp = tuple[int, int, int, int]
#: How many problems of one file are narrated (all of them are in /v1/status).
MAX_NARRATED_PROBLEMS = 20


def scan_manifest_files(root: Path) -> list[Path] | Problem:
    """Every manifest file under `root` (hidden directories skipped), or why `root` cannot
    be read: a missing or unreadable directory is an error, never an empty set."""
    if not root.exists():
        return Problem(file=str(root), message="directory does not exist")
    if not root.is_dir():
        return Problem(file=str(root), message="is not a directory")
    found: list[Path] = []
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if is_manifest_file(Path(f)))
    if errors:
        first = errors[0]
        return Problem(
            file=str(first.filename or root), message=f"cannot read directory: {first.strerror}"
        )
    return found


def read_manifests(paths: list[Path], *, source: SourceName) -> ParseResult:
    """Every record under `paths` (files or directories), as `hive validate`, `hive plan`
    and `hive diff` read them: all problems, or all records. A directory's `.hiveignore`
    (at its top) leaves files out, as it does for a git source whose --git-path that
    directory is: CI sees what the hives apply."""
    per_file: dict[str, tuple[Record, ...]] = {}
    problems: list[Problem] = []
    for path in paths:
        files = [path] if path.is_file() else scan_manifest_files(path)
        if isinstance(files, Problem):
            problems.append(files)
            continue
        if not path.is_file():
            files = _not_ignored(path, files)
        for file in files:
            result = parse_file(file, source=source)
            problems.extend(result.problems)
            per_file[str(file)] = result.records
    records, duplicates = merge_files(per_file)
    problems.extend(duplicates)
    if problems:
        return ParseResult(problems=tuple(problems))
    return ParseResult(records=tuple(records))


def _not_ignored(root: Path, files: list[Path]) -> list[Path]:
    ignore_file = root / IGNORE_FILE
    if not ignore_file.is_file():
        return files
    ignore = HiveIgnore(ignore_file.read_text(errors="replace"))
    return [f for f in files if not ignore.ignored(f.relative_to(root).as_posix())]


class DirectorySource:
    def __init__(
        self,
        root: Path,
        *,
        store: Store,
        bus: Bus,
        on_change: OnChange,
        missing_poll: float = 1.0,
        allow_empty: bool = False,
        portable: bool = False,
    ) -> None:
        self.root = root
        self.name = SourceName(f"dir:{root}")
        self._store = store
        self._bus = bus
        self._on_change = on_change
        self._missing_poll = missing_poll
        #: Whether the source may go from some records to none without the marker file.
        self._allow_empty = allow_empty
        #: Watch with watchfiles even where inotify is there (`hive.platform`).
        self._portable = portable
        self._records: dict[Path, tuple[Record, ...]] = {}
        self._problems: dict[Path, tuple[Problem, ...]] = {}
        self._stamps: dict[Path, Stamp] = {}
        self._root_problem: Problem | None = None
        #: Set while an empty record set is refused (the last records stay in force).
        self._empty_problem: Problem | None = None
        #: Set while the watch loop recovers from an unexpected error.
        self._loop_problem: Problem | None = None
        self._duplicates: list[Problem] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch_problem: str | None = None
        self._tree: TreeWatch | PortableTreeWatch | None = None
        self._lock = asyncio.Lock()
        store.register(self.name, kind="directory", location=str(root))

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Arm the watch, then read the tree, so no write falls between the two."""
        armed = asyncio.Event()
        self._task = asyncio.create_task(self._watch(armed), name=f"watch {self.root}")
        await armed.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- reading -------------------------------------------------------------------------
    def _display(self, path: Path) -> str:
        return str(self.root / path.relative_to(self.root))

    def _stamp(self, path: Path) -> Stamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)

    def _parse(self, path: Path) -> ParseResult:
        return parse_file(path, source=self.name, display=self._display(path))

    async def resync(self) -> None:
        """Read the whole directory; files whose stamp did not change are not parsed again,
        except those that could not be read (they are read until they can be)."""
        async with self._lock:
            scan = await asyncio.to_thread(scan_manifest_files, self.root)
            if isinstance(scan, Problem):
                self._set_root_problem(scan)
                return
            recovered = self._root_problem is not None
            if recovered:
                # What happened while the tree could not be listed is unknown (a chmod
                # leaves a file's stamp alone): every file is read again.
                self._stamps.clear()
                self._clear_root_problem()
            present = set(scan)
            gone = (set(self._records) | set(self._problems)) - present
            for path in gone:
                self._forget(path)
            changed = [p for p in scan if self._stamp(p) != self._stamps.get(p)]
            for path in changed:
                # A resync's read tells again only what is new: a file still unreadable
                # (read at every resync) or still broken is already in the status.
                await self._load(path, quiet_if_same=True)
            pending = self._empty_problem is not None
            if changed or gone or recovered or pending or not self._store.synced(self.name):
                self._publish()
            self._store.mark_synced(self.name)

    async def _load(self, path: Path, *, quiet_if_same: bool = False) -> None:
        stamp = self._stamp(path)
        if stamp is None:
            self._forget(path)
            return
        try:
            result = await asyncio.to_thread(self._parse, path)
        except Exception as exc:  # a bug, or memory exhausted: one file, not the watcher
            log.exception("reading %s failed", path)
            result = ParseResult(
                problems=(
                    Problem(
                        file=self._display(path),
                        message=f"cannot be read: {type(exc).__name__}: "
                        f"{clip(redact_text(str(exc)))} (hive reads it again at the next "
                        "resync; if this stays, please report it)",
                    ),
                ),
                unreadable=True,
            )
        if result.unreadable:
            self._stamps.pop(path, None)  # read again at every resync until it can be
        else:
            self._stamps[path] = stamp
        before = self._problems.get(path)
        if result.ok:
            self._records[path] = result.records
            if self._problems.pop(path, None) is not None:
                self._narrate_cleared(path, f"fixed; its {len(result.records)} record(s) apply")
            return
        # Invalid input never deletes: the file's last good records stay in force.
        self._problems[path] = result.problems
        if quiet_if_same and before == result.problems:
            return
        kept = len(self._records.get(path, ()))
        self._narrate_problems(
            result.problems,
            note=f"{kept} last good record(s) of this file stay in force",
            kept=kept,
        )

    def _narrate_cleared(self, path: Path, how: str) -> None:
        file = self._display(path)
        self._bus.emit(
            "manifest_error_cleared",
            f"{file}: {how}",
            data={"source": self.name, "file": file},
        )

    def _narrate_problems(
        self, problems: Iterable[Problem], *, note: str, kept: int | None = None
    ) -> None:
        for problem in list(problems)[:MAX_NARRATED_PROBLEMS]:
            self._bus.emit(
                "manifest_error",
                f"{problem} ({note})",
                level=Level.ERROR,
                data={
                    "source": self.name,
                    "file": problem.file,
                    "line": problem.line,
                    "field": problem.field,
                    **({} if kept is None else {"kept_records": kept}),
                },
            )

    def _forget(self, path: Path) -> None:
        self._records.pop(path, None)
        self._stamps.pop(path, None)
        if self._problems.pop(path, None) is not None:
            self._narrate_cleared(path, "removed; its problems went with it")

    def _set_root_problem(self, problem: Problem) -> None:
        if self._root_problem != problem:
            kept = sum(len(r) for r in self._records.values())
            self._bus.emit(
                "source_error",
                f"{problem} ({kept} last good record(s) stay in force; nothing is pruned)",
                level=Level.ERROR,
                data={"source": self.name, "file": problem.file, "kept_records": kept},
            )
        self._root_problem = problem
        self._show_errors()

    def _clear_root_problem(self) -> None:
        if self._root_problem is not None:
            self._narrate_source_cleared(f"{self.root}: readable again; reading it whole")
        self._root_problem = None

    def _narrate_source_cleared(self, message: str) -> None:
        self._bus.emit(
            "source_error_cleared", message, data={"source": self.name, "file": str(self.root)}
        )

    def _show_errors(self) -> None:
        """The source's errors, as /v1/status shows them: the directory's own problem, or
        every file's and the duplicates; and what is wrong with the source itself (an empty
        set refused, the watch failing)."""
        if self._root_problem is not None:
            found = [self._root_problem]
        else:
            found = [p for ps in self._problems.values() for p in ps] + self._duplicates
        extra = (p for p in (self._empty_problem, self._loop_problem) if p is not None)
        self._store.set_errors(self.name, [*found, *extra])

    def _records_in_force(self) -> int:
        """The records the last set held, for this hive or (not selected) for others."""
        state = next(s for s in self._store.sources() if s.name == self.name)
        return state.records + state.not_selected

    @property
    def _empty_allowed(self) -> bool:
        return self._allow_empty or (self.root / ALLOW_EMPTY_MARKER).exists()

    def _refuse_empty(self, records: list[Record]) -> bool:
        """Whether to keep the last records instead of `records`: a directory that held
        records and now holds none was more likely emptied by accident (a failed mount, an
        rsync gone wrong) than on purpose, and would stop every worker. Argo CD's guard."""
        had = self._records_in_force()
        if records or not had or self._empty_allowed:
            if self._empty_problem is not None:
                self._empty_problem = None
                why = f"it holds {len(records)} record(s)" if records else "emptying is allowed"
                self._narrate_source_cleared(f"{self.root}: {why}; the source applies again")
            return False
        if self._empty_problem is None:
            self._empty_problem = Problem(
                file=str(self.root),
                message=f"source {self.name} had {had} record(s) and now has none; refusing "
                f"to delete them all. Put a `{ALLOW_EMPTY_MARKER}` file in the directory (or "
                "start hive with --allow-empty / HIVE_ALLOW_EMPTY=1) to allow it",
            )
            self._bus.emit(
                "source_error",
                f"{self._empty_problem} ({had} last record(s) stay in force; nothing is pruned)",
                level=Level.ERROR,
                data={"source": self.name, "file": str(self.root), "kept_records": had},
            )
        return True

    def _publish(self) -> None:
        records, duplicates = merge_files({str(p): rs for p, rs in self._records.items()})
        new_duplicates = [d for d in duplicates if d not in self._duplicates]
        self._duplicates = duplicates
        refused = self._refuse_empty(records)
        self._show_errors()
        self._narrate_problems(new_duplicates, note="the first declaration stays in force")
        if not refused:
            self._on_change(self._store.replace(self.name, records))

    # -- watching ------------------------------------------------------------------------
    async def _watch(self, armed: asyncio.Event) -> None:
        """Follow the tree until stopped. Nothing ends this loop but `stop()`: an error it
        did not expect is told (an event, the source's status) and watching starts over."""
        while not self._stop.is_set():
            try:
                await self._watch_once(armed)
            except Exception as exc:  # a bug, or memory exhausted: told, never silent
                log.exception("watching %s failed", self.root)
                self._set_loop_problem(exc)
                armed.set()
                await self._pause()

    async def _watch_once(self, armed: asyncio.Event) -> None:
        if not self.root.is_dir():
            await self.resync()  # records the problem, keeps the records
            armed.set()
            await self._pause()
            return
        try:
            # The watches exist before the tree is read, so no write falls between.
            with self._tree_watch() as watch:
                self._tree, self._watch_problem = watch, None
                await self.resync()
                self._clear_loop_problem()
                armed.set()
                while not (changes := await watch.changes()).root_gone:
                    await self._apply(changes)
        except OSError as exc:
            if not self.root.is_dir():
                return  # the root vanished under the watcher: the loop records it
            # Watching failed (the inotify watch or instance limit): the tree is read
            # every `missing_poll` seconds until watching works again.
            await self.resync()
            armed.set()
            self._narrate_watch_problem(exc)
            await self._pause()
        finally:
            self._tree = None

    def _tree_watch(self) -> TreeWatch | PortableTreeWatch:
        if native_watch(portable=self._portable):
            return TreeWatch(self.root)
        return PortableTreeWatch(self.root)

    def _set_loop_problem(self, exc: Exception) -> None:
        problem = Problem(
            file=str(self.root),
            message=f"watching failed: {type(exc).__name__}: {clip(redact_text(str(exc)))}; "
            f"watching again in {self._missing_poll:g} s (if this repeats, please report it "
            "with hive's log)",
        )
        if problem != self._loop_problem:
            self._bus.emit(
                "source_error",
                str(problem),
                level=Level.ERROR,
                data={"source": self.name, "file": str(self.root)},
            )
        self._loop_problem = problem
        self._show_errors()

    def _clear_loop_problem(self) -> None:
        if self._loop_problem is None:
            return
        self._loop_problem = None
        self._narrate_source_cleared(f"{self.root}: watched again")
        self._show_errors()

    @property
    def watched_directories(self) -> list[Path]:
        """The directories watched now (none while the root is missing)."""
        return [] if self._tree is None else self._tree.directories

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self._missing_poll)

    def _narrate_watch_problem(self, exc: OSError) -> None:
        message = (
            f"{self.root}: cannot watch for changes: {exc.strerror or exc}; reading it "
            f"every {self._missing_poll:g} s instead (raise fs.inotify.max_user_watches or "
            "fs.inotify.max_user_instances)"
        )
        if message != self._watch_problem:
            self._bus.emit(
                "source_error",
                message,
                level=Level.WARNING,
                data={"source": self.name, "file": str(self.root)},
            )
        self._watch_problem = message

    async def _apply(self, changes: TreeChanges) -> None:
        if changes.rescan or self._root_problem is not None:
            # A directory came or went: read the whole tree (cheap: stamps skip the rest).
            # Its watches were added before this read, so nothing written into it is lost.
            await self.resync()
            return
        async with self._lock:
            for path in sorted(changes.paths):
                await self._load(path)
            self._publish()
