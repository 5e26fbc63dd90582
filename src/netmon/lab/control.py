"""Control a running lab from another process: one JSON object per line on a unix socket.

Requests and what they do::

    {"command": "status"}
    {"command": "reboot", "device": "lab-0003"}
    {"command": "flap", "device": "lab-0003", "interface": 2, "down_for": 30}
    {"command": "flap", "device": "lab-0003", "interface": 2}           # down until "up"
    {"command": "up", "device": "lab-0003", "interface": 2}
    {"command": "silence", "device": "lab-0003", "on": true}
    {"command": "garbage", "device": "lab-0003", "on": false}
    {"command": "config-change", "device": "lab-0002", "note": "new uplink"}  # note optional

Each gets one line back: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``
(``netmon.control_socket``). The socket is created mode 0600: whoever may use it may break
the lab's devices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netmon import control_socket

if TYPE_CHECKING:
    from netmon.lab.lab import Lab

__all__ = ["execute", "send_command", "serve_control"]


def execute(lab: Lab, request: Mapping[str, Any]) -> dict[str, Any]:
    """Carry out one control request; raises ValueError for a bad one."""
    command = request.get("command")
    if command == "status":
        return {"ok": True, **_status(lab)}
    if command not in ("reboot", "flap", "up", "silence", "garbage", "config-change"):
        raise ValueError(
            f"unknown command {command!r}; expected status, reboot, flap, up, silence, "
            "garbage or config-change"
        )
    name = request.get("device")
    if not isinstance(name, str):
        raise ValueError(f"{command} needs a device name, e.g. lab-0001")
    device = lab.device(name)
    reply: dict[str, Any] = {"ok": True, "device": name}
    if command == "reboot":
        device.reboot()
        reply["boots"] = device.boots
    elif command == "config-change":
        note = request.get("note")
        if note is not None and not isinstance(note, str):
            raise ValueError(f"note is a text, not {note!r}")
        reply["revision"] = device.change_config(note)
        reply["protocols"] = list(lab.protocols(name))
    elif command in ("flap", "up"):
        index = request.get("interface")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"{command} needs an interface index (ifIndex), e.g. 2")
        if command == "up":
            device.set_oper(index, True)
        else:
            down_for = request.get("down_for")
            if down_for is not None and (
                isinstance(down_for, bool) or not isinstance(down_for, int | float) or down_for <= 0
            ):
                raise ValueError(f"down_for is a number of seconds above 0, not {down_for!r}")
            device.flap(index, None if down_for is None else float(down_for))
        reply["interface"] = index
        reply["oper_up"] = device.interface(index).oper_up
    else:
        on = request.get("on", True)
        if not isinstance(on, bool):
            raise ValueError(f"on is true or false, not {on!r}")
        (device.silence if command == "silence" else device.garbage)(on)
        reply["on"] = on
    return reply


def _status(lab: Lab) -> dict[str, Any]:
    devices = lab.devices.values()
    return {
        "devices": len(lab.devices),
        "running": lab.running,
        "host": lab.params.host,
        "base_port": lab.params.base_port,
        "first": lab.params.first,
        "user": lab.params.user,
        "auth_protocol": lab.params.auth_protocol,
        "rebooted": {d.name: d.boots for d in devices if d.boots > 1},
        "silenced": [d.name for d in devices if d.is_silent],
        "garbage": [d.name for d in devices if d.sends_garbage],
        "config_changed": {d.name: d.config_revision for d in devices if d.config_revision > 1},
        "ssh": lab.params.ssh,
        # Interfaces taken down by a flap; administratively down ones are always down.
        "down": {
            d.name: down
            for d in devices
            if (down := [i.index for i in d.interfaces if i.admin_up and not i.oper_up])
        },
    }


async def serve_control(lab: Lab, path: Path) -> asyncio.Server:
    """Listen on ``path`` (``netmon.control_socket``) until the server is closed."""

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        return execute(lab, request)

    return await control_socket.serve(path, handle, what="lab")


def send_command(path: Path, request: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the lab listening on ``path`` and return its reply (blocking)."""
    return control_socket.request(path, request, timeout)
