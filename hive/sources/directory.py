"""The watched-directory source: manifest files under a directory, followed with inotify
(watchfiles). Each file's last good records stay in force while it is broken."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from watchfiles import Change, awatch

from hive.core.parse import ParseResult, Problem, is_manifest_file, merge_files, parse_file
from hive.core.store import Store
from hive.model.events import Level
from hive.model.ids import SourceName
from hive.model.manifests import Record
from hive.narration.bus import Bus
from hive.sources.base import OnChange

Stamp = tuple[int, int, int]
#: How many problems of one file are narrated (all of them are in /v1/status).
MAX_NARRATED_PROBLEMS = 20
#: After a directory appears, the tree is read again this much later (see _late_resync).
LATE_RESYNC_DELAY = 0.25


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
    """Every record under `paths` (files or directories), as `hive validate` and `hive plan`
    read them: all problems, or all records."""
    per_file: dict[str, tuple[Record, ...]] = {}
    problems: list[Problem] = []
    for path in paths:
        files = [path] if path.is_file() else scan_manifest_files(path)
        if isinstance(files, Problem):
            problems.append(files)
            continue
        for file in files:
            result = parse_file(file, source=source)
            problems.extend(result.problems)
            per_file[str(file)] = result.records
    records, duplicates = merge_files(per_file)
    problems.extend(duplicates)
    if problems:
        return ParseResult(problems=tuple(problems))
    return ParseResult(records=tuple(records))


class DirectorySource:
    def __init__(
        self,
        root: Path,
        *,
        store: Store,
        bus: Bus,
        on_change: OnChange,
        step_ms: int = 20,
        missing_poll: float = 1.0,
    ) -> None:
        self.root = root
        self.name = SourceName(f"dir:{root}")
        self._store = store
        self._bus = bus
        self._on_change = on_change
        self._step_ms = step_ms
        self._missing_poll = missing_poll
        self._records: dict[Path, tuple[Record, ...]] = {}
        self._problems: dict[Path, tuple[Problem, ...]] = {}
        self._stamps: dict[Path, Stamp] = {}
        self._root_problem: Problem | None = None
        self._duplicates: list[Problem] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._late: asyncio.Task[None] | None = None
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
        for task in (self._task, self._late):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- reading -------------------------------------------------------------------------
    def _display(self, path: Path) -> str:
        return str(self.root / path.relative_to(self.root))

    def _stamp(self, path: Path) -> Stamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _parse(self, path: Path) -> ParseResult:
        return parse_file(path, source=self.name, display=self._display(path))

    async def resync(self) -> None:
        """Read the whole directory; files whose stamp did not change are not parsed again."""
        async with self._lock:
            scan = await asyncio.to_thread(scan_manifest_files, self.root)
            if isinstance(scan, Problem):
                self._set_root_problem(scan)
                return
            recovered = self._root_problem is not None
            self._root_problem = None
            present = set(scan)
            gone = (set(self._records) | set(self._problems)) - present
            for path in gone:
                self._forget(path)
            changed = [p for p in scan if self._stamp(p) != self._stamps.get(p)]
            for path in changed:
                await self._load(path)
            if changed or gone or recovered or not self._store.synced(self.name):
                self._publish()
            self._store.mark_synced(self.name)

    async def _load(self, path: Path) -> None:
        stamp = self._stamp(path)
        if stamp is None:
            self._forget(path)
            return
        result = await asyncio.to_thread(self._parse, path)
        self._stamps[path] = stamp
        if result.ok:
            self._records[path] = result.records
            self._problems.pop(path, None)
            return
        # Invalid input never deletes: the file's last good records stay in force.
        self._problems[path] = result.problems
        kept = len(self._records.get(path, ()))
        self._narrate_problems(
            result.problems,
            note=f"{kept} last good record(s) of this file stay in force",
            kept=kept,
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
        self._problems.pop(path, None)
        self._stamps.pop(path, None)

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
        self._store.set_errors(self.name, [problem])

    def _publish(self) -> None:
        records, duplicates = merge_files({str(p): rs for p, rs in self._records.items()})
        new_duplicates = [d for d in duplicates if d not in self._duplicates]
        self._duplicates = duplicates
        result = self._store.replace(self.name, records)
        problems = [p for ps in self._problems.values() for p in ps]
        self._store.set_errors(self.name, [*problems, *duplicates])
        self._narrate_problems(new_duplicates, note="the first declaration stays in force")
        self._on_change(result)

    # -- watching ------------------------------------------------------------------------
    def _wanted(self, change: Change, path: str) -> bool:
        p = Path(path)
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            return False
        if any(part.startswith(".") for part in rel.parts):
            return False  # hidden files and directories (editors' temp files) never count
        # Directories matter too: a new one may hold files that inotify did not see yet.
        return p == self.root or is_manifest_file(p) or change == Change.deleted or p.is_dir()

    async def _watch(self, armed: asyncio.Event) -> None:
        while not self._stop.is_set():
            if not self.root.is_dir():
                await self.resync()  # records the problem, keeps the records
                armed.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._missing_poll)
                continue
            changes_of = awatch(
                self.root,
                watch_filter=self._wanted,
                step=self._step_ms,
                debounce=1600,
                stop_event=self._stop,
                recursive=True,
                rust_timeout=int(self._missing_poll * 1000),
                yield_on_timeout=True,
            )
            try:
                # The generator creates its inotify watch before its first await: start it,
                # let it run that far, and only then read the tree.
                pending = asyncio.ensure_future(anext(changes_of))
                await asyncio.sleep(0)
                await self.resync()
                armed.set()
                while True:
                    changes = await pending
                    if not self.root.is_dir():
                        break
                    if changes:
                        await self._apply(changes)
                    pending = asyncio.ensure_future(anext(changes_of))
            except StopAsyncIteration:
                pass  # stop was asked for
            except (FileNotFoundError, RuntimeError, OSError):
                pass  # the root vanished under the watcher: the loop records it and waits
            finally:
                await changes_of.aclose()

    def _late_resync(self) -> None:
        if self._late is not None and not self._late.done():
            return

        async def later() -> None:
            await asyncio.sleep(LATE_RESYNC_DELAY)
            await self.resync()

        self._late = asyncio.create_task(later(), name=f"late resync {self.root}")

    async def _apply(self, changes: set[tuple[Change, str]]) -> None:
        paths = {Path(p) for _, p in changes}
        known = set(self._records) | set(self._problems)
        directory_changed = any(
            p == self.root
            or p.is_dir()
            or (
                c == Change.deleted
                and not is_manifest_file(p)
                and any(k.is_relative_to(p) for k in known)
            )
            for c, p in ((c, Path(p)) for c, p in changes)
        )
        if directory_changed or self._root_problem is not None:
            # A directory came or went: read the whole tree (cheap: stamps skip the rest).
            await self.resync()
            # inotify watches a new directory only once it has seen it: a file written into
            # it just before may have gone unseen. Look once more after a moment.
            self._late_resync()
            return
        async with self._lock:
            for path in sorted(paths):
                await self._load(path)
            self._publish()
