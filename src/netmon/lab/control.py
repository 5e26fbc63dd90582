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

Each gets one line back: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The
socket is created mode 0600: whoever may use it may break the lab's devices.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netmon.lab.lab import Lab

__all__ = ["execute", "send_command", "serve_control"]

_MAX_LINE = 64 * 1024


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
    """Listen on ``path``; a stale socket file left by a killed lab is replaced."""
    # Local filesystem calls on a short path: not worth a thread.
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():  # noqa: ASYNC240
        if _listening(path):
            raise OSError(errno.EADDRINUSE, f"{path}: another lab is already listening there")
        path.unlink()  # noqa: ASYNC240
    server = await asyncio.start_unix_server(
        functools.partial(_serve_client, lab), path=str(path), limit=_MAX_LINE
    )
    os.chmod(path, 0o600)
    return server


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


async def _serve_client(
    lab: Lab, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("expected one JSON object per line")
                reply = execute(lab, request)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, ValueError):  # ValueError: a line longer than _MAX_LINE
        pass
    finally:
        writer.close()


def send_command(path: Path, request: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the lab listening on ``path`` and return its reply (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError(f"{path}: the lab closed the connection without a reply")
            data += chunk
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError(f"{path}: unexpected reply {reply!r}")
    return reply
