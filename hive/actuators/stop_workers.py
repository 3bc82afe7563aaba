"""`hive stop-workers`: stop the workers a hive left running in its home (it exited
without --stop-workers-on-exit, or died), as its own stop does (`workers.stop_group`):
SIGTERM to each worker's process group, the runtime's grace, then SIGKILL. A process is
signalled only when it is provably that worker (pid, start time and hive's markers, as
adoption checks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hive.actuators import workers as proc
from hive.observers.processes import LiveWorker, live_workers


def stop_left_running(home: Path, *, say: Callable[[str], None], portable: bool = False) -> int:
    """Stop every worker of `home` still running; stale state records are removed (as
    adoption removes them). The number stopped. The caller holds the home's lock.
    `portable`: wait for their ends with psutil rather than pidfds (`hive.platform`)."""
    found, stale, problems = live_workers(home)
    for problem in problems:
        say(problem)
    for state, why in stale:
        say(f"worker {state.name}: {why}; its state record is removed")
        proc.remove_state(home, state.name)
    for f in found:
        s = f.state
        say(
            f"stopping worker {s.name} (PID {s.pid}, port {s.port}): SIGTERM to its process "
            f"group, SIGKILL after {f.grace:g}s"
        )

    def killed(f: LiveWorker) -> None:
        say(f"worker {f.state.name} (PID {f.state.pid}) ignored SIGTERM: sent SIGKILL")

    stuck = proc.stop_group(found, home=home, on_kill=killed, portable=portable)
    for f in found:
        s = f.state
        if f in stuck:
            say(f"worker {s.name} (PID {s.pid}) is still there {proc.KILL_WAIT:g}s after SIGKILL")
            continue
        say(f"stopped worker {s.name} (PID {s.pid}); port {s.port} is free")
    return len(found) - len(stuck)
