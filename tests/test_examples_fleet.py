"""`examples/fleet/`, the fleet repository docs/gitops.md describes: its CI script
validates it for every class of hive and each class applies what its labels select; its
settings file parses; and served from a real bare repository by a real `hive serve`
(`--git file://... --git-path fleet --label gpu=a`), its Models converge (from a hub on
loopback: nothing is downloaded from the network), the workers of other classes are not
selected, and `.hiveignore` keeps drafts/ out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hive.settings import Settings
from testkit.hub import ThreadedHub, hf_env
from tests.conftest import ROOT, Hive, run_hive
from tests.sources.test_git import Repo

EXAMPLE = ROOT / "examples" / "fleet"
#: What the git source applies: fleet/, whose .hiveignore leaves drafts/ out (the offline
#: tools read it too).
APPLIED = ["fleet"]
COMMON = {"Model/qwen2.5-0.5b", "Model/nomic-embed"}
GPU_A = {"Model/llama-3.1-8b-q4", "Worker/llama-8b-gpu0", "Worker/llama-8b-gpu1"}
CANARY = {"Model/qwen2.5-7b-q4", "Worker/qwen-7b-canary"}
CPU = {"Worker/qwen-small-cpu", "Worker/embed-cpu"}
SMALL_GPU = {"Worker/qwen-small-gpu"}
EVERY = COMMON | GPU_A | CANARY | CPU | SMALL_GPU
#: What each class of hive in ci/validate.sh applies.
CLASSES = {
    "gpu=a,zone=eu,hive.name=node-a1": COMMON | GPU_A | CANARY,
    "gpu=a,zone=eu": COMMON | GPU_A | SMALL_GPU,
    "gpu=b,zone=eu": COMMON | SMALL_GPU,
    "gpu=b,zone=us": COMMON,
    "zone=eu": COMMON | CPU,
}
#: The files the hub serves for the example's hf:// sources (the tiny model each time).
HF_FILES = {
    "Qwen/Qwen2.5-0.5B-Instruct-GGUF": "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    "nomic-ai/nomic-embed-text-v1.5-GGUF": "nomic-embed-text-v1.5.Q8_0.gguf",
    "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF": "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
    "Qwen/Qwen2.5-7B-Instruct-GGUF": "qwen2.5-7b-instruct-q4_k_m.gguf",
}


def not_selected(output: str) -> set[str]:
    """The `Kind/name` of each `not selected: Kind/name (file:line): ...` line."""
    prefix = "not selected: "
    return {
        line.removeprefix(prefix).split(" ", 1)[0]
        for line in output.splitlines()
        if line.startswith(prefix)
    }


def hive_wrapper(tmp_path: Path) -> Path:
    """A `hive` command for ci/validate.sh: this checkout's, run by this Python."""
    path = tmp_path / "bin" / "hive"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hive "$@"\n')
    path.chmod(0o755)
    return path


def run_ci(tmp_path: Path, *, diff_urls: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(EXAMPLE / "ci" / "validate.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "HIVE": str(hive_wrapper(tmp_path)), "HIVE_DIFF_URLS": diff_urls},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("labels", sorted(CLASSES))
def test_each_class_of_hive_applies_what_its_labels_select(labels: str) -> None:
    done = run_hive("validate", *APPLIED, "--labels", labels, cwd=EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not_selected(done.stdout) == EVERY - CLASSES[labels]
    assert (
        f"ok: {len(EVERY)} record(s) valid; {len(CLASSES[labels])} apply to a hive with labels"
        in done.stdout
    )


def test_the_offline_tools_leave_out_what_hiveignore_does_and_drafts_are_valid() -> None:
    done = run_hive("validate", "fleet", cwd=EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"ok: {len(EVERY)} record(s) valid"  # no draft
    drafts = run_hive("validate", "fleet/drafts", cwd=EXAMPLE)
    assert drafts.returncode == 0, drafts.stdout + drafts.stderr
    assert drafts.stdout.strip() == "ok: 1 record(s) valid"


def test_the_ci_script_validates_every_class(tmp_path: Path) -> None:
    done = run_ci(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for labels in CLASSES:
        assert f"--- a hive with labels {labels}" in done.stdout
    assert "problem" not in done.stdout + done.stderr


def test_the_settings_file_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HIVE_"):
            monkeypatch.delenv(name)
    settings = Settings.from_env(config=EXAMPLE / "hive.yaml")
    assert settings.home == Path("/var/lib/hive")
    assert settings.host == "0.0.0.0"
    assert settings.labels == {"gpu": "a", "zone": "eu"}
    (fleet,) = settings.git
    assert fleet.url == "https://git.example.com/ops/fleet.git"
    assert (fleet.source_name, fleet.ref, fleet.path, fleet.interval) == (
        "fleet",
        "main",
        "fleet",
        300,
    )
    assert fleet.webhook_secret_file == Path("/etc/hive/fleet.hook-secret")
    assert not fleet.allow_empty


def test_a_gpu_a_hive_served_from_the_repository_converges_its_models(
    tmp_path: Path,
    tiny_model: Path,
    hub: ThreadedHub,
    hive_factory: Callable[..., Hive],
) -> None:
    for repo, file in HF_FILES.items():
        hub.add_file(repo, file, tiny_model)
    remote = Repo(tmp_path / "git")
    shutil.copytree(EXAMPLE / "fleet", remote.work / "fleet")
    sha = remote.commit({}, "the example fleet")
    gpus = tmp_path / "gpus.json"
    gpus.write_text(
        json.dumps(
            {
                "gpus": [
                    {"index": i, "name": "Fake A", "vram_total_mb": 24000, "vram_free_mb": 20000}
                    for i in (0, 1)
                ],
                "processes": {},
            }
        )
    )
    hive = hive_factory(
        desired=[],
        # every hf:// source on the hub (a draft applied by mistake 404s there, too)
        env={**hf_env(hub, tmp_path / "hf"), "HIVE_HIVE_ID": "node-a1"},
        extra_args=[
            "--label",
            "gpu=a",
            "--label",
            "zone=eu",
            "--gpu-probe",
            f"fake:{gpus}",
            "--git",
            remote.url,
            "--git-ref",
            "main",
            "--git-path",
            "fleet",
            "--git-name",
            "fleet",
        ],
    )
    wanted = CLASSES["gpu=a,zone=eu,hive.name=node-a1"]
    for key in sorted(k for k in wanted if k.startswith("Model/")):
        hive.wait_phase(key.removeprefix("Model/"), "Available", timeout=30)
    for key in sorted(k for k in wanted if k.startswith("Worker/")):
        assert hive.worker(key.removeprefix("Worker/")) is not None, key
    for key in sorted(CPU | SMALL_GPU):
        assert hive.worker(key.removeprefix("Worker/")) is None, key
    assert hive.model("mistral-7b-q4") is None  # drafts/: in .hiveignore

    (source,) = [s for s in hive.get("/v1/status")["sources"] if s["name"] == "git:fleet"]
    assert source["git"]["lastAppliedRevision"] == f"main@sha1:{sha}"
    assert source["records"] == len(wanted)
    assert set(source["not_selected_keys"]) == CPU | SMALL_GPU
    assert source["errors"] == []

    # The CI script's diff, against this hive: what it applies is what the repository says.
    done = run_ci(tmp_path, diff_urls=hive.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"no difference: {len(wanted)} object(s) compared with {hive.url}" in done.stdout

    # A change on the branch is a difference until the hive has applied it.
    worker = remote.work / "fleet" / "gpu-a" / "workers.yaml"
    worker.write_text(worker.read_text().replace("ctx_size: 8192", "ctx_size: 16384", 1))
    changed = run_hive(
        "diff", *APPLIED, "--url", hive.url, "--source", "git:fleet", cwd=remote.work
    )
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert changed.stdout.splitlines()[0] == "~ Worker/llama-8b-gpu0"
