"""A source's Ready / Reconciling / Stalled from its objects' statuses, as the reconcilers
write them through the status store (a real Store, StatusStore and Bus; time faked)."""

from __future__ import annotations

from hive.core.clock import FakeClock
from hive.core.parse import Problem
from hive.core.status import model_available, model_failed, model_working, worker_update
from hive.core.store import SourceState, Store
from hive.model.gitsource import GitStatus, GitSync
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.manifests import Record
from hive.model.status import ModelPhase, WorkerPhase
from hive.narration.bus import Bus
from hive.runtime.source_health import SourceHealth
from hive.runtime.status_store import StatusStore
from tests.core.test_store import record

GIT = SourceName("git:fleet")
DIR = SourceName("desired")
A = ObjectKey.of(Kind.MODEL, "a")
B = ObjectKey.of(Kind.MODEL, "b")
W = ObjectKey.of(Kind.WORKER, "w")


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = Store(clock=self.clock)
        self.statuses = StatusStore(store=self.store, clock=self.clock)
        self.bus = Bus(clock=self.clock, capacity=1000)
        self.health = SourceHealth(
            store=self.store, statuses=self.statuses, bus=self.bus, clock=self.clock
        )
        self.store.register(GIT, kind="git", location="file:///fleet.git")
        self.store.register(DIR, kind="directory", location="/etc/hive")

    def replace(self, name: SourceName, *records: object) -> None:
        result = self.store.replace(name, [record(**r) for r in records])  # type: ignore[arg-type]
        self.health.records_changed(result.changed | result.touched)

    def state(self, name: SourceName = GIT) -> SourceState:
        return next(s for s in self.store.sources() if s.name == name)

    def conditions(self, name: SourceName = GIT) -> dict[str, tuple[str, str, str]]:
        return {
            c.type: (c.status, c.reason, c.message)
            for c in self.health.conditions(self.state(name))
        }

    def actions(self, action: str) -> list[str]:
        events, _ = self.bus.read(0, limit=1000)
        return [e.message for e in events if e.action == action]

    def applied(self, revision: str, outcome: str = "applied") -> None:
        status = GitStatus(
            url="file:///fleet.git",
            ref="main",
            path="",
            interval=60,
            lastAttemptedRevision=revision,
            lastAppliedRevision="main@sha1:" + "1" * 40,
            history=(GitSync(revision=revision, time=self.clock.now(), outcome=outcome),),
        )
        self.store.set_detail(GIT, git=status)


def test_ready_only_once_every_object_has_converged() -> None:
    w = World()
    w.applied("main@sha1:" + "1" * 40)
    w.replace(GIT, {"name": "a"}, {"name": "b"}, {"name": "w", "kind": "Worker"})
    status, reason, message = w.conditions()["Ready"]
    assert (status, reason) == ("False", "Progressing")
    assert "waiting for 3 of 3 object(s)" in message
    assert "Model/a (not reconciled yet)" in message and "Worker/w" in message
    assert w.conditions()["Reconciling"][0] == "True"

    w.statuses.set(A, model_available("ok"))
    w.statuses.set(B, model_working(ModelPhase.DOWNLOADING, "Downloading", "12 MB of 40"))
    _, _, message = w.conditions()["Ready"]
    assert "2 of 3" in message and "Model/b (Downloading (12 MB of 40))" in message
    assert "Model/a" not in message
    w.statuses.set(B, model_available("ok"))
    w.statuses.set(
        W, worker_update(WorkerPhase.STARTING, ready=False, reason="Starting", message="")
    )
    assert w.conditions()["Ready"][0] == "False" and not w.actions("source_ready")
    w.clock.advance(2.5)
    w.statuses.set(W, worker_update(WorkerPhase.RUNNING, ready=True, reason="Healthy", message=""))
    assert w.conditions() == {
        "Ready": ("True", "Succeeded", f"revision main@sha1:{'1' * 40}: 3 object(s) converged"),
        "Reconciling": ("False", "Succeeded", ""),
        "Stalled": ("False", "Succeeded", ""),
    }
    (told,) = w.actions("source_ready")
    assert f"revision main@sha1:{'1' * 40} converged" in told and "in 2.5 s" in told


def test_a_new_generation_is_pending_until_observed() -> None:
    w = World()
    w.replace(DIR, {"name": "a"})
    w.statuses.set(A, model_available("ok"))
    assert w.conditions(DIR)["Ready"][0] == "True"
    w.replace(DIR, {"name": "a", "src": "https://example.com/y.gguf"})  # generation 2
    status, _, message = w.conditions(DIR)["Ready"]
    assert status == "False" and "Model/a (generation 2 not observed yet)" in message
    w.statuses.set(A, model_available("ok"))
    assert w.conditions(DIR)["Ready"][0] == "True"
    assert len(w.actions("source_ready")) == 2


def test_a_failing_object_is_named_and_told_once() -> None:
    w = World()
    w.replace(DIR, {"name": "a"}, {"name": "b"})
    w.statuses.set(A, model_failed("ChecksumMismatch", "sha256 differs"))
    w.statuses.set(A, model_failed("ChecksumMismatch", "sha256 differs again"))
    status, reason, message = w.conditions(DIR)["Ready"]
    assert (status, reason) == ("False", "HealthCheckFailed")
    assert "1 of 2 object(s) failing: Model/a (Failed: ChecksumMismatch)" in message
    assert "1 pending: Model/b" in message
    assert w.conditions(DIR)["Reconciling"][0] == "True"  # hive keeps retrying
    assert len(w.actions("source_unhealthy")) == 1


def test_a_record_another_source_owns_is_failing() -> None:
    w = World()
    w.replace(DIR, {"name": "a", "source": DIR})
    w.replace(GIT, {"name": "a", "source": GIT})
    w.statuses.set(A, model_available("ok"))
    assert w.conditions(DIR)["Ready"][0] == "True"
    _, reason, message = w.conditions(GIT)["Ready"]
    assert reason == "HealthCheckFailed" and "Model/a (owned by desired)" in message
    w.replace(DIR)  # the directory lets it go: the git source owns it now
    w.statuses.set(A, model_available("ok"))
    assert w.conditions(GIT)["Ready"][0] == "True"


def test_a_commit_that_cannot_apply_stalls_the_source() -> None:
    w = World()
    w.replace(GIT, {"name": "a", "source": GIT})
    w.statuses.set(A, model_available("ok"))
    w.applied("main@sha1:" + "2" * 40, outcome="invalid")
    problem = Problem(file="fleet/m.yaml", line=3, field="spec", message="bad")
    w.store.set_errors(GIT, [problem])
    assert w.conditions() == {
        "Ready": (
            "False",
            "InvalidManifests",
            f"fleet/m.yaml:3: spec: bad; revision main@sha1:{'1' * 40} stays in force",
        ),
        "Reconciling": ("False", "InvalidManifests", ""),
        "Stalled": (
            "True",
            "InvalidManifests",
            f"fleet/m.yaml:3: spec: bad; revision main@sha1:{'1' * 40} stays in force",
        ),
    }
    w.applied("main@sha1:" + "3" * 40, outcome="fetch-failed")
    assert w.conditions()["Ready"][1] == "FetchFailed"
    assert w.conditions()["Stalled"][0] == "False"


def test_a_stopped_worker_and_an_absent_model_have_converged() -> None:
    w = World()
    w.replace(DIR, {"name": "w", "kind": "Worker"})
    w.statuses.set(W, worker_update(WorkerPhase.DEAD, ready=False, reason="Exited", message=""))
    assert w.conditions(DIR)["Ready"][0] == "False"  # it should run
    stopped = record("w", kind="Worker").model_dump()
    stopped["manifest"]["spec"]["state"] = "stopped"
    result = w.store.replace(DIR, [Record.model_validate(stopped)])
    w.health.records_changed(result.changed)
    w.statuses.set(W, worker_update(WorkerPhase.DEAD, ready=False, reason="Stopped", message=""))
    assert w.conditions(DIR)["Ready"][0] == "True"
