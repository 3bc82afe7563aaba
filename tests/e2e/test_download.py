"""End to end: `hive serve` downloading from a hub-compatible server on loopback, through
faults: crashes, dropped connections, full disks, 401/404/429/5xx, corrupt bytes, changed
files, cancellation."""

from __future__ import annotations

import hashlib
import itertools
import re
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.hub import ThreadedHub, hf_env
from tests.conftest import (
    Hive,
    degraded,
    grow,
    hive_on_hub,
    padded,
    poll,
    run_hive,
    write_atomic,
)

pytestmark = pytest.mark.e2e
REPO = "hive-test/tiny-GGUF"
MB = 1_000_000
#: Longer than hive's own first back-off (1-2 s), so only honouring the header explains it.
RETRY_AFTER = 3


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(name: str, source: str, **spec: Any) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    return (
        f"apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: {name}\nspec:\n"
        f"  source: {source}\n{extra}"
    )


def test_hf_file_is_downloaded_verified_and_described(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    f = hub.add_file(REPO, "tiny.Q4_K_M.gguf", tiny_model)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("tiny", f"hf://{REPO}/tiny.Q4_K_M.gguf"))
    model = hive.wait_phase("tiny", "Available")
    meta = model["observed"]["metadata"]
    assert meta["sha256"] == f.sha256 == sha256(tiny_model)
    assert meta["verified"] is True  # against the hub's LFS hash
    assert meta["revision"] == hub.commit(REPO)
    assert meta["architecture"] == "llama"
    steps = [a for a in hive.actions("Model/tiny") if a.startswith("model_download")]
    assert steps[0] == "model_download_start"
    assert steps[-2:] == ["model_download_verified", "model_download_complete"]
    assert not list((hive.home / "models" / "tiny").glob("*.partial*"))


def test_quantization_tag_picks_the_file_or_lists_what_is_there(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    hub.add_file(REPO, "tiny.Q4_K_M.gguf", tiny_model)
    hub.add_file(REPO, "tiny.Q8_0.gguf", padded(tiny_model, tmp_path / "q8.gguf", 600_000))
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "a.yaml", manifest("q8", f"hf://{REPO}:Q8_0"))
    write_atomic(desired / "b.yaml", manifest("q2", f"hf://{REPO}:Q2_K"))
    assert hive.wait_phase("q8", "Available")["observed"]["metadata"]["size"] == 600_000
    missing = hive.wait_phase("q2", "Failed")
    assert "Q4_K_M" in missing["status"]["message"]
    assert "Q8_0" in missing["status"]["message"]


def test_sigkill_half_way_resumes_from_the_bytes_on_disk(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    size = 200 * MB
    big = padded(tiny_model, tmp_path / "big.gguf", size)
    hub.add_file(REPO, "big.gguf", big)
    hub.throttle(40 * MB)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("big", f"hf://{REPO}/big.gguf"))
    partial = hive.home / "models" / "big" / "model.gguf.partial"
    poll(
        lambda: partial.exists() and partial.stat().st_size > size // 2,
        timeout=60,
        what="half the download",
    )
    hive.kill()
    on_disk = partial.stat().st_size
    assert 0 < on_disk < size
    hub.throttle(None)

    again = hive_on_hub(hive_factory, hub, desired, tmp_path, home=hive.home)
    model = again.wait_phase("big", "Available", timeout=60)
    assert model["observed"]["metadata"]["sha256"] == sha256(big)
    resumed = [r for r in hub.requests_to("cdn", "GET") if r.range_start]
    assert resumed, "no Range request reached the server"
    assert resumed[-1].range_start == on_disk
    assert hub.body_bytes_sent("cdn") < 1.1 * size
    assert "model_download_resumed" in again.actions("Model/big")


def test_dropped_connections_and_server_errors_are_retried(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", 5 * MB))
    hub.drop_after(1 * MB)
    hub.fail_next(500, times=1, routes=("cdn",))
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    hive.wait_phase("m", "Available", timeout=60)
    assert "model_download_retry" in hive.actions("Model/m")


def test_429_with_retry_after_is_honoured(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    hub.add_file(REPO, "m.gguf", tiny_model)
    hub.fail_next(429, times=1, retry_after=RETRY_AFTER, routes=("cdn",))
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    hive.wait_phase("m", "Available", timeout=60)
    retries = [e for e in hive.events if e["action"] == "model_download_retry"]
    assert len(retries) == 1
    assert "429" in retries[0]["message"]
    # The wait as the hub saw it: from the refused request to hive's next one.
    seen = hub.requests_to()
    refused = [i for i, r in enumerate(seen) if r.fault == "fail"]
    assert len(refused) == 1
    assert refused[0] + 1 < len(seen), "no request after the refused one"
    gap = seen[refused[0] + 1].arrived - seen[refused[0]].arrived
    assert gap >= RETRY_AFTER, f"retried {gap:.2f} s after a Retry-After of {RETRY_AFTER} s"


def test_wrong_bytes_fail_with_both_hashes_and_no_model_file(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    f = hub.add_file(REPO, "m.gguf", tiny_model)
    hub.corrupt()
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    model = hive.wait_phase("m", "Failed", timeout=30)
    assert f.sha256 in model["status"]["message"]
    assert degraded(model)["reason"] == "ChecksumMismatch"
    got = [h for h in re.findall(r"\b[0-9a-f]{64}\b", model["status"]["message"]) if h != f.sha256]
    assert got, model["status"]["message"]
    assert not (hive.home / "models" / "m" / "model.gguf").exists()
    assert not list((hive.home / "models" / "m").glob("*.partial"))
    # It was downloaded twice (retried once), and is not tried again without a change.
    assert len(hub.requests_to("cdn", "GET")) == 2


@pytest.mark.parametrize(
    ("setup", "reason", "hint"),
    [
        ("token", "Unauthorized", "HF_TOKEN"),
        ("missing", "NotFound", "not found"),
    ],
)
def test_401_and_404_stop_with_a_clear_reason(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
    setup: str,
    reason: str,
    hint: str,
) -> None:
    hub.add_file(REPO, "m.gguf", tiny_model)
    if setup == "token":
        hub.require_token("s3cret")
    path = "m.gguf" if setup == "token" else "nope.gguf"
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/{path}"))
    model = hive.wait_phase("m", "Failed", timeout=30)
    assert degraded(model)["reason"] == reason
    assert hint in model["status"]["message"]
    assert not (hive.home / "models" / "m").exists()  # nothing left behind
    assert "hive tries again when the record changes" in model["status"]["message"]


def test_a_token_from_hf_token_is_sent(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    hub.add_file(REPO, "m.gguf", tiny_model)
    hub.require_token("s3cret")
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path, env={"HF_TOKEN": "s3cret"})
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    hive.wait_phase("m", "Available", timeout=30)


def test_a_file_changed_on_the_server_mid_way_starts_over(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    first = padded(tiny_model, tmp_path / "v1.gguf", 20 * MB)
    second = padded(tiny_model, tmp_path / "v2.gguf", 21 * MB)
    hub.add_file(REPO, "m.gguf", first)
    hub.throttle(5 * MB)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    url = hub.resolve_url(REPO, "m.gguf")  # a plain https-style source, following redirects
    write_atomic(desired / "m.yaml", manifest("m", url))
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    poll(lambda: partial.exists() and partial.stat().st_size > 2 * MB, what="some bytes")
    hive.kill()
    hub.replace_file(REPO, "m.gguf", second)  # a new upload while hive was down
    hub.throttle(None)

    again = hive_on_hub(hive_factory, hub, desired, tmp_path, home=hive.home)
    model = again.wait_phase("m", "Available", timeout=60)
    assert model["observed"]["metadata"]["sha256"] == sha256(second)
    restarted = again.wait_event("model_download_restarted", obj="Model/m")
    assert "changed on the server" in restarted["message"]


def test_removing_the_record_stops_the_download_and_keeps_the_partial(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    size = 50 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    hub.throttle(5 * MB)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    poll(lambda: partial.exists() and partial.stat().st_size > MB, what="some bytes")
    (desired / ".hive-allow-empty").touch()  # the last record may go
    (desired / "m.yaml").unlink()
    hive.wait_event("model_download_cancelled", obj="Model/m", timeout=5)
    stopped_at = partial.stat().st_size
    stopped = hive.model("m")
    assert stopped is not None
    assert stopped["status"]["phase"] == "Failed"  # not "Downloading": nothing is
    assert "partial download is kept" in stopped["observed"]["metadata"]["error"]
    poll(
        lambda: all(not r.status or r.aborted or r.sent < size for r in hub.requests),
        what="the transfer to end",
    )
    assert stopped_at < size

    listed = run_hive("get", "models", "--url", hive.url)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("m "))
    assert "% " in row and " MB / 50.0 MB" in row, row  # the partial is visible, as logged

    deleted = run_hive("delete", "model", "m", "--url", hive.url)
    assert deleted.returncode == 0, deleted.stderr
    assert "partial download" in deleted.stdout
    assert not (hive.home / "models" / "m").exists()


def test_re_adding_the_record_resumes(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    size = 30 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    hub.throttle(5 * MB)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    text = manifest("m", f"hf://{REPO}/m.gguf")
    write_atomic(desired / "m.yaml", text)
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    poll(lambda: partial.exists() and partial.stat().st_size > MB, what="some bytes")
    (desired / ".hive-allow-empty").touch()  # the last record may go
    (desired / "m.yaml").unlink()
    hive.wait_event("model_download_cancelled", obj="Model/m", timeout=5)
    hub.throttle(None)
    write_atomic(desired / "m.yaml", text)
    hive.wait_phase("m", "Available", timeout=60)
    assert any(r.range_start for r in hub.requests_to("cdn", "GET"))


def test_a_full_disk_is_a_clear_condition_and_the_download_completes_after(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: writes past it fail
    with EFBIG, as they would with ENOSPC; raising it frees the space."""
    size = 30 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    limit = 10 * MB

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    hive = hive_on_hub(hive_factory, hub, desired, tmp_path, preexec_fn=cap)
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    model = hive.wait_phase("m", "Failed", timeout=30)
    assert degraded(model)["reason"] == "InsufficientSpace"
    assert "resumes when space is freed" in model["status"]["message"]
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    assert partial.stat().st_size == limit  # kept for the resume

    resource.prlimit(
        hive.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    model = hive.wait_phase("m", "Available", timeout=60)
    assert model["observed"]["metadata"]["size"] == size
    assert "model_download_resumed" in hive.actions("Model/m")


def test_downloads_wait_for_a_slot_without_blocking_other_work(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    hub.add_file(REPO, "a.gguf", padded(tiny_model, tmp_path / "a.gguf", 20 * MB))
    hub.add_file(REPO, "b.gguf", padded(tiny_model, tmp_path / "b.gguf", 20 * MB))
    hub.throttle(5 * MB)
    # Two reconcile workers, one download slot: a queued download must not hold the other.
    hive = hive_on_hub(
        hive_factory,
        hub,
        desired,
        tmp_path,
        extra_args=["--max-downloads", "1"],
        env={"HIVE_MAX_CONCURRENT_ACTIONS": "2"},
    )
    write_atomic(
        desired / "m.yaml",
        manifest("a", f"hf://{REPO}/a.gguf") + "---\n" + manifest("b", f"hf://{REPO}/b.gguf"),
    )
    queued = hive.wait_event("model_download_queued", timeout=15)
    assert "1 downloads at a time" in queued["message"]
    write_atomic(desired / "local.yaml", manifest("local", f"file:{tiny_model}"))
    hive.wait_phase("local", "Available", timeout=15)
    running = "b" if queued["object"] == "Model/a" else "a"
    assert hive.phase(running) == "Downloading"  # the copy did not wait for the download
    hub.throttle(None)
    hive.wait_phase("a", "Available", timeout=30)
    hive.wait_phase("b", "Available", timeout=30)


def test_a_new_rate_limit_applies_to_the_running_download(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    # At 2 MB/s this would take 100 s, far past the wait below: only the new limit,
    # applied to the running transfer, lets it finish in time.
    size = 200 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    path = desired / "m.yaml"
    write_atomic(path, manifest("m", f"hf://{REPO}/m.gguf", download="{rateLimit: 2MB/s}"))
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    poll(lambda: partial.exists() and partial.stat().st_size > MB, what="some bytes")
    write_atomic(path, manifest("m", f"hf://{REPO}/m.gguf", download="{rateLimit: 1GB/s}"))
    model = hive.wait_phase("m", "Available", timeout=30)
    assert model["status"]["observedGeneration"] == 2
    actions = hive.actions("Model/m")
    assert "model_download_cancelled" not in actions  # applied in flight, not restarted
    assert actions.count("model_download_start") == 1, "\n".join(
        f"{e['action']}: {e['message']}" for e in hive.events if e.get("object") == "Model/m"
    )
    assert len(hub.requests_to("cdn", "GET")) == 1


def test_a_split_model_is_fetched_as_one_set(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    parts = [padded(tiny_model, tmp_path / f"p{i}.gguf", (i + 1) * MB) for i in range(3)]
    for i, part in enumerate(parts, start=1):
        hub.add_file(REPO, f"big-Q4_K_M-{i:05d}-of-00003.gguf", part)
    hub.add_file(REPO, "big-Q8_0.gguf", tiny_model)
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path)
    write_atomic(desired / "m.yaml", manifest("big", f"hf://{REPO}:Q4_K_M"))
    model = hive.wait_phase("big", "Available", timeout=60)
    meta = model["observed"]["metadata"]
    names = [f["name"] for f in meta["files"]]
    assert names == [f"model-{i:05d}-of-00003.gguf" for i in range(1, 4)]
    assert [f["sha256"] for f in meta["files"]] == [sha256(p) for p in parts]
    assert meta["path"].endswith("model-00001-of-00003.gguf")
    assert meta["size"] == 6 * MB
    assert meta["tensor_count"] == 3 * 21  # summed over the parts
    directory = hive.home / "models" / "big"
    assert sorted(p.name for p in directory.glob("*.gguf")) == names
    poll(
        lambda: (m := hive.model("big")) is not None and m["observed"]["metadata"]["synced"],
        timeout=30,
        what="every part fsynced after publishing",
    )
    # The event follows the metadata's write: wait for it too.
    poll(lambda: "model_synced" in hive.actions("Model/big"), what="the model_synced event")

    # A part lost on disk makes the model incomplete: it is fetched again.
    hive.stop()
    (directory / names[1]).unlink()
    again = hive_factory(desired=[desired], home=hive.home, env=hf_env(hub, tmp_path / "hf"))
    again.wait_phase("big", "Available", timeout=60)
    assert (directory / names[1]).exists()

    # The record moves to a one-file quantization: the split parts go once it is published.
    write_atomic(desired / "m.yaml", manifest("big", f"hf://{REPO}:Q8_0"))
    poll(
        lambda: (
            (m := again.model("big")) is not None
            and m["observed"]["metadata"]["path"].endswith("/model.gguf")
            and m["status"]["phase"] == "Available"
        ),
        timeout=60,
        what="the one-file model",
    )
    assert sorted(p.name for p in directory.glob("*.gguf")) == ["model.gguf"]


def test_free_space_is_checked_before_starting(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
    small_disk: Path,
) -> None:
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", 30 * MB))
    hive = hive_on_hub(hive_factory, hub, desired, tmp_path, home=small_disk / "home")
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    model = hive.wait_phase("m", "Failed", timeout=30)
    assert degraded(model)["reason"] == "InsufficientSpace"
    assert "30.0 MB still to download" in model["status"]["message"]
    assert not hub.requests_to("cdn", "GET")  # nothing fetched that cannot fit

    grow(small_disk, "64m")
    model = hive.wait_phase("m", "Available", timeout=60)
    assert model["observed"]["metadata"]["size"] == 30 * MB


def test_a_download_past_the_action_timeout_resumes_where_it_stopped(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    size = 12 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    hub.throttle(4 * MB)  # 3 s at least, against a 1 s action timeout
    hive = hive_on_hub(
        hive_factory,
        hub,
        desired,
        tmp_path,
        env={"HIVE_ACTION_TIMEOUT": "1", "HIVE_BACKOFF_BASE": "0.1", "HIVE_BACKOFF_CAP": "0.2"},
    )
    write_atomic(desired / "m.yaml", manifest("m", f"hf://{REPO}/m.gguf"))
    model = hive.wait_phase("m", "Available", timeout=60)
    assert model["observed"]["metadata"]["sha256"] == sha256(tmp_path / "m.gguf")
    timeouts = [
        e
        for e in hive.events
        if e["action"] == "model_download_failed" and e["data"]["reason"] == "Timeout"
    ]
    assert timeouts  # the slow transfer was stopped by the timeout...
    # ...and each attempt resumed where the last one stopped. (Not the bytes the hub sent:
    # what sat in the sockets' buffers when an attempt timed out counts there, up to some
    # MB per attempt on a loaded machine.)
    starts = [r.range_start or 0 for r in hub.requests_to("cdn", "GET")]
    assert len(starts) > len(timeouts)
    assert starts[0] == 0
    # Never back to an earlier byte; an attempt that timed out before its first byte landed
    # (a loaded machine) leaves the next one at the same place.
    assert all(a <= b for a, b in itertools.pairwise(starts)), starts
    assert starts[-1] > 0, starts
