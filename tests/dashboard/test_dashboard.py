"""The dashboard in a real browser: each panel against a real hive."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from testkit.hub import ThreadedHub
from tests.conftest import Hive, model_yaml
from tests.dashboard.conftest import Page


def test_status_panel_shows_the_hive_its_sources_and_a_broken_manifest_with_its_line(
    dash_hive: Callable[..., Hive],
    open_page: Callable[..., Page],
    desired: Path,
    tiny_model: Path,
) -> None:
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "broken.yaml").write_text(
        "apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: Broken\nspec:\n  source: x\n"
    )
    hive = dash_hive(desired)
    hive.wait_phase("tiny", "Available")
    ui = open_page(hive.url)
    page = ui.page
    page.wait_for_selector("#conn[data-state=live]")
    status = hive.get("/v1/status")
    assert page.text_content("#h-id") == status["hive_id"]
    assert page.text_content("#h-addr").endswith(f":{hive.port}")
    assert page.text_content("#h-version") == f"v{hive.get('/health')['version']}"
    error = page.locator("#sources .source-error").first
    error.wait_for()
    assert f"{desired / 'broken.yaml'}:4" in error.text_content()
    assert "metadata.name" in error.text_content()
    page.wait_for_selector("#activity li")
    page.wait_for_function(
        "() => !/loading/.test(document.querySelector('#host-history').textContent)"
    )
    assert "not available" not in page.text_content("#host-history")
    ui.shot("status")
    # Live: a file fixed on disk clears the error without a reload.
    (desired / "broken.yaml").write_text(model_yaml("other", f"file:{tiny_model}"))
    page.wait_for_selector("#sources .source-error", state="detached")
    page.emulate_media(color_scheme="dark")
    ui.shot("status-dark")
    page.set_viewport_size({"width": 390, "height": 844})
    ui.shot("status-phone")
    # Nothing overflows a phone's width but the tables, which scroll in their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_models_table_fills_and_a_download_from_the_form_ends_available(
    dash_hive: Callable[..., Hive],
    open_page: Callable[..., Page],
    desired: Path,
    tiny_model: Path,
    hub: ThreadedHub,
) -> None:
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hub.add_file("tiny/tiny-model", "tiny.Q8_0.gguf", tiny_model)
    # About 2 s for the 0.5 MB file: long enough to see its progress.
    hive = dash_hive(desired, extra_args=["--download-rate-limit", "250KB/s"])
    hive.wait_phase("tiny", "Available")
    ui = open_page(hive.url)
    page = ui.page
    ui.tab("models")
    row = page.locator("#models tr[data-name=tiny]")
    row.wait_for()
    assert row.get_attribute("data-phase") == "Available"
    assert "llama" in row.text_content()
    # Owned by a file: read-only, the owner named.
    row.click()
    page.wait_for_selector("#model-detail")
    assert page.is_disabled("#model-delete")
    assert f"{desired / 'm.yaml'}:1" in page.text_content("#model-detail")
    assert "627264e5" in page.text_content("#model-detail")  # the checksum
    # A download through the job API, followed live to Available.
    # The hub's GGUF files, listed with their quantization; a click picks one.
    page.fill("#download-model", "tiny/tiny-model")
    page.click("#download-form button:has-text('List hub files')")
    listed = page.locator("#hub-file-list a", has_text="tiny.Q8_0.gguf")
    listed.wait_for(timeout=15_000)
    assert "Q8_0" in page.text_content("#hub-file-list")
    listed.click()
    assert page.input_value("#download-model") == listed.get_attribute("data-source")
    page.fill("#download-name", "tiny-model-q8-0")
    page.click("#download-form button[type=submit]")
    page.click("#models tr[data-name=tiny-model-q8-0]")
    progress = page.locator("#model-detail .progress [role=progressbar]")
    progress.wait_for()
    assert "%" in progress.text_content()
    ui.shot("models-downloading")
    new = page.locator("#models tr[data-name=tiny-model-q8-0][data-phase=Available]")
    new.wait_for(timeout=20_000)
    page.locator("#model-job-log", has_text="done").wait_for()
    assert hive.model("tiny-model-q8-0")["source"]["name"] == "api"  # type: ignore[index]
    new.click()
    page.locator("#model-detail h2", has_text="tiny-model-q8-0").wait_for()
    assert page.is_enabled("#model-delete")
    assert "model_available" in page.text_content("#model-detail")  # its last events
    ui.shot("models")
    # Delete through the job API.
    page.on("dialog", lambda d: d.accept())
    page.click("#model-delete")
    page.locator("#models tr[data-name=tiny-model-q8-0]").wait_for(state="detached")
    assert hive.model("tiny-model-q8-0") is None


def test_with_a_token_the_page_asks_for_it_and_refuses_a_wrong_one(
    dash_hive: Callable[..., Hive], open_page: Callable[..., Page], desired: Path
) -> None:
    token = "dashboard-token-0123456789"
    hive = dash_hive(desired, env={"HIVE_TOKEN": token})
    ui = open_page(hive.url, expect_401=True)
    page = ui.page
    dialog = page.locator("#token-dialog[open]")
    dialog.wait_for()
    page.fill("#token-input", "wrong-token-wrong-token")
    page.click("#token-submit")
    page.locator("#token-why", has_text="refused").wait_for()
    assert page.is_visible("#token-dialog")
    page.fill("#token-input", token)
    page.click("#token-submit")
    page.wait_for_selector("#conn[data-state=live]")
    assert page.text_content("#h-id") == hive.get("/v1/status")["hive_id"]
    assert page.evaluate("sessionStorage.getItem('hive-token')") == token
    assert page.evaluate("localStorage.length") == 0


def test_a_worker_spawned_from_the_form_runs_its_log_follows_and_kill_stops_it(
    dash_hive: Callable[..., Hive],
    open_page: Callable[..., Page],
    desired: Path,
    tiny_model: Path,
) -> None:
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = dash_hive(desired)
    hive.wait_phase("tiny", "Available")
    ui = open_page(hive.url)
    page = ui.page
    ui.tab("workers")
    page.locator("#spawn-model option[value=tiny]").wait_for(state="attached")
    page.select_option("#spawn-model", "tiny")
    page.select_option("#spawn-device", "CPU-0")
    page.select_option("#spawn-runtime", "scripted")
    page.fill("#spawn-name", "dash")
    page.select_option("#spawn-restart", "OnFailure")
    page.click("#spawn-submit")
    row = page.locator("#workers tr[data-name=dash][data-phase=Running]")
    row.wait_for(timeout=20_000)
    worker = hive.wait_worker("dash", "Running")
    assert worker["spec"]["restartPolicy"] == "OnFailure"  # the form's choice, declared
    pid = worker["observed"]["pid"]
    assert str(pid) in row.text_content()
    row.click()
    log = page.locator("#worker-log")
    log.wait_for()
    # The log follows: a line the worker writes now reaches the open viewer.
    page.locator("#worker-log", has_text="listening").wait_for(timeout=10_000)
    before = log.text_content()
    restart = hive.post("/v1/workers/dash/restart")
    assert restart[0] == 202, restart
    page.wait_for_function(
        "(n) => document.querySelector('#worker-log').textContent.length > n",
        arg=len(before),
        timeout=15_000,
    )
    history = page.locator("#worker-history")
    page.wait_for_function(
        "() => !/loading/.test(document.querySelector('#worker-history').textContent)"
    )
    assert "not available on this hive" not in history.text_content()
    ui.shot("workers")
    page.click("#worker-kill")
    page.locator("#workers tr[data-name=dash]").wait_for(state="detached", timeout=20_000)
    assert hive.worker("dash") is None


def test_device_cards_show_the_fake_gpus_and_spawn_opens_the_form_on_that_device(
    dash_hive: Callable[..., Hive], open_page: Callable[..., Page], desired: Path, fake_gpus: str
) -> None:
    hive = dash_hive(desired)
    ui = open_page(hive.url)
    page = ui.page
    ui.tab("devices")
    gpu0 = page.locator(".card.device[data-device=GPU-0]")
    gpu0.wait_for()
    text = gpu0.text_content()
    assert "NVIDIA GeForce RTX 4090" in text
    assert "4.6 GB / 24.6 GB" in text  # 24564 MB total, 20000 MB free
    assert "61.0 °C" in text or "61 °C" in text
    assert "37.0 %" in text
    gpu1 = page.locator(".card.device[data-device=GPU-1]")
    assert "0 B / 81.9 GB" in gpu1.text_content()
    assert "not available" in gpu1.text_content()  # no temperature reported: said so
    assert "ok" in (gpu1.get_attribute("class") or "")  # green: available, unused
    ui.shot("devices")
    # Live without a re-read: the stream's samples carry the GPUs' new readings.
    gpus = json.loads(Path(fake_gpus.removeprefix("fake:")).read_text())
    gpus["gpus"][1]["vram_free_mb"] = 40960
    gpus["gpus"][1]["temperature_celsius"] = 55.0
    Path(fake_gpus.removeprefix("fake:")).write_text(json.dumps(gpus))
    gpu1.locator("text=41.0 GB / 81.9 GB").wait_for(timeout=6_000)
    assert "55" in gpu1.text_content()
    gpu1.locator("button.spawn-here").click()
    page.wait_for_selector("#spawn-form")
    assert page.input_value("#spawn-device") == "GPU-1"


def test_the_page_reconnects_after_hive_restarts(
    dash_hive: Callable[..., Hive],
    open_page: Callable[..., Page],
    desired: Path,
    tiny_model: Path,
) -> None:
    hive = dash_hive(desired)
    ui = open_page(hive.url)
    page = ui.page
    streams: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: streams.append(r.headers) if "/v1/events" in r.url else None,
    )
    page.wait_for_selector("#conn[data-state=live]")
    ui.tab("models")
    ui.hive_down = True
    hive.stop()
    page.wait_for_selector("#conn[data-state=reconnecting]", timeout=10_000)
    assert "reconnecting" in page.text_content("#conn")
    # Declared while hive was down: seen once hive is back, without a reload.
    (desired / "m.yaml").write_text(model_yaml("later", f"file:{tiny_model}"))
    hive.start()
    page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
    ui.hive_down = False
    page.locator("#models tr[data-name=later][data-phase=Available]").wait_for(timeout=15_000)
    # The stream was opened again with the id of the last event the page had.
    assert any("last-event-id" in h for h in streams), streams
