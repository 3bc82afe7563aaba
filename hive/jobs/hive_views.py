"""The views the device and hive-status jobs narrate, one small function each, so that
they can be switched to the device and status views of `/v1/devices` and `/v1/status`
when those land: for now a device list from the GPU probe and psutil, and the status that
`/v1/status` answers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psutil

from hive.api.views import observe_models, status_view
from hive.runtime.manager import Manager

_MB = 1024 * 1024


async def device_list(manager: Manager) -> list[dict[str, Any]]:
    """Every device (CPU-0, then GPU-<n>) with rbee's Device fields."""
    gpus, ram = await asyncio.to_thread(lambda: (manager.gpus.gpus(), psutil.virtual_memory()))
    users: dict[str, list[str]] = {}
    for name, instance in sorted(manager.workers.instances.items()):
        users.setdefault(instance.state.device, []).append(name)
    cores = os.cpu_count() or 1
    out: list[dict[str, Any]] = [
        {
            "device_id": "CPU-0",
            "device_type": "cpu",
            "name": f"CPU ({cores} cores)",
            "vram_total_mb": ram.total // _MB,
            "vram_available_mb": ram.available // _MB,
            "available": True,
            "in_use": bool(users.get("CPU-0")),
            "workers": users.get("CPU-0", []),
            "compute_capability": None,
            "temperature_celsius": None,
        }
    ]
    for gpu in gpus:
        device = gpu.device
        out.append(
            {
                "device_id": device,
                "device_type": "cuda",
                "name": gpu.name,
                "vram_total_mb": gpu.vram_total_bytes // _MB,
                "vram_available_mb": gpu.vram_free_bytes // _MB,
                "available": True,
                "in_use": bool(users.get(device)),
                "workers": users.get(device, []),
                "compute_capability": gpu.compute_capability,
                "temperature_celsius": gpu.temperature_celsius,
            }
        )
    return out


async def device_get(manager: Manager, ref: int | str) -> dict[str, Any] | None:
    """The device `ref` names: CPU-0, GPU-<n>, or a GPU's index."""
    wanted = f"GPU-{ref}" if isinstance(ref, int) else ref.upper()
    return next((d for d in await device_list(manager) if d["device_id"] == wanted), None)


async def hive_status(manager: Manager) -> dict[str, Any]:
    """What `GET /v1/status` answers."""
    return status_view(manager, await observe_models(manager))
