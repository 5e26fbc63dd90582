"""/api/v1/rules: alert rules. Everyone reads them; admins add, replace and delete the
API's own. Rules from the rules file (source 'file') are read-only here: 409.

Every change tells the engines (``NOTIFY netmon_control``, op ``rules_reload``) in its
transaction; each reloads the rules from the table.

A token limited to sites reads the global rules and those confined to its sites
(``site="..."``, ``api/scope.py``), and adds, replaces and deletes only the latter.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter

from netmon.alerts import admin
from netmon.alerts.admin import RuleRow
from netmon.alerts.rules import RuleSpec
from netmon.api.auth import Principal, actor_of, requires
from netmon.api.context import Ctx
from netmon.api.problems import Conflict, responses
from netmon.api.schemas.alerts import (
    RULE_NAME,
    RuleCreate,
    RuleList,
    RuleReplace,
    rule_spec,
    unprocessable,
)
from netmon.api.schemas.common import StrictJSONBody
from netmon.api.scope import Confinement, confinement, may_read_rule, require_confined
from netmon.store.audit import audit_sites, record_audit
from netmon.store.notify import publish_control

__all__ = ["RuleController"]

RuleNamePath = Annotated[
    str, PathParameter(min_length=1, max_length=200, pattern=RULE_NAME, description="Rule name.")
]


def _reach(rule: RuleRow | RuleSpec) -> Confinement:
    matchers = rule.definition.get("matchers", []) if isinstance(rule, RuleRow) else rule.matchers
    return confinement(matchers)


async def _api_rule(conn: asyncpg.Connection, user: Principal, name: str) -> RuleRow:
    """The rule, locked, if this user may change it: 404 if missing or out of the
    user's sites, 403 if global for a token limited to sites, 409 if the file's."""
    rule = await admin.get_rule(conn, name, lock=True)
    if rule is None or not may_read_rule(user, _reach(rule)):
        raise NotFoundException(f"rule {name!r} not found")
    if rule.source != "api":
        raise Conflict(
            f"rule {name!r} comes from the rules file; change it there (it is read-only here)"
        )
    require_confined(user, _reach(rule), "a rule")
    return rule


class RuleController(Controller):
    path = "/api/v1/rules"
    tags = ["alerts"]
    guards = [requires("viewer")]

    @get("/", summary="List alert rules (from the rules file and the API)", responses=responses())
    async def list_rules(self, ctx: Ctx, request: Request[Principal, Any, Any]) -> RuleList:
        async with ctx.db.pool.acquire() as conn:
            rules = await admin.list_rules(conn)
        user = request.user
        return RuleList(items=[r for r in rules if may_read_rule(user, _reach(r))])

    @get("/{name:str}", summary="One alert rule", responses=responses(404))
    async def rule(
        self, ctx: Ctx, request: Request[Principal, Any, Any], name: RuleNamePath
    ) -> RuleRow:
        async with ctx.db.pool.acquire() as conn:
            rule = await admin.get_rule(conn, name)
        if rule is None or not may_read_rule(request.user, _reach(rule)):
            raise NotFoundException(f"rule {name!r} not found")
        return rule

    @post(
        "/",
        summary="Add an alert rule",
        guards=[requires("admin")],
        responses=responses(404, 409, 422),
    )
    async def create(
        self, ctx: Ctx, request: Request[Principal, Any, Any], data: StrictJSONBody[RuleCreate]
    ) -> RuleRow:
        """The fields of a rule in the rules file (docs/alerts.md). A rule that cannot
        work (a threshold rule without `value`, a bad template, a matcher that is no
        regular expression): 422 naming the field. A name taken: 409."""
        spec = rule_spec(data.fields())
        user = request.user
        require_confined(user, _reach(spec), "a rule")
        actor = actor_of(request)
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            row = await admin.insert_rule(conn, spec, actor.name)
            if row is None:
                taken = await admin.get_rule(conn, spec.name)
                if taken is not None and not may_read_rule(user, _reach(taken)):
                    raise NotFoundException(f"the rule name {spec.name!r} is not available")
                raise Conflict(f"a rule named {spec.name!r} exists")
            await record_audit(
                conn,
                actor,
                "create",
                "rule",
                spec.name,
                None,
                row,
                sites=audit_sites(_reach(row).audited),
            )
            await publish_control(conn, "rules_reload")
        return row

    @put(
        "/{name:str}",
        summary="Replace an alert rule",
        guards=[requires("admin")],
        responses=responses(404, 409, 422),
    )
    async def replace(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        name: RuleNamePath,
        data: StrictJSONBody[RuleReplace],
    ) -> RuleRow:
        """The whole rule, as for a new one; fields left out take their defaults."""
        fields = data.fields()
        if fields.setdefault("name", name) != name:
            raise unprocessable("name", f"the rule in the path is {name!r}; rename by a new rule")
        spec = rule_spec(fields)
        user = request.user
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _api_rule(conn, user, name)
            require_confined(user, _reach(spec), "a rule")
            after = await admin.update_rule(conn, spec)
            assert after is not None  # locked and checked above
            await record_audit(
                conn,
                actor_of(request),
                "update",
                "rule",
                name,
                before,
                after,
                sites=audit_sites(_reach(before).audited, _reach(after).audited),
            )
            await publish_control(conn, "rules_reload")
        return after

    @delete(
        "/{name:str}",
        summary="Delete an alert rule",
        guards=[requires("admin")],
        responses=responses(404, 409),
    )
    async def remove(
        self, ctx: Ctx, request: Request[Principal, Any, Any], name: RuleNamePath
    ) -> None:
        """Its open alerts resolve as the engines reload without it."""
        async with ctx.db.pool.acquire() as conn, conn.transaction():
            before = await _api_rule(conn, request.user, name)
            await admin.delete_rule(conn, name)
            await record_audit(
                conn,
                actor_of(request),
                "delete",
                "rule",
                name,
                before,
                None,
                sites=audit_sites(_reach(before).audited),
            )
            await publish_control(conn, "rules_reload")
