"""Where the Queen is: the URL found by `?queen_url=` (or given by `--queen-url`), kept in
`<home>/state/queen.json` (written atomically, mode 0600: the URL may hold a password) so
that a restarted hive resumes its heartbeats."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hive.errors import BadRequest
from hive.model.queen import normal_queen_url, queen_url_problem

FILE = Path("state") / "queen.json"


class Discovered(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queen_url: str
    discovered_at: datetime


def check(raw: str, *, where: str = "queen_url") -> str:
    """`raw` as the Queen's URL, or `BadRequest` saying what is wrong (not repeating it)."""
    problem = queen_url_problem(raw)
    if problem:
        raise BadRequest(
            f"{where} {problem}; give the Queen's base URL, e.g. http://queen.example:7833"
        )
    return normal_queen_url(raw)


def load(home: Path) -> Discovered | None:
    """The Queen an earlier hive discovered, or None (none, or a file that is not one: it
    is ignored, and replaced at the next discovery)."""
    try:
        found = Discovered.model_validate_json((home / FILE).read_bytes())
    except (OSError, ValidationError):
        return None
    return found if queen_url_problem(found.queen_url) is None else None


def save(home: Path, found: Discovered) -> None:
    """Write `found` atomically: a temporary file beside it, flushed, renamed over it."""
    path = home / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(found.model_dump(mode="json")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
