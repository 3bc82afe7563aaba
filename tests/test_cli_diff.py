"""`hive diff --url URL PATH`, against a real `hive serve`: the manifests under PATH
compared with what the hive declares (exit 0 none, 1 differences, 2 errors)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Hive, free_port, model_yaml, poll, run_hive, worker_yaml

TOKEN = "diff-token-diff-token"


def _write(directory: Path, tiny_model: Path) -> Path:
    """A Model, and two stopped Workers (no process runs), one with its restartPolicy
    written out (the default)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (directory / "w1.yaml").write_text(
        worker_yaml("w1", "tiny", state="stopped", restart_policy="Always")
    )
    (directory / "w2.yaml").write_text(worker_yaml("w2", "tiny", state="stopped"))
    return directory


def _declared(hive: Hive, keys: set[str]) -> None:
    def found() -> bool:
        views = hive.get("/v1/models")["items"] + hive.get("/v1/workers")["items"]
        return keys <= {f"{v['kind']}/{v['name']}" for v in views if v["spec"] is not None}

    poll(found, timeout=20, what=f"the hive to declare {sorted(keys)}")


def _serve(hive_factory: Callable[..., Hive], desired: Path, **kw: Any) -> Hive:
    env = {"HIVE_GPU_PROBE": "none", **kw.pop("env", {})}
    hive = hive_factory(desired=[desired], env=env, **kw)
    _declared(hive, {"Model/tiny", "Worker/w1", "Worker/w2"})
    return hive


def test_no_difference_then_an_added_a_removed_and_a_changed_object(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = _write(tmp_path / "desired", tiny_model)
    hive = _serve(hive_factory, desired)
    repo = _write(tmp_path / "repo", tiny_model)
    # The defaults are no difference: restartPolicy left out here, written on the hive's side.
    (repo / "w1.yaml").write_text(worker_yaml("w1", "tiny", state="stopped"))

    same = run_hive("diff", "--url", hive.url, str(repo))
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.splitlines() == [
        f"no difference: 3 object(s) compared with {hive.url} (every source)"
    ]
    assert same.stderr == ""

    (repo / "extra.yaml").write_text(model_yaml("extra", f"file:{tiny_model}"))
    (repo / "w2.yaml").unlink()
    (repo / "w1.yaml").write_text(worker_yaml("w1", "tiny", state="running"))
    changed = run_hive("diff", "--url", hive.url, str(repo))
    assert changed.returncode == 1, changed.stdout + changed.stderr
    lines = changed.stdout.splitlines()
    marks = [line for line in lines if not line.startswith(" ")]
    assert marks[:3] == ["+ Model/extra", "~ Worker/w1", "- Worker/w2"]
    assert "    -  state: stopped" in lines
    assert "    +  state: running" in lines
    assert any("w1.yaml:1" in line and line.startswith("    +++ path:") for line in lines)
    assert marks[3].startswith("3 difference(s): 1 only in PATH, 1 only on the hive, 1 changed")

    # --source: only what that source declares is compared.
    source = f"dir:{desired}"
    one = run_hive("diff", "--url", hive.url, "--source", source, str(desired))
    assert one.returncode == 0, one.stdout + one.stderr
    api = run_hive("diff", "--url", hive.url, "--source", "api", str(desired))
    assert api.returncode == 1, api.stdout + api.stderr
    assert api.stdout.splitlines()[:3] == ["+ Model/tiny", "+ Worker/w1", "+ Worker/w2"]
    none = run_hive("diff", "--url", hive.url, "--source", "nosuch", str(desired))
    assert none.returncode == 2
    assert "has no source 'nosuch'" in none.stderr and f"dir:{desired}" in none.stderr


def test_a_broken_manifest_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "bad.yaml").write_text(
        "apiVersion: hive/v1\nkind: Worker\nmetadata:\n  name: w\nspec:\n  model: m\n"
        "  runtime: scripted\n  restartPolicy: Sometimes\n"
    )
    url = f"http://127.0.0.1:{free_port()}"  # never asked: the manifests fail first
    result = run_hive("diff", "--url", url, str(repo))
    assert result.returncode == 2
    assert f"{repo / 'bad.yaml'}:8" in result.stdout
    assert "restartPolicy" in result.stdout
    assert "1 problem(s) found" in result.stderr


def test_an_unreachable_hive_is_one_line_and_exit_2(tmp_path: Path, tiny_model: Path) -> None:
    repo = _write(tmp_path / "repo", tiny_model)
    url = f"http://127.0.0.1:{free_port()}"
    result = run_hive("diff", "--url", url, str(repo))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert f"cannot reach hive at {url}" in result.stderr


def test_a_token_and_labels(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = _write(tmp_path / "desired", tiny_model)
    hive = _serve(hive_factory, desired, env={"HIVE_TOKEN": TOKEN}, extra_args=["--label", "gpu=a"])
    repo = tmp_path / "repo"
    shutil.copytree(desired, repo)
    # For hives labelled gpu=b only: this hive (gpu=a) leaves it out, and so does the diff.
    (repo / "other.yaml").write_text(
        model_yaml("other", f"file:{tiny_model}")
        + "  hiveSelector:\n    matchLabels:\n      gpu: b\n"
    )

    refused = run_hive("diff", "--url", hive.url, str(repo), env={"HIVE_TOKEN": ""})
    assert refused.returncode == 2
    assert "401" in refused.stderr and "--token" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    own = run_hive("diff", "--url", hive.url, "--token", TOKEN, str(repo))
    assert own.returncode == 0, own.stdout + own.stderr
    [line] = own.stdout.splitlines()
    assert line.startswith(
        f"no difference: 3 object(s) compared with {hive.url} (every source); 1 record(s) "
        "in PATH not selected by labels gpu=a,"
    )

    other = run_hive("diff", "--url", hive.url, "--token", TOKEN, "--labels", "gpu=b", str(repo))
    assert other.returncode == 1, other.stdout + other.stderr
    assert other.stdout.splitlines()[0] == "+ Model/other"


def test_a_url_that_is_not_a_hive_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A server that answers HTML, or a body without end: one line naming the URL, exit 2,
    and no more than `MAX_ANSWER` read (real loopback servers)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.body()

        def body(self) -> None:
            self.wfile.write(b"<html>a login page</html>")

        def log_message(self, *args: object) -> None:
            pass

    class Endless(Html):
        def body(self) -> None:
            chunk = b"x" * (1 << 20)
            for _ in range(80):
                self.wfile.write(chunk)

    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(model_yaml("a", "file:/srv/a.gguf"))
    results = []
    for handler in (Html, Endless):
        with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}"
            results.append(run_hive("diff", "--url", url, "--labels", "gpu=a", str(manifests)))
            server.shutdown()
    html, big = results
    assert html.returncode == 2 and "is not JSON" in html.stderr, html.stderr
    assert big.returncode == 2 and "larger than 64 MiB" in big.stderr, big.stderr
    for result in results:
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
