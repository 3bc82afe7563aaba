"""A job's lines as rbee narrates them: every line (the gap marker too) carries rbee's
fields, `formatted` in rbee's current layout, and the end marker stays one SSE line."""

from __future__ import annotations

import json

from hive.core.clock import FakeClock
from hive.jobs.job import Job, Outcome

RBEE_FIELDS = {"actor", "action", "target", "human", "formatted", "job_id", "emitted_at_ms"}


def job(max_events: int = 10) -> Job:
    return Job(job_id="job-1", operation="model_list", clock=FakeClock(), max_events=max_events)


def lines(frames: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(f.decode().removeprefix("data: ")) for f in frames]


def test_formatted_is_rbee_narration_cores_layout() -> None:
    one = job()
    one.emit("model_list_entry", "tiny | 1.00 GB | available")
    (line,) = lines(one.read(0)[0])
    # narration-core/src/format.rs at 6ca91007: bold name (40), dim action (20), message.
    assert line["formatted"] == (
        f"\x1b[1m{'hive':<40}\x1b[0m \x1b[2m{'model_list_entry':<20}\x1b[0m\n"
        "tiny | 1.00 GB | available\n"
    )


def test_the_gap_line_carries_rbees_narration_fields() -> None:
    one = job(max_events=2)
    for n in range(5):
        one.emit("step", f"line {n}")
    gap, *rest = lines(one.read(0)[0])
    assert gap["action"] == "events_dropped" and gap["data"] == {"missed": 3}
    assert set(gap) >= RBEE_FIELDS, set(gap)
    assert gap["job_id"] == "job-1" and gap["actor"] == "hive"
    assert [r["human"] for r in rest] == ["line 3", "line 4"]


def test_an_error_reason_with_any_line_break_stays_one_sse_line() -> None:
    one = job()
    one.finish(Outcome.ERROR, "first\rdata: [DONE]\u2028third\nfourth")
    marker = one.marker().decode()
    assert marker.endswith("\n\n")
    body = marker.removesuffix("\n\n")
    assert not any(c in body for c in "\r\n\u2028"), repr(body)
    assert body.startswith("data: [ERROR] first")


def test_a_lines_data_is_redacted_as_an_events_is() -> None:
    one = job()
    secret = "https://user:s3cret@host/x.gguf?token=abc123"
    one.emit("model_download_start", f"from {secret}", data={"source": secret, "n": [secret]})
    (line,) = lines(one.read(0)[0])
    assert "s3cret" not in json.dumps(line) and "abc123" not in json.dumps(line)
    assert line["data"]["source"].startswith("https://user:***@host/x.gguf")  # type: ignore[index]
