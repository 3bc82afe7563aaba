"""The built-in llama-cpp launcher as hive runs it: a real subprocess serving the tiny
model over loopback HTTP, its pre-flight errors, and its heartbeats to a real Queen stub."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hive import __version__
from hive.launchers.llama_cpp import heartbeat_for, parse_options
from tests.conftest import ROOT, answers_health, apoll, free_port, poll

PROG = "hive-llama-cpp"


class Launched:
    """One launcher subprocess, its stdout and stderr in files."""

    def __init__(self, proc: subprocess.Popen[bytes], *, port: int, out: Path, err: Path):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out = out
        self.err = err

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def healthy(self) -> bool:
        return answers_health(self.proc, self.url, log=self.err, what="launcher")

    def wait_healthy(self) -> Launched:
        poll(self.healthy, timeout=20, what=f"llama.cpp /health on {self.url}")
        return self

    def get(self, path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.headers.get("Content-Type", ""), r.read()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.load(r)

    def exit_code(self, *, within: float = 20.0) -> int:
        poll(lambda: self.proc.poll() is not None, timeout=within, what="the launcher to exit")
        return int(self.proc.returncode)

    def stop(self, sig: signal.Signals = signal.SIGTERM, *, within: float = 5.0) -> int:
        """Send `sig`; the exit code, which must come within `within` seconds."""
        self.proc.send_signal(sig)
        return self.exit_code(within=within)


Launch = Callable[..., Launched]


@pytest.fixture
def launch(tmp_path: Path, tiny_model: Path) -> Iterator[Launch]:
    """Start the launcher as hive does; every process is killed at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HIVE_QUEEN_URL", "HIVE_WORKER_ID", "HIVE_HEARTBEAT_INTERVAL")
    }

    def start(
        *extra: str,
        model: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Launched:
        port = port or free_port()
        n = len(procs)
        out, err = tmp_path / f"launcher-{n}.out", tmp_path / f"launcher-{n}.err"
        argv = [
            sys.executable,
            "-m",
            "hive.launchers.llama_cpp",
            "--model",
            str(model or tiny_model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--alias",
            "tiny",
            "--ctx-size",
            "256",
            *extra,
        ]
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                argv, stdout=o, stderr=e, cwd=ROOT, env={**base_env, **(env or {})}
            )
        procs.append(proc)
        return Launched(proc, port=port, out=out, err=err)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- serving -----------------------------------------------------------------------------
def test_serves_the_model_with_llama_cpp_endpoints_then_stops_on_sigterm(
    launch: Launch,
) -> None:
    worker = launch("--threads", "1").wait_healthy()
    line = f"{PROG}: serving tiny on {worker.url} (ctx 256, 1 threads)\n"
    poll(lambda: worker.stdout() == line, timeout=5, what=f"{line!r} (got {worker.stdout()!r})")

    completion = worker.post(
        "/v1/completions", {"prompt": "hello", "max_tokens": 8, "ignore_eos": True}
    )
    assert completion["model"] == "tiny"
    assert isinstance(completion["choices"][0]["text"], str)
    assert completion["usage"]["completion_tokens"] > 0

    chat = worker.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "ignore_eos": True},
    )
    assert chat["choices"][0]["message"]["role"] == "assistant"

    _, models = worker.get("/v1/models")
    assert [m["id"] for m in json.loads(models)["data"]] == ["tiny"]

    _, props = worker.get("/props")
    assert json.loads(props)["default_generation_settings"]["n_ctx"] == 256

    content_type, metrics = worker.get("/metrics")
    assert content_type.startswith("text/plain")
    assert "llamacpp:tokens_predicted_total" in metrics.decode()

    assert worker.stop(signal.SIGTERM) == 0
    assert worker.stderr() == ""  # llama.cpp logs errors only, and there were none


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_signals_exit_cleanly_and_promptly(launch: Launch, sig: signal.Signals) -> None:
    worker = launch().wait_healthy()
    assert worker.stop(sig, within=5) == 0


def test_verbose_lets_llama_cpp_log(launch: Launch) -> None:
    worker = launch("--verbose").wait_healthy()
    assert worker.stop() == 0
    assert "model loaded" in worker.stderr()


# -- pre-flight --------------------------------------------------------------------------
def test_a_busy_port_is_one_clear_line_and_exit_2(launch: Launch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        worker = launch(port=port)
        assert worker.exit_code() == 2
    assert worker.stderr() == f"{PROG}: error: port {port} on 127.0.0.1 is already in use\n"


def test_a_missing_model_is_one_clear_line_and_exit_2(launch: Launch, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    worker = launch(model=missing)
    assert worker.exit_code() == 2
    assert worker.stderr() == f"{PROG}: error: model file {missing} does not exist\n"


def test_a_file_that_is_not_gguf_is_one_clear_line_and_exit_2(
    launch: Launch, tmp_path: Path
) -> None:
    html = tmp_path / "model.gguf"
    html.write_bytes(b"<html>404 Not Found</html>")
    worker = launch(model=html)
    assert worker.exit_code() == 2
    assert worker.stderr() == (
        f"{PROG}: error: model file {html} is not a GGUF file (no GGUF magic)\n"
    )


def test_a_gguf_llama_cpp_cannot_load_exits_1_saying_so(launch: Launch, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00cut short")
    worker = launch(model=truncated)
    assert worker.exit_code() == 1
    last = worker.stderr().splitlines()[-1]
    assert last.startswith(f"{PROG}: error: llama.cpp did not start serving {truncated}: ")


# -- heartbeat ---------------------------------------------------------------------------
class Queen:
    """A Queen stub on loopback that records heartbeats and answers with `status`."""

    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.status = 200
        app = web.Application()
        app.router.add_post("/v1/worker-heartbeat", self._beat)
        self.server = TestServer(app, host="127.0.0.1")
        self.url = ""

    async def _beat(self, request: web.Request) -> web.Response:
        self.beats.append(await request.json())
        self.authorizations.append(request.headers.get("Authorization"))
        return web.json_response({}, status=self.status)

    def statuses(self) -> list[str]:
        return [b["worker"]["status"] for b in self.beats]


@pytest.fixture
async def queen() -> AsyncIterator[Queen]:
    stub = Queen()
    await stub.server.start_server()
    stub.url = str(stub.server.make_url("")).rstrip("/")
    yield stub
    await stub.server.close()


async def test_heartbeats_say_starting_then_ready_every_interval(
    launch: Launch, queen: Queen
) -> None:
    worker = launch(
        "--queen-url",
        queen.url,
        "--worker-id",
        "w-1",
        "--device",
        "CPU-0",
        env={"HIVE_HEARTBEAT_INTERVAL": "0.2"},
    )
    await apoll(lambda: queen.statuses().count("ready") >= 2, within=20, what="two ready beats")
    assert queen.statuses()[0] == "starting"
    assert set(queen.statuses()) == {"starting", "ready"}
    for beat in queen.beats:
        # rbee's worker contract (`WorkerHeartbeat`), exactly.
        assert list(beat) == ["worker", "timestamp"]
        assert beat["worker"] == {
            "id": "w-1",
            "model_id": "tiny",
            "device": "CPU-0",
            "port": worker.port,
            "status": beat["worker"]["status"],
            "implementation": "hive-llama-cpp",
            "version": __version__,
        }
        assert datetime.fromisoformat(beat["timestamp"]).utcoffset() is not None
    worker.proc.send_signal(signal.SIGTERM)
    await apoll(lambda: worker.proc.poll() is not None, within=5, what="the launcher to exit")
    assert worker.proc.returncode == 0


async def test_a_failing_queen_is_warned_about_once_and_on_recovery(
    launch: Launch, queen: Queen
) -> None:
    queen.status = 500
    worker = launch(
        env={
            "HIVE_QUEEN_URL": queen.url,
            "HIVE_WORKER_ID": "from-env",
            "HIVE_HEARTBEAT_INTERVAL": "0.2",
        }
    )
    await apoll(lambda: len(queen.beats) >= 4, within=20, what="four beats")
    assert queen.beats[0]["worker"]["id"] == "from-env"
    warnings = worker.stderr().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"{PROG}: warning: heartbeat to ")
    assert worker.healthy()

    queen.status = 200
    await apoll(lambda: "works again" in worker.stderr(), within=5, what="the recovery line")
    seen = len(queen.beats)
    await apoll(lambda: len(queen.beats) >= seen + 2, within=5, what="two more beats")
    assert len(worker.stderr().splitlines()) == 2


def test_an_unreachable_queen_does_not_stop_serving(launch: Launch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    worker = launch("--queen-url", closed, env={"HIVE_HEARTBEAT_INTERVAL": "0.2"})
    worker.wait_healthy()
    completion = worker.post(
        "/v1/completions", {"prompt": "hello", "max_tokens": 4, "ignore_eos": True}
    )
    assert completion["choices"][0]["text"] is not None
    assert worker.stop() == 0
    assert worker.stderr().count("warning: heartbeat") == 1


# -- options -----------------------------------------------------------------------------
REQUIRED = ["--model", "m.gguf", "--port", "9000", "--alias", "tiny"]


def test_an_empty_queen_url_flag_means_no_queen_even_with_the_env_set() -> None:
    env = {"HIVE_QUEEN_URL": "http://queen:7833"}
    assert parse_options([*REQUIRED, "--queen-url", ""], env=env).queen_url is None
    assert parse_options(REQUIRED, env=env).queen_url == "http://queen:7833"


def test_worker_id_falls_back_to_the_env_then_the_alias() -> None:
    assert parse_options(REQUIRED, env={"HIVE_WORKER_ID": "w-9"}).worker_id == "w-9"
    assert parse_options(REQUIRED, env={}).worker_id == "tiny"
    assert parse_options([*REQUIRED, "--worker-id", "w-1"], env={}).worker_id == "w-1"


def test_the_heartbeat_goes_to_the_queens_worker_heartbeat_route() -> None:
    opts = parse_options(
        [*REQUIRED, "--host", "0.0.0.0", "--queen-url", "http://queen:7833/"], env={}
    )
    heartbeat = heartbeat_for(opts)
    assert heartbeat is not None
    assert heartbeat.endpoint == "http://queen:7833/v1/worker-heartbeat"
    assert heartbeat.body()["worker"] == {
        "id": "tiny",
        "model_id": "tiny",
        "device": "CPU-0",
        "port": 9000,
        "status": "starting",
        "implementation": "hive-llama-cpp",
        "version": __version__,
    }


async def test_credentials_in_the_queen_url_are_sent_as_basic_auth(queen: Queen) -> None:
    secret_url = queen.url.replace("http://", "http://hive%40gpu:p%3Ass@")
    opts = parse_options([*REQUIRED, "--queen-url", secret_url], env={})
    heartbeat = heartbeat_for(opts)
    assert heartbeat is not None
    assert "p%3Ass" not in heartbeat.endpoint and "@" not in heartbeat.endpoint
    await asyncio.to_thread(heartbeat.send)
    assert len(queen.beats) == 1
    expected = base64.b64encode(b"hive@gpu:p:ss").decode()
    assert queen.authorizations == [f"Basic {expected}"]
    plain = heartbeat_for(parse_options([*REQUIRED, "--queen-url", queen.url], env={}))
    assert plain is not None
    await asyncio.to_thread(plain.send)
    assert queen.authorizations[-1] is None
