"""The client commands on desired state, against a real `hive serve`: `hive apply -f`,
`hive delete model|worker`, `hive get -o wide`, `hive events [-f]`; and the `api` and
`queen` sources kept across a restart, their objects converged again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.conftest import (
    ROOT,
    Hive,
    install_scripted_runtime,
    model_yaml,
    poll,
    run_hive,
    worker_yaml,
)

TOKEN = "s3cret-s3cret-s3cret"


def _manifests(tmp_path: Path, tiny_model: Path, port: int) -> Path:
    """`manifests/` with a Model whose `file:` source is relative to it, and a Worker."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / "tiny.gguf")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "model.yaml").write_text(model_yaml("tiny", "file:../models/tiny.gguf"))
    (manifests / "worker.yaml").write_text(worker_yaml("w", "tiny", port=port))
    return manifests


def _serve(hive_factory: Callable[..., Hive], home: Path, **kw: Any) -> Hive:
    install_scripted_runtime(home)
    env = {"HIVE_GPU_PROBE": "none", "HIVE_TOKEN": TOKEN, **kw.pop("env", {})}
    return hive_factory(home=home, env=env, **kw)


def _desired(hive: Hive, source: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = hive.get(f"/v1/desired/{source}")["items"]
    return items


def test_apply_delete_and_a_restart_keep_the_api_and_queen_sources(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    home = tmp_path / "home"
    manifests = _manifests(tmp_path, tiny_model, worker_ports.start)
    hive = _serve(hive_factory, home, desired=[])
    env = {"HIVE_TOKEN": TOKEN}

    applied = run_hive("apply", "-f", str(manifests), "--url", hive.url, env=env)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["model/tiny created", "worker/w created"]
    # The relative file: source went absolute, against the manifest's directory.
    (model,) = [m for m in _desired(hive, "api") if m["kind"] == "Model"]
    assert model["spec"]["source"] == f"file:{tmp_path / 'models' / 'tiny.gguf'}"
    hive.wait_phase("tiny", "Available")
    pid = hive.wait_worker("w", "Running")["observed"]["pid"]
    assert hive.worker("w")["source"]["name"] == "api"  # type: ignore[index]

    again = run_hive("apply", "-f", str(manifests / "model.yaml"), "--url", hive.url, env=env)
    assert again.stdout == "model/tiny unchanged\n", again.stderr
    changed = worker_yaml("w", "tiny", port=worker_ports.start, args={"delay": 0.1})
    (manifests / "worker.yaml").write_text(changed)
    again = run_hive("apply", "-f", str(manifests), "--url", hive.url, env=env)
    assert again.stdout.splitlines() == ["model/tiny unchanged", "worker/w configured"]
    unauthorized = run_hive("apply", "-f", str(manifests), "--url", hive.url)
    assert unauthorized.returncode == 2
    assert "needs `Authorization: Bearer <token>`" in unauthorized.stderr

    # The Queen's set, beside it.
    queen = yaml.safe_load(model_yaml("tiny2", f"file:{tiny_model}"))
    request = urllib.request.Request(
        hive.url + "/v1/desired/queen",
        data=json.dumps([queen]).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
    hive.wait_phase("tiny2", "Available")
    pid = hive.wait_worker("w", "Running", restarts=0, saying="serving")["observed"]["pid"]

    wide = run_hive("get", "workers", "-o", "wide", "--url", hive.url, env=env)
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()
    assert header.split()[-6:] == ["RUNTIME", "URL", "CPU%", "MEM", "DECLARED", "BY"]
    assert row.split()[0] == "w" and row.split()[-1] == "api" and "scripted" in row.split()
    models = run_hive("get", "models", "-o", "wide", "--url", hive.url, env=env).stdout.splitlines()
    assert models[0].split()[-5:] == ["GEN", "DECLARED", "BY", "LABELS", "SHA256"]
    assert {line.split()[0]: line.split()[-3] for line in models[1:]} == {
        "tiny": "api",
        "tiny2": "queen",
    }

    # A restarted hive has both sets and converges them again (the worker anew: the first
    # hive stopped it on its way out).
    hive.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    hive.start()
    assert [m["metadata"]["name"] for m in _desired(hive, "api")] == ["tiny", "w"]
    assert [m["metadata"]["name"] for m in _desired(hive, "queen")] == ["tiny2"]
    hive.wait_phase("tiny", "Available")
    hive.wait_phase("tiny2", "Available")
    hive.wait_worker("w", "Running")

    deleted = run_hive("delete", "worker", "w", "--url", hive.url, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == "worker w deleted from source api; hive stops its process\n"
    poll(lambda: hive.worker("w") is None, timeout=15, what="the worker to be gone")
    missing = run_hive("delete", "worker", "w", "--url", hive.url, env=env)
    assert missing.returncode == 2
    assert missing.stderr == (
        "hive: source api does not declare Worker/w, and no other source does\n"
    )

    gone = run_hive("delete", "model", "tiny", "--url", hive.url, env=env)
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines() == [
        "model tiny: record removed from source api",
        "model tiny deleted",
    ]
    assert not (home / "models" / "tiny").exists()
    assert _desired(hive, "api") == []
    poll(lambda: hive.model("tiny") is None, what="Model/tiny to be gone")


def test_apply_checks_locally_and_delete_refuses_what_a_file_declares(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    home = tmp_path / "home"
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "models.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (watched / "workers.yaml").write_text(worker_yaml("f", "tiny", port=worker_ports.start))
    hive = _serve(hive_factory, home, desired=[watched])
    env = {"HIVE_TOKEN": TOKEN}
    hive.wait_worker("f", "Running")

    broken = tmp_path / "broken.yaml"
    broken.write_text(model_yaml("a", "ftp://x/m.gguf") + "---\n" + model_yaml("b..c", "file:x"))
    refused = run_hive("apply", "-f", str(broken), "--url", hive.url, env=env)
    assert refused.returncode == 2
    assert refused.stdout.splitlines() == [
        f"{broken}:6: spec.source: scheme 'ftp' is not supported "
        "(use hf://, https://, http:// or file:)",
        f"{broken}:12: metadata.name: must not contain '..'",
    ]
    assert refused.stderr == "2 problem(s) found; nothing was applied\n"
    assert _desired(hive, "api") == []

    # The same key in the api source: accepted, and the conflict is said.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    conflict = run_hive("apply", "-f", str(tmp_path / "mine"), "--url", hive.url, env=env)
    assert conflict.returncode == 0, conflict.stderr
    assert conflict.stdout == "model/tiny created\n"
    assert f"owned by {watched}/models.yaml:1 (source dir:{watched})" in conflict.stderr

    worker = run_hive("delete", "worker", "f", "--url", hive.url, env=env)
    assert worker.returncode == 2
    assert worker.stderr == (
        f"hive: source api does not declare Worker/f: it is declared by {watched}/"
        f"workers.yaml:1 (source dir:{watched}); edit or delete it there\n"
    )
    model = run_hive("delete", "model", "tiny", "--url", hive.url, env=env)
    assert model.returncode == 2
    assert f"Model/tiny is declared present by {watched}/models.yaml:1" in model.stderr
    assert (home / "models" / "tiny" / "model.gguf").exists()
    hive.wait_worker("f", "Running")


def test_delete_model_refuses_before_changing_anything_while_workers_use_it(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    home = tmp_path / "home"
    manifests = _manifests(tmp_path, tiny_model, worker_ports.start)
    hive = _serve(hive_factory, home, desired=[])
    env = {"HIVE_TOKEN": TOKEN}
    assert run_hive("apply", "-f", str(manifests), "--url", hive.url, env=env).returncode == 0
    hive.wait_worker("w", "Running")
    refused = run_hive("delete", "model", "tiny", "--url", hive.url, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("hive: model tiny is not deleted: worker(s) w use it.")
    assert [m["kind"] for m in _desired(hive, "api")] == ["Model", "Worker"]
    forced = run_hive("delete", "model", "tiny", "--force", "--url", hive.url, env=env)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == [
        "model tiny: record removed from source api",
        "model tiny deleted; worker(s) w are stopped until it is back",
    ]
    hive.wait_worker("w", "Pending")


class Lines:
    """A command's output lines, read in a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, *, after: int = 0, timeout: float = 20) -> int:
        def find() -> int | None:
            for index, line in enumerate(list(self.lines)[after:], start=after):
                if text in line:
                    return index + 1
            return None

        return poll(find, timeout=timeout, what=f"{text!r} in {self.lines[-5:]}")


def test_events_prints_what_hive_holds_and_follows_it_through_a_restart(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(desired=[desired])
    hive.wait_phase("tiny", "Available")

    held = run_hive("events", "--url", hive.url)
    assert held.returncode == 0, held.stderr
    lines = held.stdout.splitlines()
    assert "[hive_start] hive starting: hive id" in lines[0]
    assert any(" Model/tiny [model_available] " in line for line in lines)
    one = run_hive("events", "--object", "Model/tiny", "--url", hive.url).stdout.splitlines()
    assert one and all(" Model/tiny [" in line for line in one)
    assert len(one) < len(lines)
    last = hive.get("/v1/status")["last_event_id"]
    assert run_hive("events", "--since", str(last), "--url", hive.url).stdout == ""
    bad = run_hive("events", "--object", "Pod/x", "--url", hive.url)
    assert bad.returncode == 2
    assert bad.stderr.startswith("hive: --object: 'Pod/x' is not an object key")

    follow = subprocess.Popen(
        [sys.executable, "-m", "hive", "events", "-f", "--url", hive.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        out = Lines(follow)
        seen = out.wait_for("[model_available]")
        hive.stop()
        lost = out.wait_for(f"hive: lost {hive.url}", after=seen)
        hive.start()
        back = out.wait_for(f"hive: reconnected to {hive.url}", after=lost)
        # The new hive's events from its first: its ids started again at 1.
        out.wait_for("[hive_start] hive starting", after=back)
        out.wait_for("Model/tiny [model_available]", after=back)
    finally:
        follow.terminate()
        follow.wait(timeout=10)
