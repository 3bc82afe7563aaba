"""End to end: a source URL with credentials (user info, a token in the query). `hive serve`
downloads with them (HTTP Basic on the HEAD and on the GET) and never shows or stores them:
not in an API answer, an event, a log line, `hive get models` or a file under the home,
while the record lives, after a failure, a retry and a fix, and after the record goes."""

from __future__ import annotations

import base64
import shutil
import stat
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.hub import ThreadedHub, hf_env
from tests.conftest import Hive, model_yaml, poll, run_hive, write_atomic

pytestmark = pytest.mark.e2e
MB = 1_000_000
USER, PASSWORD, TOKEN = "alice", "S3CR3T-XYZ", "T0K3N-QQQ"
WRONG = "WR0NG-PW-77"
#: What must never appear: the password, the token, a wrong password once tried, and the
#: Basic header built from the right one.
NEEDLES = (
    PASSWORD.encode(),
    TOKEN.encode(),
    WRONG.encode(),
    base64.b64encode(f"{USER}:{PASSWORD}".encode()),
)


def _read_events(hive: Hive) -> bytes:
    """`/v1/events?since=0` from its start to the last event hive had narrated when asked."""
    last = hive.get("/v1/status")["last_event_id"]
    out = bytearray()
    seen = 0
    with urllib.request.urlopen(hive.url + "/v1/events?since=0", timeout=10) as response:
        for line in response:
            out += line
            if line.startswith(b"id: "):
                seen = int(line[4:])
            elif line == b"\n" and seen >= last:
                break
    return bytes(out)


def _get_models(hive: Hive) -> bytes:
    listed = run_hive("get", "models", "--url", hive.url)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.encode()


def _raw(hive: Hive, path: str) -> bytes:
    with urllib.request.urlopen(hive.url + path, timeout=10) as response:
        return bytes(response.read())


def leaks(hive: Hive, *, models: tuple[str, ...] = ("m",)) -> list[str]:
    """Every place a secret shows: API answers, events, `hive get models`, hive's output
    (stderr and stdout), and every file (its name and bytes) under the home."""
    places: dict[str, bytes] = {
        "GET /v1/models": _raw(hive, "/v1/models"),
        "GET /v1/status": _raw(hive, "/v1/status"),
        "GET /metrics": _raw(hive, "/metrics"),
        "GET /v1/events?since=0": _read_events(hive),
        "hive get models": _get_models(hive),
        "hive's output": hive.log.read_bytes(),
    }
    for name in models:
        places[f"GET /v1/models/{name}"] = _raw(hive, f"/v1/models/{name}")
    for path in sorted(hive.home.rglob("*")):
        places[f"name of {path}"] = str(path).encode()
        if path.is_file() and not path.is_symlink():
            places[str(path)] = path.read_bytes()
    return [
        f"{where} holds {needle.decode()}"
        for where, text in places.items()
        for needle in NEEDLES
        if needle in text
    ]


def test_credentials_in_a_source_url_are_sent_as_a_header_and_never_shown(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    size = 8 * MB
    model = tmp_path / "m.gguf"
    shutil.copy(tiny_model, model)
    with model.open("ab") as fh:
        fh.truncate(size)
    hub.add_plain_file("m.gguf", model, basic=(USER, PASSWORD), token=TOKEN)
    desired = tmp_path / "desired"
    desired.mkdir()
    hive = hive_factory(
        desired=[desired],
        env={**hf_env(hub, tmp_path / "hf"), "HIVE_BACKOFF_BASE": "0.1"},
    )
    url = f"127.0.0.1:{hub.port}/m.gguf?token="
    shown = f"http://{USER}:***@{url}***"

    # A wrong password: refused, and the failure names the URL, redacted.
    write_atomic(desired / "m.yaml", model_yaml("m", f"http://{USER}:{WRONG}@{url}{TOKEN}"))
    failed = hive.wait_phase("m", "Failed", timeout=30)
    assert shown in failed["status"]["message"], failed["status"]
    assert leaks(hive) == []

    # The right one, with the first GET cut short: a retry, a sidecar on disk meanwhile.
    hub.throttle(4 * MB)
    hub.drop_after(2 * MB)
    write_atomic(desired / "m.yaml", model_yaml("m", f"http://{USER}:{PASSWORD}@{url}{TOKEN}"))
    sidecar = hive.home / "models" / "m" / "model.gguf.partial.json"
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    poll(
        lambda: sidecar.exists() and partial.exists() and partial.stat().st_size > MB,
        timeout=30,
        what="a partial download",
    )
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert leaks(hive) == []
    hub.throttle(None)
    available = hive.wait_phase("m", "Available", timeout=60)
    assert available["spec"]["source"] == shown
    assert available["observed"]["metadata"]["source"] == shown
    metadata = hive.home / "models" / "m" / "metadata.json"
    assert stat.S_IMODE(metadata.stat().st_mode) == 0o600
    assert any(e["action"] == "model_download_retry" for e in hive.events)

    # The credentials went as a header on the HEAD and on every GET, never in a URL.
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    served = [r for r in hub.requests_to("plain") if r.status in (200, 206)]
    assert {r.method for r in served} == {"HEAD", "GET"}
    assert all(r.headers.get("Authorization") == basic for r in served)
    assert all("@" not in r.path for r in hub.requests_to("plain"))
    assert leaks(hive) == []

    # The record goes (the files stay, as hive keeps them): still nothing shows.
    (
        desired / ".hive-allow-empty"
    ).touch()  # the last manifest goes (an empty directory is refused)
    (desired / "m.yaml").unlink()
    poll(lambda: (hive.model("m") or {}).get("managed") is False, what="the record to go")
    assert leaks(hive) == []
