"""How one protocol of the Queen link fares: counts, the last success and failure, and its
state (idle, ok, failing, unsupported), changed only by what happened, so that the link
narrates one event per change of state, never one per beat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hive.model.machine import LinkState, ProtocolLink
from hive.model.text import show_text


@dataclass
class Tracker:
    state: LinkState = "idle"
    successes: int = 0
    failures: int = 0
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_reason: str | None = None

    def record(
        self, now: datetime, failure: str | None, *, unsupported: bool = False
    ) -> tuple[LinkState, LinkState] | None:
        """Record one attempt (`failure`: None for a success, else why); the states before
        and after when it changed, else None. `unsupported`: the Queen does not serve this
        route."""
        before = self.state
        if failure is None:
            self.state, self.last_success = "ok", now
            self.successes += 1
        else:
            self.state = "unsupported" if unsupported else "failing"
            self.last_failure, self.last_failure_reason = now, show_text(failure)
            self.failures += 1
        return (before, self.state) if self.state != before else None

    def reset(self) -> None:
        """A new Queen: its state starts over (the counts stay, for /metrics)."""
        self.state = "idle"

    def view(self) -> ProtocolLink:
        return ProtocolLink(
            state=self.state,
            successes=self.successes,
            failures=self.failures,
            last_success=self.last_success,
            last_failure=self.last_failure,
            last_failure_reason=self.last_failure_reason,
        )
