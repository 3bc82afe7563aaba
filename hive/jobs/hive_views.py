"""The views the device and hive-status jobs narrate: those of `/v1/devices` and
`/v1/status` (`hive.api.machine`, `hive.api.devices`), as the JSON those routes answer."""

from __future__ import annotations

from typing import Any

from hive.api.devices import hive_status as status_of
from hive.api.machine import device_get as device_of
from hive.api.machine import device_list as devices_of
from hive.errors import NotFound
from hive.runtime.manager import Manager


async def device_list(manager: Manager) -> list[dict[str, Any]]:
    """Every device (CPU-0, then GPU-<n>) with rbee's Device fields, from the last sample."""
    return [device.model_dump(mode="json") for device in devices_of(manager)]


async def device_get(manager: Manager, ref: int | str) -> dict[str, Any] | None:
    """The device `ref` names: CPU-0, GPU-<n>, rbee's `cuda:0` / `cpu`, or an index: GPU-<n>
    when that GPU exists, else 0 is CPU-0 (device_list's `device_id` of the CPU)."""
    names = [ref] if isinstance(ref, str) else [f"GPU-{ref}", *(["CPU-0"] if ref == 0 else [])]
    for name in names:
        try:
            return device_of(manager, name).model_dump(mode="json")
        except NotFound:
            continue
    return None


async def hive_status(manager: Manager) -> dict[str, Any]:
    """What `GET /v1/status` answers."""
    return (await status_of(manager)).model_dump(mode="json")
