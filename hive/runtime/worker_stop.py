"""The stopper: what the worker planner's stop decisions do to a process. SIGTERM to its
group, told why, Stopping until its grace ends; then SIGKILL (`escalate`); at hive's exit
every worker at once (`stop_all`), or each one told that it is left running. And the end
of a process, asked for or not (`ended`): its group swept, its history recorded
(`core.worker_history.record_exit`), told."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from hive.actuators import workers as proc
from hive.core.clock import Clock
from hive.core.worker_decide import Report
from hive.core.worker_history import Ended, Instant, Rules, record_exit
from hive.model.events import Level
from hive.model.status import WorkerPhase
from hive.narration.bus import Bus
from hive.observers.processes import LiveWorker, is_same
from hive.runtime.status_store import StatusStore
from hive.runtime.worker_health import HealthMonitor
from hive.runtime.worker_table import Instance, StopOrder, WorkerTable, write_status
from hive.runtime.worker_watch import ProcessWatcher

#: The narration of a stop for these reasons, before `worker_proc_del_start`.
_SAID = {
    "Replaced": ("worker_replace", "♻️ Replacing worker {name}: {message}"),
    "Unhealthy": ("worker_unhealthy", "💔 Worker {name} is unhealthy: {message}"),
    "StartTimeout": ("worker_start_timeout", "⏱️ Worker {name}: {message}"),
    "ModelGone": ("worker_model_gone", "⏏️ Stopping worker {name}: {message}"),
}


class Stopper:
    def __init__(
        self,
        *,
        home: Path,
        portable: bool = False,
        clock: Clock,
        bus: Bus,
        table: WorkerTable,
        statuses: StatusStore,
        watcher: ProcessWatcher,
        rules: Rules,
    ) -> None:
        self._home = home
        self._portable = portable
        self._rules = rules
        self._clock = clock
        self._bus = bus
        self._table = table
        self._statuses = statuses
        self._watcher = watcher

    def stop(self, instance: Instance, reason: str, message: str) -> float:
        """SIGTERM to the worker's group (if it is still that process), told why; the
        worker is Stopping until its grace ends, which is returned."""
        return self.stopping(instance, signalled=self.signal(instance, reason, message))

    def signal(self, instance: Instance, reason: str, message: str) -> bool:
        """The first step of `stop` alone (True if the SIGTERM was sent): a batch sends
        every SIGTERM first, then tells them (`stopping`)."""
        deadline = self._clock.monotonic() + instance.proc.grace
        signalled = is_same(instance.proc.handle) and proc.signal_group(
            instance.state.pid, signal.SIGTERM
        )
        instance.stop = StopOrder(reason=reason, message=message, deadline=deadline)
        return signalled

    def stopping(self, instance: Instance, *, signalled: bool) -> float:
        """The rest of `stop`: told why, Stopping; returns the grace."""
        self._say_stopping(instance, signalled=signalled)
        return instance.proc.grace

    def _say_stopping(self, instance: Instance, *, signalled: bool) -> None:
        assert instance.stop is not None
        key, name = instance.key, instance.state.name
        reason, message = instance.stop.reason, instance.stop.message
        pid, grace = instance.state.pid, instance.proc.grace
        said = _SAID.get(reason)
        if said is not None:
            level = Level.INFO if reason == "Replaced" else Level.WARNING
            text = said[1].format(name=name, message=message)
            self._bus.narrate(key, said[0], text, level=level)
        self._bus.narrate(
            key,
            "worker_proc_del_start",
            f"🗑️ Killing worker PID {pid} ({message})",
            pid=pid,
            reason=reason,
        )
        if signalled:
            self._bus.narrate(key, "worker_proc_del_sigterm", "Sent SIGTERM", pid=pid, grace=grace)
        report = Report(
            phase=WorkerPhase.STOPPING, progressing=True, reason=reason, message=message
        )
        write_status(self._statuses, key, report, self._table.history(name))

    def escalate(self, instance: Instance) -> float:
        """The grace is over: SIGKILL (once), else say it is stuck; look again later."""
        stop = instance.stop
        assert stop is not None
        if not stop.killed:
            stop.killed = True
            if is_same(instance.proc.handle):
                proc.signal_group(instance.state.pid, signal.SIGKILL)
            self._say_killed(instance)
        else:
            self._say_stuck(instance)
        stop.deadline = self._clock.monotonic() + proc.KILL_WAIT
        return proc.KILL_WAIT

    def _say_killed(self, instance: Instance) -> None:
        pid = instance.state.pid
        self._bus.narrate(
            instance.key,
            "worker_proc_del_sigkill",
            f"Worker PID {pid} ignored SIGTERM for its grace period: sent SIGKILL",
            level=Level.WARNING,
            pid=pid,
        )

    def _say_stuck(self, instance: Instance) -> None:
        pid = instance.state.pid
        self._bus.narrate(
            instance.key,
            "worker_proc_del_stuck",
            f"Worker PID {pid} is still there {proc.KILL_WAIT:g}s after SIGKILL (uninterruptible?)",
            level=Level.ERROR,
            pid=pid,
        )

    def say_left_running(self) -> None:
        """At hive's exit without --stop-workers-on-exit: which workers keep running, and
        how to stop them (they have no owner until a hive starts on this home again)."""
        left = [i for i in self._table.instances.values() if not self._watcher.check_exit(i)]
        for instance in sorted(left, key=lambda i: i.state.name):
            state = instance.state
            self._bus.narrate(
                instance.key,
                "worker_left_running",
                f"Leaving worker {state.name} running (PID {state.pid}, port {state.port}): "
                f"the next hive on this home adopts it; `kill -TERM -- -{state.pid}` stops "
                "it alone (its process group)",
                pid=state.pid,
                port=state.port,
            )
        if left:
            self._bus.emit(
                "workers_left_running",
                f"{len(left)} worker(s) left running; stop them with `hive stop-workers "
                f"--home {self._home}` (`make stop` for `make run`), or run hive with "
                "--stop-workers-on-exit to stop them when it exits",
                level=Level.WARNING,
                data={"workers": sorted(i.state.name for i in left)},
            )

    async def stop_all(self) -> list[Instance]:
        """At hive's exit with --stop-workers-on-exit: every group SIGTERM, then SIGKILL;
        returns the instances that ended (the others are said to be stuck)."""
        instances = [i for i in self._table.instances.values() if not self._watcher.check_exit(i)]
        for instance in instances:
            if instance.stop is None:
                self.stop(instance, "Shutdown", "hive is stopping")
        # One blocking stop for all of them (`proc.stop_group`, as `hive stop-workers`),
        # in a thread: the SIGTERMs are sent and told; it waits, kills each one at its own
        # stop deadline, waits, releases.
        now = self._clock.monotonic()
        by_worker = {
            LiveWorker(i.state, i.proc.handle, grace=max(_deadline(i) - now, 0.0)): i
            for i in instances
        }
        loop = asyncio.get_running_loop()
        stuck = await asyncio.to_thread(
            proc.stop_group,
            list(by_worker),
            home=self._home,
            signal_term=False,
            on_kill=lambda w: loop.call_soon_threadsafe(self._say_killed, by_worker[w]),
            portable=self._portable,
        )
        ended = []
        for worker, instance in by_worker.items():
            if self._watcher.check_exit(instance):
                ended.append(instance)
            elif worker in stuck:
                self._say_stuck(instance)
        return ended

    # -- an end ----------------------------------------------------------------------------
    def ended(self, instance: Instance, *, policy: str | None, generation: int) -> None:
        """The process is gone: sweep its group, forget it, record how it ended (its
        record's restart `policy`, None without a record; its `generation`) and tell."""
        key, state = instance.key, instance.state
        name = key.name
        self._watcher.unwatch(instance)
        HealthMonitor.drop(instance)
        proc.release_group(self._home, state)  # what its children left in its group
        self._table.instances.pop(name, None)
        assert instance.proc.exit is not None
        stop, health = instance.stop, instance.health
        history, outcome = record_exit(
            self._table.history(name),
            Ended(
                exit=instance.proc.exit,
                stop_reason=stop.reason if stop else None,
                stop_message=stop.message if stop else "",
                unhealthy=health.unhealthy,
                start_timed_out=health.start_timed_out,
                ready_at=health.ready_at,
            ),
            policy=policy,
            generation=generation,
            now=Instant(monotonic=self._clock.monotonic(), wall=self._clock.now()),
            rules=self._rules,
        )
        self._table.histories[name] = history
        exit = outcome.exit
        if outcome.asked:
            self._bus.narrate(
                key,
                "worker_proc_del_ok",
                "✅ Worker killed successfully",
                pid=state.pid,
                exit=exit.describe(),
            )
            return
        tail = proc.tail_lines(state.log_path, 1)
        self._bus.narrate(
            key,
            "worker_exited",
            f"💥 Worker {name} (PID {state.pid}) ended: {exit.describe()}"
            + (f" [{exit.reason}]" if exit.reason != "Exited" else "")
            + (f"; last log line: {tail[-1]}" if tail else ""),
            level=Level.WARNING if not exit.failed else Level.ERROR,
            pid=state.pid,
            exit_code=exit.code,
            signal=exit.signal,
            reason=exit.reason,
        )
        if outcome.restart_in is not None:
            self._bus.narrate(
                key,
                "worker_restart_scheduled",
                f"⏳ Back-off {outcome.restart_in:g}s restarting failed worker {name} "
                f"({history.failures_in_a_row} failure(s) in a row; restartPolicy "
                f"{policy})",
                delay_seconds=outcome.restart_in,
                restarts=history.restarts,
            )


def _deadline(instance: Instance) -> float:
    assert instance.stop is not None
    return instance.stop.deadline
