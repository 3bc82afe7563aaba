"""`/v1/devices`, rbee's `/v1/capabilities` and the machine's part of `/v1/status`, with a
FakeGpuProbe of two GPUs and on a CPU-only machine; the views the job API calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import yaml

from hive.api.devices import device_get, device_list, hive_status
from hive.errors import NotFound
from tests.api.conftest import Serve
from tests.api.test_openapi import SPEC_PATH, assert_answer, assert_valid
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

TWO_GPUS = {
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 4090",
            "vram_total_mb": 24564,
            "vram_free_mb": 20000,
            "temperature_celsius": 61.0,
            "utilization_percent": 37.0,
            "power_watts": 212.5,
            "compute_capability": "8.9",
        },
        {"index": 1, "name": "NVIDIA A100", "vram_total_mb": 81920, "vram_free_mb": 81920},
    ]
}


def fake_gpus(tmp_path: Path, content: dict[str, Any]) -> str:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(content))
    return f"fake:{path}"


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.json()


async def test_devices_with_two_gpus(serve: Serve, tmp_path: Path) -> None:
    async with serve(gpu_probe=fake_gpus(tmp_path, TWO_GPUS)) as (manager, url):
        code, body = await get(url + "/v1/devices")
        assert code == 200
        assert body["gpu_error"] is None
        cpu, gpu0, gpu1 = body["items"]
        assert [d["id"] for d in body["items"]] == ["CPU-0", "GPU-0", "GPU-1"]
        assert gpu0 == {
            "id": "GPU-0",
            "device_id": 0,
            "device_type": "cuda",
            "name": "NVIDIA GeForce RTX 4090",
            "vendor": "NVIDIA",
            "vram_total_mb": 24564,
            "vram_available_mb": 20000,
            "compute_capability": "8.9",
            "max_threads": None,
            "available": True,
            "in_use": False,
            "workers": [],
            "temperature_celsius": 61.0,
            "power_usage_watts": 212.5,
            "utilization_percent": 37.0,
        }
        assert gpu1["device_id"] == 1 and gpu1["temperature_celsius"] is None
        assert cpu["device_type"] == "cpu" and cpu["device_id"] == 0
        assert cpu["max_threads"] == psutil.cpu_count()
        assert cpu["vram_total_mb"] == psutil.virtual_memory().total // (1 << 20)

        code, one = await get(url + "/v1/devices/GPU-1")
        assert code == 200 and one == gpu1
        code, missing = await get(url + "/v1/devices/GPU-7")
        assert code == 404
        assert missing["error"]["message"] == (
            "device 'GPU-7' is not on this machine; its devices: CPU-0, GPU-0, GPU-1"
        )
        # The job API's views: rbee's ways of naming a device too.
        assert device_get(manager, "cuda:1").id == "GPU-1"
        assert device_get(manager, "cpu").id == "CPU-0"
        assert [d.id for d in device_list(manager)] == ["CPU-0", "GPU-0", "GPU-1"]
        with pytest.raises(NotFound):
            device_get(manager, "cuda:9")


async def test_a_cpu_only_machine_has_one_device(serve: Serve) -> None:
    async with serve(gpu_probe="none") as (_, url):
        code, body = await get(url + "/v1/devices")
        assert code == 200
        assert [d["id"] for d in body["items"]] == ["CPU-0"]
        code, caps = await get(url + "/v1/capabilities")
        assert code == 200
        cores = psutil.cpu_count()
        ram_gb = round(psutil.virtual_memory().total / (1 << 30))
        assert caps == {
            "devices": [
                {
                    "id": "CPU-0",
                    "name": f"CPU ({cores} cores)",
                    "device_type": "cpu",
                    "vram_gb": ram_gb,
                    "compute_capability": None,
                }
            ]
        }


async def test_capabilities_are_rbees_shape_on_both_paths(serve: Serve, tmp_path: Path) -> None:
    async with serve(gpu_probe=fake_gpus(tmp_path, TWO_GPUS)) as (_, url):
        for path in ("/capabilities", "/v1/capabilities"):
            code, caps = await get(url + path)
            assert code == 200
            assert list(caps) == ["devices"]
            for device in caps["devices"]:
                assert list(device) == [
                    "id",
                    "name",
                    "device_type",
                    "vram_gb",
                    "compute_capability",
                ]
            gpu0, gpu1, cpu = caps["devices"]
            assert gpu0 == {
                "id": "GPU-0",
                "name": "NVIDIA GeForce RTX 4090",
                "device_type": "gpu",
                "vram_gb": 24,
                "compute_capability": "8.9",
            }
            assert gpu1["vram_gb"] == 80 and gpu1["compute_capability"] is None
            assert cpu["id"] == "CPU-0" and cpu["device_type"] == "cpu"


async def test_status_has_the_seeds_hive_status_fields(
    serve: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    home = tmp_path / "home"
    install_scripted_runtime(home)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "worker.yaml").write_text(worker_yaml("w", "tiny"))
    settings = {
        "gpu_probe": fake_gpus(tmp_path, TWO_GPUS),
        "worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}",
        "stop_workers_on_exit": True,
    }
    async with serve(**settings) as (manager, url):

        async def running() -> dict[str, Any] | None:
            _, body = await get(url + "/v1/status")
            return body if body["workers_running"] == 1 else None

        status = await apoll(running, within=20, what="the worker to run")
        for field in (
            "hive_id",
            "hostname",
            "ip_address",
            "port",
            "status",
            "uptime_seconds",
            "started_at",
            "cpu_cores",
            "memory_total_mb",
            "memory_available_mb",
            "disk_total_gb",
            "disk_available_gb",
            "devices",
            "workers_running",
            "workers_starting",
            "workers_stopping",
            "workers_total",
            "models_available",
            "models_downloading",
            "models_total_gb",
            "system",
            "queen",
        ):
            assert field in status, field
        assert status["workers_total"] == 1
        assert status["models_available"] == 1
        assert status["models_downloading"] == 0
        assert status["cpu_cores"] == psutil.cpu_count()
        assert 0 < status["memory_available_mb"] <= status["memory_total_mb"]
        assert 0 <= status["disk_available_gb"] <= status["disk_total_gb"]
        # The worker is on the CPU: CPU-0 names it, the GPUs are free.
        devices = {d["id"]: d for d in status["devices"]}
        assert devices["CPU-0"]["workers"] == ["w"] and devices["CPU-0"]["in_use"]
        assert devices["GPU-0"]["workers"] == [] and not devices["GPU-0"]["in_use"]
        system = status["system"]
        assert len(system["load_average"]) == 3
        assert system["disk_free_bytes"] > 0
        assert status["queen"]["url"] is None
        # The job API's view is the same, typed.
        typed = await hive_status(manager)
        assert typed.hive_id == status["hive_id"]
        assert typed.workers_total == 1
        assert [d.id for d in typed.devices] == ["CPU-0", "GPU-0", "GPU-1"]


async def test_device_and_capability_answers_validate_against_the_spec(
    serve: Serve, tmp_path: Path
) -> None:
    pytest.importorskip("jsonschema")
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    async with (
        serve(gpu_probe=fake_gpus(tmp_path, TWO_GPUS)) as (_, url),
        aiohttp.ClientSession() as http,
    ):
        for path, template, status in [
            ("/v1/devices", "/v1/devices", 200),
            ("/v1/devices/GPU-0", "/v1/devices/{id}", 200),
            ("/v1/devices/CPU-0", "/v1/devices/{id}", 200),
            ("/v1/devices/TPU-0", "/v1/devices/{id}", 404),
            ("/capabilities", "/capabilities", 200),
            ("/v1/capabilities", "/v1/capabilities", 200),
            ("/v1/capabilities?queen_url=ftp://x", "/v1/capabilities", 400),
            ("/capabilities?queen_url=http://", "/capabilities", 400),
            ("/v1/status", "/v1/status", 200),
        ]:
            async with http.get(url + path) as r:
                assert r.status == status, path
                assert_answer(
                    spec,
                    "get",
                    template,
                    status=status,
                    content_type=r.headers["Content-Type"],
                    body=await r.json(),
                )
        async with http.get(url + "/v1/heartbeats/stream") as r:
            assert_answer(
                spec,
                "get",
                "/v1/heartbeats/stream",
                status=r.status,
                content_type=r.headers["Content-Type"],
            )
            assert (await r.content.readline()) == b"event: heartbeat\n"
            line = (await r.content.readline()).decode()
        assert line.startswith("data: ")
        assert_valid(spec, "Telemetry", json.loads(line[6:]))
        assert_valid(spec, "TelemetryStreamItem", {"event": "heartbeat", "data": line[6:]})
