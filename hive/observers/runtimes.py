"""The worker catalog: built-in runtime entries plus `<home>/workers/<id>/metadata.json`
(the rbee layout, read-only to hive). A bad entry is reported and skipped, never fatal."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hive.model.runtimes import ArgSpec, RuntimeEntry

_PORTABLE_ARGS = {
    "ctx_size": ArgSpec(
        type="int",
        default=0,
        min=0,
        max=1 << 24,
        description="Context size in tokens; 0: the model's own (general context length).",
    ),
    "n_gpu_layers": ArgSpec(
        type="int",
        default=999,
        min=0,
        max=999,
        description="Layers offloaded to the GPU (999: all); 0 on CPU-0.",
        cpu_value=0,
    ),
    "parallel": ArgSpec(
        type="int", default=1, min=1, max=256, description="Parallel sequences (server slots)."
    ),
}
_COMMON_ARGV = (
    "--model",
    "{model_path}",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--alias",
    "{model}",
    "--ctx-size",
    "{ctx_size}",
    "--n-gpu-layers",
    "{n_gpu_layers}",
    "--threads",
    "{threads}",
    "--parallel",
    "{parallel}",
)


def built_in_entries() -> list[RuntimeEntry]:
    xllamacpp = importlib.util.find_spec("xllamacpp") is not None
    llama_server = shutil.which("llama-server")
    return [
        RuntimeEntry(
            id="llama-cpp",
            name="llama.cpp server (in-process, xllamacpp)",
            worker_type="cpu",
            argv=(
                "{python}",
                "-m",
                "hive.launchers.llama_cpp",
                *_COMMON_ARGV,
                # No --queen-url: the launcher reads HIVE_QUEEN_URL, so the Queen's
                # credentials stay off the command line (ps, /proc/<pid>/cmdline, the log).
                "--worker-id",
                "{worker_id}",
                "--device",
                "{device}",
            ),
            args={
                **_PORTABLE_ARGS,
                "threads": ArgSpec(
                    type="int", default=0, min=0, max=1024, description="0: llama.cpp's default."
                ),
            },
            metrics_path="/metrics",
            description="llama.cpp's own HTTP server run through the xllamacpp package (a "
            "prebuilt CPU wheel); sends rbee's worker heartbeat to the Queen.",
            available=xllamacpp,
            unavailable_reason=None
            if xllamacpp
            else "the xllamacpp package is not installed (pip install 'hive[llama]')",
        ),
        RuntimeEntry(
            id="llama-server",
            name="llama-server found on PATH",
            worker_type="cuda",
            path=Path(llama_server) if llama_server else None,
            argv=("{binary}", *_COMMON_ARGV, "--metrics"),
            args={
                **_PORTABLE_ARGS,
                "threads": ArgSpec(
                    type="int", default=-1, min=-1, max=1024, description="-1: llama.cpp's default."
                ),
            },
            metrics_path="/metrics",
            description="Your own llama.cpp build (CUDA, Metal, Vulkan): the llama-server binary "
            "on hive's PATH.",
            available=llama_server is not None,
            unavailable_reason=None if llama_server else "no llama-server on PATH",
        ),
    ]


class EntryError(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    message: str


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(entry)'}: {e['msg']}" for e in exc.errors()
    )


def read_entry(path: Path, *, reserved: set[str]) -> RuntimeEntry:
    """One `metadata.json`; ValueError saying what is wrong and where."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object")
    try:
        entry = RuntimeEntry.model_validate({**raw, "origin": str(path), "available": True})
    except ValidationError as exc:
        raise ValueError(_validation_text(exc)) from None
    if entry.id != path.parent.name:
        raise ValueError(f"id {entry.id!r} differs from its directory {path.parent.name!r}")
    if entry.id in reserved:
        raise ValueError(f"id {entry.id!r} is a built-in runtime; choose another id")
    if entry.path is None:
        return entry
    binary = entry.path if entry.path.is_absolute() else path.parent / entry.path
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return entry.model_copy(
            update={
                "path": binary,
                "available": False,
                "unavailable_reason": f"{binary} is missing or not executable",
            }
        )
    return entry.model_copy(update={"path": binary})


class RuntimeCatalog:
    """Entries by id; the directory is read again only when a metadata.json changed
    (path, mtime, size or inode: a file replaced by rename with preserved times counts)."""

    def __init__(self, home: Path) -> None:
        self.root = home / "workers"
        self._builtins = {e.id: e for e in built_in_entries()}
        self._stamp: tuple[tuple[str, int, int, int], ...] | None = None
        self._entries: dict[str, RuntimeEntry] = dict(self._builtins)
        self.errors: list[EntryError] = []

    def _current_stamp(self) -> tuple[tuple[str, int, int, int], ...]:
        stamps = []
        try:
            children = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            return ()
        for child in children:
            meta = Path(child.path) / "metadata.json"
            try:
                st = meta.stat()
            except OSError:
                continue
            stamps.append((str(meta), st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def refresh(self) -> bool:
        """Read the directory again if it changed; True when it did."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        entries = dict(self._builtins)
        errors = []
        for path_text, *_ in stamp:
            path = Path(path_text)
            try:
                entry = read_entry(path, reserved=set(self._builtins))
            except ValueError as exc:
                errors.append(EntryError(path=path, message=str(exc)))
                continue
            entries[entry.id] = entry
        self._entries = entries
        self.errors = errors
        return True

    def get(self, runtime_id: str) -> RuntimeEntry | None:
        self.refresh()
        return self._entries.get(runtime_id)

    def entries(self) -> list[RuntimeEntry]:
        self.refresh()
        return sorted(self._entries.values(), key=lambda e: (e.origin != "built-in", e.id))
