"""What a token limited to sites may see and change, beyond devices.

Devices, and what hangs off them (series, samples, events, configurations, alerts), carry
their site: ``Principal.sees`` decides, and what it does not see answers 404. Silences,
webhooks and alert rules have no site of their own: they select alerts by label
matchers, so their scope is read from those. One is *confined* to sites when it has an
equality matcher ``site="<site>"`` (which every alert it acts on must then satisfy) and
every matcher it has on ``site`` is such an equality: ``site=~"par.*"`` beside
``site="lon1"`` changes nothing it selects, but it names what lies outside lon1.

A scoped token sees and changes only what is confined to its own sites. Global ones (no
``site`` matcher at all) need a token for every site, for changes; a scoped token may
read global alert rules, as they apply to its devices too. Anything else it cannot see,
and is told so exactly as for something that does not exist.

Audit entries carry the sites of what they changed (``audit_log.sites``; NULL for
anything global), and a scoped token reads only entries within its sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from litestar.exceptions import PermissionDeniedException

from netmon.alerts.matchers import Matcher, parse_matchers
from netmon.api.auth import Principal

__all__ = [
    "Confinement",
    "check_unscoped",
    "confinement",
    "may_change",
    "may_read_rule",
    "require_confined",
]


@dataclass(frozen=True, slots=True)
class Confinement:
    """How far a set of matchers reaches in sites."""

    sites: frozenset[str]  # the X of each site="X"
    other: bool  # a matcher on site that is not an equality

    @property
    def confined(self) -> bool:
        return bool(self.sites) and not self.other

    @property
    def is_global(self) -> bool:
        return not self.sites and not self.other

    @property
    def audited(self) -> list[str] | None:
        """Its sites for an audit entry: None unless confined."""
        return sorted(self.sites) if self.confined else None


def confinement(matchers: Sequence[str] | Sequence[Matcher] | dict[str, str]) -> Confinement:
    """The confinement of matchers in any form the stores hold (texts, parsed, a mapping)."""
    parsed: Iterable[Matcher]
    if isinstance(matchers, dict):
        parsed = parse_matchers(matchers)
    else:
        parsed = [m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers]
    sites: set[str] = set()
    other = False
    for m in parsed:
        if m.name != "site":
            continue
        if m.op == "=":
            sites.add(m.value)
        else:
            other = True
    return Confinement(frozenset(sites), other)


def may_change(user: Principal, reach: Confinement) -> bool:
    """Whether ``user`` may see and change what ``reach`` describes."""
    if user.sites is None:
        return True
    return reach.confined and reach.sites <= user.sites


def may_read_rule(user: Principal, reach: Confinement) -> bool:
    """Rules: also the global ones, which act on the user's devices as on the rest."""
    return may_change(user, reach) or reach.is_global


def require_confined(user: Principal, reach: Confinement, what: str) -> None:
    """403 unless a new or changed ``what`` stays within the user's sites."""
    if may_change(user, reach):
        return
    assert user.sites is not None
    sites = ", ".join(sorted(user.sites))
    raise PermissionDeniedException(
        f"the token {user.name!r} is limited to {sites}: {what} it makes or changes needs "
        'a matcher site="<site>" for one of them, and no other matcher on site'
    )


def check_unscoped(user: Principal, what: str) -> None:
    """403 for a token limited to sites: ``what`` reaches every site."""
    if user.sites is not None:
        sites = ", ".join(sorted(user.sites))
        raise PermissionDeniedException(
            f"{what} needs a token for every site; the token {user.name!r} is limited to {sites}"
        )
