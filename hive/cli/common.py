"""What the `hive` commands share: the exit codes, one-line errors, the note on a missing
home."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_CHANGES, EXIT_ERRORS = 0, 1, 2
HOME_HELP = "state directory (default: $HIVE_HOME, else ~/.cache/hive; `make run` uses .hive-home)"


def fail(message: str, code: int = EXIT_ERRORS) -> int:
    print(f"hive: {message}", file=sys.stderr)
    return code


def home_note(home: Path) -> None:
    """`plan` and `stop-workers` read a home: say so when it does not exist (a wrong
    --home is the usual reason: `make run` serves .hive-home, not the default)."""
    if not home.is_dir():
        print(
            f"hive: home {home} does not exist: nothing observed there (pass --home or set "
            "HIVE_HOME to the home `hive serve` uses; `make run` uses .hive-home)",
            file=sys.stderr,
        )
