"""What every handler of the API may reach: settings, database, tokens, live feeds, and the
poller and writer of this process when the API runs inside ``netmon run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.di import NamedDependency

from netmon.config import Settings
from netmon.store.database import Database

if TYPE_CHECKING:
    from netmon.alerts.service import AlertService
    from netmon.api.feeds import FeedHub
    from netmon.api.tokens import TokenCache
    from netmon.poller.service import PollerService
    from netmon.store.batcher import Batcher
    from netmon.store.writer import SampleWriter

__all__ = ["ApiContext", "Ctx", "Runtime"]


# Plain classes, not dataclasses: Litestar hands the context to handlers as a dependency,
# and its signature model would otherwise try to parse a dataclass field by field.


class Runtime:
    """The parts of ``netmon run`` that live in the API's process (absent in ``netmon api``)."""

    def __init__(
        self,
        writer: SampleWriter | None = None,
        batcher: Batcher | None = None,
        poller: PollerService | None = None,
        alerts: AlertService | None = None,
    ) -> None:
        self.writer = writer
        self.batcher = batcher
        self.poller = poller
        self.alerts = alerts


class ApiContext:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime or Runtime()
        self.tokens: TokenCache | None = None  # set by create_app
        self.hub: FeedHub | None = None  # set by create_app: live feeds


Ctx = NamedDependency[ApiContext]
"""How a handler asks for the context: ``ctx: Ctx``."""
