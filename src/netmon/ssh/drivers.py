"""napalm drivers for the napalm_* tasks: opened with the CLI target's settings, kept
between polls in a :class:`netmon.ssh.session.SessionPool`, their errors translated.

napalm's netmiko-based drivers (ios, iosxr, nxos_ssh) take netmiko's arguments through
``optional_args``, so the host-key policy is enforced exactly as for the cli_* tasks.
"""

from __future__ import annotations

import contextlib
from typing import Any

from napalm import get_network_driver
from napalm.base.exceptions import (
    CommandErrorException,
    CommandTimeoutException,
    ConnectAuthError,
    ConnectionClosedException,
    ConnectionException,
    ConnectTimeoutError,
)

from netmon.access import quiet_transport
from netmon.errors import (
    CliAuthError,
    CliCommandError,
    CliConnectionError,
    CliError,
    CliTimeoutError,
)
from netmon.ssh.hosts import CliTarget
from netmon.ssh.session import SessionPool, netmiko_options, translate_error

__all__ = ["napalm_call", "napalm_pool"]

# netmiko's own names that napalm's driver signature takes separately.
_SEPARATE = ("host", "username", "password")


def _open(target: CliTarget) -> Any:
    if target.napalm_driver is None:
        raise CliError(
            f"{target.device}: no napalm driver for device type {target.device_type}; "
            "set cli.napalm_driver"
        )
    options = netmiko_options(target)
    password = options["password"]
    optional_args = {k: v for k, v in options.items() if k not in _SEPARATE}
    driver = get_network_driver(target.napalm_driver)(
        hostname=target.host,
        username=target.username,
        password=password or "",
        timeout=int(max(1, target.timeout)),
        optional_args=optional_args,
    )
    try:
        driver.open()
        # The netmiko-based drivers: the session is kept between polls.
        connection = getattr(driver, "device", None)
        quiet_transport(getattr(getattr(connection, "remote_conn", None), "transport", None))
    except CliError:
        raise
    except Exception as exc:
        raise _translate(exc, target, "login", password=password) from exc
    return driver


def _close(driver: Any) -> None:
    with contextlib.suppress(Exception):  # a broken session may fail to say goodbye
        driver.close()


def _alive(driver: Any) -> bool:
    # The netmiko-based drivers: the transport, without writing to the shell.
    conn = getattr(driver, "device", None)
    transport = getattr(getattr(conn, "remote_conn", None), "transport", None)
    if transport is not None:
        return bool(transport.is_active())
    try:
        return bool(driver.is_alive().get("is_alive"))
    except Exception:
        return False


def _translate(
    exc: BaseException, target: CliTarget, doing: str, *, password: str | None = None
) -> CliError:
    where = f"{target.device} ({target.address}): {doing}"
    result: CliError
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConnectAuthError):
        result = CliAuthError(f"{where}: login refused for user {target.username}")
    elif isinstance(exc, ConnectTimeoutError | CommandTimeoutException):
        result = CliTimeoutError(f"{where}: timed out after {target.timeout:g}s")
    elif isinstance(exc, CommandErrorException):
        result = CliCommandError(f"{where}: the device refused a command", command=doing)
    elif isinstance(exc, ConnectionClosedException):
        result = CliConnectionError(f"{where}: session lost")
    elif isinstance(exc, ConnectionException) and exc.__context__ is not None:
        # napalm re-raises netmiko's connect timeout without its cause: use that.
        return translate_error(exc.__context__, target, doing, password=password)
    else:
        return translate_error(exc, target, doing, password=password)
    result.__cause__ = exc
    return result


_pool: SessionPool[Any] = SessionPool(_open, _close, _alive, _translate)


def napalm_pool() -> SessionPool[Any]:
    """The process's napalm drivers, one per device."""
    return _pool


def napalm_call(target: CliTarget, getter: str) -> Any:
    """``driver.<getter>()`` on the device's (reused) napalm driver."""
    return _pool.run(target, f"napalm {getter}", lambda driver: getattr(driver, getter)())
