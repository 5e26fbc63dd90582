"""What every handler of the API may reach: settings, database, tokens, live feeds, and
the core of ``netmon run`` (poller, writer, alerting) when there is one to ask.

Inside ``netmon run`` the API is a process of its own and reaches the core over its
control socket (``netmon.core_control.RemoteCore``); tests may hand it the core's parts in
their own process (``LocalCore``). ``netmon api`` alone has no core: pollers elsewhere are
asked through the database (``NOTIFY netmon_control``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.di import NamedDependency

from netmon.config import Settings
from netmon.core_control import Core
from netmon.store.database import Database

if TYPE_CHECKING:
    from netmon.api.feeds import FeedHub
    from netmon.api.http_limits import HttpGuard
    from netmon.api.tokens import TokenCache

__all__ = ["ApiContext", "Ctx"]


# A plain class, not a dataclass: Litestar hands the context to handlers as a dependency,
# and its signature model would otherwise try to parse a dataclass field by field.


class ApiContext:
    def __init__(self, settings: Settings, db: Database, core: Core | None = None) -> None:
        self.settings = settings
        self.db = db
        self.core = core
        self.tokens: TokenCache | None = None  # set by create_app
        self.hub: FeedHub | None = None  # set by create_app: live feeds
        self.guard: HttpGuard | None = None  # set by ApiServer: its connection counts


Ctx = NamedDependency[ApiContext]
"""How a handler asks for the context: ``ctx: Ctx``."""
