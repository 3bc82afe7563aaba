"""A real `hive serve --label gpu=a`: records whose spec.hiveSelector selects other hives are
not applied, from a watched directory or from a PUT, and status says so per source."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Hive, model_yaml, poll, run_hive, write_atomic


def for_gpu(name: str, source: str, gpu: str) -> str:
    return model_yaml(name, source) + f"  hiveSelector:\n    matchLabels: {{gpu: {gpu}}}\n"


def sources(hive: Hive) -> dict[str, Any]:
    return {s["name"]: s for s in hive.get("/v1/status")["sources"]}


def test_a_hive_applies_only_the_records_that_select_it(
    hive_factory: Callable[..., Hive], tmp_path: Path, tiny_model: Path
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    write_atomic(
        desired / "m.yaml",
        for_gpu("for-a", f"file:{tiny_model}", "a")
        + "---\n"
        + for_gpu("for-b", f"file:{tiny_model}", "b"),
    )
    hive = hive_factory(desired=[desired], extra_args=["--label", "gpu=a"])
    hive.wait_phase("for-a", "Available")
    assert hive.model("for-b") is None
    assert not (hive.home / "models" / "for-b").exists()
    assert not [e for e in hive.events if e.get("object") == "Model/for-b"]

    status = hive.get("/v1/status")
    assert status["labels"]["gpu"] == "a"
    assert status["labels"]["hive.name"] == status["hive_id"]
    assert status["labels"]["hive.hostname"]
    watched = sources(hive)[f"dir:{desired}"]
    assert (watched["records"], watched["not_selected"]) == (1, 1)
    assert watched["not_selected_keys"] == ["Model/for-b"]
    assert watched["errors"] == []

    table = run_hive("get", "status", "--url", hive.url)
    assert table.returncode == 0, table.stderr
    assert "labels: gpu=a," in table.stdout
    assert "NOT SELECTED" in table.stdout
    as_json = json.loads(run_hive("get", "status", "--url", hive.url, "-o", "json").stdout)
    assert as_json["labels"]["gpu"] == "a"

    # A PUT to an HTTP source is selected the same way.
    body = (
        for_gpu("put-a", f"file:{tiny_model}", "a")
        + "---\n"
        + for_gpu("put-b", f"file:{tiny_model}", "b")
    ).encode()
    request = hive.request("/v1/desired/queen", method="PUT", data=body)
    request.add_header("Content-Type", "application/yaml")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    hive.wait_phase("put-a", "Available")
    assert hive.model("put-b") is None
    queen = poll(lambda: sources(hive).get("queen"), what="the queen source in status")
    assert (queen["records"], queen["not_selected"]) == (1, 1)
    assert queen["not_selected_keys"] == ["Model/put-b"]


def test_a_user_label_may_not_set_hives_own(tmp_path: Path) -> None:
    result = run_hive("serve", "--home", str(tmp_path / "home"), "--label", "hive.name=other")
    assert result.returncode != 0
    assert "hive.name" in result.stderr and "set by hive" in result.stderr
    assert "Traceback" not in result.stderr
    bad = run_hive("serve", "--home", str(tmp_path / "home"), "--label", "gpu")
    assert bad.returncode != 0 and "is not key=value" in bad.stderr
