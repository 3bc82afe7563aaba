"""End to end: the token of a real `hive serve`. The CLI's client commands send it from
--token or HIVE_TOKEN, reads included, and say what to do without it; a bind beyond
loopback is refused without a token and, with one, every route but /health needs it."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, Hive, free_port, model_yaml, poll, run_hive

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token-e2e-token-e2e"


@pytest.fixture
def guarded(tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]) -> Hive:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(desired=[desired], env={"HIVE_TOKEN": TOKEN})
    hive.wait_phase("tiny", "Available")
    return hive


@pytest.mark.parametrize(
    "command",
    [("get", "models"), ("get", "status"), ("logs", "ghost"), ("delete", "model", "ghost")],
)
def test_client_commands_send_the_token_on_reads_and_writes(
    guarded: Hive, command: tuple[str, ...]
) -> None:
    without = run_hive(*command, "--url", guarded.url, env={"HIVE_TOKEN": ""})
    assert without.returncode == 2
    (line,) = without.stderr.splitlines()
    # Each command words it its own way (with the URL and status, or hive's message alone);
    # every one says what to send and how the CLI sends it.
    assert "needs `Authorization: Bearer <token>`" in line and "--token or HIVE_TOKEN" in line
    assert TOKEN not in line

    for how in (["--token", TOKEN], []):
        env = {"HIVE_TOKEN": "" if how else TOKEN}
        result = run_hive(*command, "--url", guarded.url, *how, env=env)
        if command[0] == "get":
            assert result.returncode == 0, result.stderr
            assert "tiny" in result.stdout or "Models: 1 Available" in result.stdout
        else:  # past the token: the route's own answer
            assert result.returncode == 2
            assert result.stderr.startswith("hive: "), result.stderr
            assert "ghost" in result.stderr and "Authorization" not in result.stderr


def _answer(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return 0


def test_a_bind_beyond_loopback_is_refused_without_a_token(tmp_path: Path) -> None:
    # TEST-NET-2: never this machine's, so a regression fails to bind instead of listening.
    result = run_hive(
        "serve", "--home", str(tmp_path / "home"), "--host", "198.51.100.7", "--port", "0"
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("hive: refusing to listen on 198.51.100.7 without a token")
    assert not (tmp_path / "home").exists()


def _address_beyond_loopback() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET:
                ip = ipaddress.ip_address(address.address)
                if not ip.is_loopback and not ip.is_link_local:
                    return str(ip)
    return None


def test_a_bind_beyond_loopback_with_a_token_needs_it(tmp_path: Path) -> None:
    host = _address_beyond_loopback()
    if host is None:
        pytest.skip("this machine has no IPv4 address beyond loopback")
    port = free_port()
    log = tmp_path / "hive.log"
    args = ["--home", str(tmp_path / "home"), "--host", host, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hive", "serve", *args, "--gpu-probe", "none"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "HIVE_TOKEN": TOKEN, "HIVE_CONSOLE": "0"},
        )
    url = f"http://{host}:{port}"
    try:
        poll(lambda: _answer(url + "/health") == 200, timeout=20, what=f"hive on {url}")
        assert _answer(url + "/v1/status") == 401
        assert _answer(url + "/v1/status", "wrong-token-wrong-token") == 401
        assert _answer(url + "/metrics") == 401
        assert _answer(url + "/v1/status", TOKEN) == 200
        assert _answer(url + "/metrics", TOKEN) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert TOKEN not in log.read_text()
