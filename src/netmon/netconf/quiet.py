"""An ncclient SSH session whose two threads sleep while it is idle.

ncclient gives every session a thread that wakes every 0.1 s (``TICK``) to look for
messages to send, and paramiko gives it another that wakes every 0.1 s
(``Transport._active_check_timeout``) to look for a closed transport. Measured on the
2-core VM: 50 idle sessions cost 52 ms of CPU per second, 30 to 40 ms per device and
minute at a 60 s poll interval: ten times what a poll's ``<get>`` costs. Sessions are
kept from one poll to the next (``netmon.netconf.shared``), so nearly all of a
session's life is idle.

:class:`QuietSSHSession` is ncclient's own loop (0.7's ``Session.run``) but event driven:
``send`` wakes it through a socket pair, so it blocks in ``select`` until the server
writes, a message is queued, or the session closes. A message is sent at once instead
of up to 0.1 s later. :func:`quiet_transport` lengthens paramiko's socket timeout once
the session is up; the only cost is that a closed session's paramiko thread ends up to
``netmon.access.PARAMIKO_IDLE_S`` after the close (it is a daemon thread, and the socket is closed).

The first ``<rpc>`` waits until ``HELLO_GAP_S`` after the server's ``<hello>`` arrived:
yuma123's netconfd (2.13) leaves an ``<rpc>`` that reaches it right after it sent its
hello unanswered until more input comes (so the session's first ``<get>`` times out,
about once in 20 sessions; found by the real-peer tests). ncclient's own loop happened
to leave up to 0.1 s there, by sending only at its next tick.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from typing import Any

import ncclient.transport.parser
from ncclient.transport import SSHSession
from ncclient.transport.errors import SessionCloseError
from ncclient.transport.session import NetconfBase

from netmon import access

__all__ = ["HELLO_GAP_S", "IDLE_S", "QuietSSHSession", "quiet_transport"]

IDLE_S = 30.0  # a safety net only: sends, replies and the close all wake the loop
RETRY_SEND_S = 0.1  # the channel's window is full: look again soon, as ncclient does
HELLO_GAP_S = 0.05
_END_DELIM = b"\n##\n"
_MSG_DELIM = b"]]>]]>"


class QuietSSHSession(SSHSession):  # type: ignore[misc]
    def __init__(self, device_handler: Any) -> None:
        super().__init__(device_handler)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._not_before = 0.0  # monotonic time before which nothing more is sent

    def _post_connect(self, timeout: float = 60) -> None:
        super()._post_connect(timeout)
        self._not_before = time.monotonic() + HELLO_GAP_S  # the server's hello is in

    def send(self, message: str) -> None:
        super().send(message)
        self._wake()

    def close(self) -> None:
        self._wake()
        super().close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _drain_wakes(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _send_queued(self) -> float:
        """Send what is queued while the channel takes it; how long to wait before the
        next look (``IDLE_S`` when nothing is left)."""
        q = self._q
        while not q.empty():
            wait = self._not_before - time.monotonic()
            if wait > 0:
                return wait
            if not self._send_ready():
                return RETRY_SEND_S
            data = q.get().encode()
            if self._base == NetconfBase.BASE_11:
                data = b"\n#%i\n%s%s" % (len(data), data, _END_DELIM)
            else:
                data = data + _MSG_DELIM
            self.logger.info("Sending:\n%s", data)
            while data:
                n = self._transport_write(data)
                if n <= 0:
                    raise SessionCloseError(self._buffer.getvalue(), data)
                data = data[n:]
        return IDLE_S

    def run(self) -> None:
        try:
            selector = selectors.DefaultSelector()
            self._transport_register(selector, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                events = selector.select(timeout=self._send_queued())
                readable = False
                for key, _mask in events:
                    if key.data == "wake":
                        self._drain_wakes()
                    else:
                        readable = True
                if not readable:
                    continue
                data = self._transport_read()
                if data:
                    parser: Any = getattr(self, "parser")  # noqa: B009 (untyped base)
                    try:
                        parser.parse(data)
                    except ncclient.transport.parser.SAXFilterXMLNotFoundError:
                        self.logger.debug("switching from sax to dom parsing")
                        parser = ncclient.transport.parser.DefaultXMLParser(self)
                        self.parser = parser
                        parser.parse(data)
                elif self._closing.is_set():
                    break  # end of session, expected
                else:
                    raise SessionCloseError(self._buffer.getvalue())
        except Exception as exc:
            self.logger.debug("Broke out of main loop, error=%r", exc)
            self._dispatch_error(exc)
            self.close()
        finally:
            for end in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    end.close()


def quiet_transport(session: SSHSession) -> None:
    """After connect: let paramiko's thread sleep between packets (see the module doc)."""
    access.quiet_transport(getattr(session, "_transport", None))
