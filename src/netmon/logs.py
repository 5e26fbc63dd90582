"""Structured logs: JSON lines for machines, a readable console rendering on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog

__all__ = ["configure_logging", "get_logger", "redact_url"]


def redact_url(url: str) -> str:
    """A database URL safe to log: the password, if any, replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[-1]}"))


class _Stderr:
    """``sys.stderr`` as it is at each write, not as it was when logging was configured.

    While ``netmon run`` shows its live view on a terminal, rich swaps in a proxy that
    prints each line above the view; a stream bound earlier would write under the view
    and the next redraw would leave a copy of it behind (stacked views).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and the standard library's logging to stderr in one format."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party libraries are noisy at INFO; their warnings still come through.
    root.setLevel(max(getattr(logging, level.upper()), logging.WARNING))
    # Every process (core and API): no traceback per reconnect attempt during an outage.
    from netmon.outage_log import quiet_library_outage_logs

    quiet_library_outage_logs()


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
