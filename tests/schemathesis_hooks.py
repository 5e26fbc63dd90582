"""Schemathesis hooks for the API's conformance run (tests/schemathesis.toml names this module;
tests/test_api_schema.py runs it).

They touch only what an OpenAPI document cannot say, so that a schema-valid request stays
a request the API must accept (positive_data_acceptance) and the run keeps its credentials:

- a token's ``expires_at`` must lie in the future, which a schema cannot say either;
- the run must not revoke the tokens it runs with (NETMON_PROTECTED_TOKEN_IDS): revoking
  one of them is answered 204 like any other, and then every later request would be 401;
  nor delete the webhook whose messages redelivery is tried on
  (NETMON_PROTECTED_WEBHOOK_IDS): its messages would go with it, and redelivery could
  then only ever answer 404;
- a "negative" case that puts a single value where a repeatable query parameter (an array)
  is declared, such as ``device=true``, is dropped when that value is a valid item: on the
  wire it is the one-item list ``["true"]``, so the request is valid and the API rightly
  accepts it (schemathesis judges the value before serialisation);
- with a token limited to a site (NETMON_SCOPE_SITE), what a positive case would make or
  change is put within that site: a device in it, a token limited to it, a rule, silence
  or webhook whose only matcher on ``site`` names it. Anything else is rightly refused
  (403), and the run would hardly see the operation succeed;
- a webhook URL that the schema allows goes to loopback, which the run's
  ``alerts.webhooks.allow`` lists: the allow list is configuration, and a URL elsewhere
  would have the API resolve random host names;
- alerting bodies hold rules that span fields, which a schema cannot say: a rule's fields
  per kind, templates that format, regular expressions that compile, bounded durations,
  a silence that ends after it starts and after now (ends_at or duration, one of them),
  a rule replaced under the name in its path. Positive cases that break one of these are
  mended with the API's own checks (``netmon.api.schemas.alerts``), field by field;
- with two workers (threads), two may parse Python source at once (Hypothesis does, to
  name the lambdas of its filters, and to pretty-print), and CPython 3.11's AST
  construction is not safe for that (gh-106905: "AST constructor recursion depth
  mismatch", a SystemError that ends the run). ``ast.parse`` is made one call at a time
  in this process; nothing else changes;
- the metrics queries have rules across parameters too: a device or a metric, a range
  that ends after it starts and spans at most ``api.range_max``, raw samples for at most
  a day, a lookback of at most 7 days. Positive cases that break them are mended with the
  controller's own checks (``range_window``, ``lookback_window``): without this, most of
  the generated queries are rightly refused and the operation is hardly exercised
  (schemathesis warns of it, at random, by how the draw went).
"""

from __future__ import annotations

import ast
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import msgspec
import schemathesis
from litestar.exceptions import ValidationException

from netmon.api.controllers.metrics import lookback_window, range_window
from netmon.api.schemas.alerts import (
    GROUP_INTERVAL,
    GROUP_WAIT,
    REPEAT_INTERVAL,
    URL_PATTERN,
    SilenceCreate,
    checked_matchers,
    duration_in,
    rule_spec,
    silence_window,
)
from netmon.api.schemas.common import ID_MAX
from netmon.config import ApiSettings

_parsing = threading.Lock()
_parse = ast.parse


def _one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _one_at_a_time

LOOPBACK_URL = "http://127.0.0.1:9/hook"
RANGE_MAX = ApiSettings().range_max  # the run keeps the default (tests/test_api_schema.py)
VALID_RULE = {"metric": "cpuUtilization", "value": 90, "kind": "threshold"}
_WEBHOOK_TIMERS = {
    "group_wait": GROUP_WAIT,
    "group_interval": GROUP_INTERVAL,
    "repeat_interval": REPEAT_INTERVAL,
}


def _protected(what: str = "TOKEN") -> set[str]:
    return set(filter(None, os.environ.get(f"NETMON_PROTECTED_{what}_IDS", "").split(",")))


def _is_positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _future_expiry(case: schemathesis.Case) -> None:
    if case.operation.path != "/api/v1/tokens" or case.method.upper() != "POST":
        return
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("expires_at"), str):
        return
    try:
        expires = datetime.fromisoformat(body["expires_at"])
    except ValueError:
        return
    if expires.tzinfo is not None and expires <= datetime.now(UTC):
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()


def _body(case: schemathesis.Case, path: str, *methods: str) -> dict[str, Any] | None:
    if case.operation.path != path or case.method.upper() not in methods:
        return None
    return case.body if isinstance(case.body, dict) else None


def _refused(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except ValidationException:  # the API's 422 (Unprocessable) is one
        return True
    return False


def _loopback_url(case: schemathesis.Case) -> None:
    body = _body(case, "/api/v1/webhooks", "POST") or _body(
        case, "/api/v1/webhooks/{webhook_id}", "PATCH"
    )
    url = body.get("url") if body is not None else None
    if isinstance(url, str) and re.search(URL_PATTERN, url) and len(url) <= 2000:
        body["url"] = LOOPBACK_URL  # type: ignore[index]


def _mend_rule(case: schemathesis.Case) -> None:
    body = _body(case, "/api/v1/rules", "POST") or _body(case, "/api/v1/rules/{name}", "PUT")
    if body is None:
        return
    if case.method.upper() == "PUT" and isinstance(case.path_parameters, dict):
        name = case.path_parameters.get("name")
        if "name" in body and isinstance(name, str):
            body["name"] = name
    fields = {**body, "name": body.get("name", "x")}
    if _refused(rule_spec, fields):
        keep = {k: body[k] for k in ("name", "severity", "matchers") if k in body}
        if _refused(checked_matchers, "matchers", keep.get("matchers", [])):
            keep.pop("matchers")
        body.clear()
        body.update({**VALID_RULE, **keep})


def _mend_silence(case: schemathesis.Case) -> None:
    body = _body(case, "/api/v1/silences", "POST")
    if body is None:
        return
    matchers = body.get("matchers")
    if isinstance(matchers, list):
        body["matchers"] = [
            m if not _refused(checked_matchers, "matchers", [m]) else 'site="lon1"'
            for m in matchers
        ]
    try:
        silence = msgspec.convert(body, SilenceCreate)
    except msgspec.ValidationError:
        return
    if _refused(silence_window, silence, datetime.now(UTC)):
        body.pop("starts_at", None)
        body.pop("ends_at", None)
        body["duration"] = "1h"


def _mend_webhook(case: schemathesis.Case) -> None:
    body = _body(case, "/api/v1/webhooks", "POST") or _body(
        case, "/api/v1/webhooks/{webhook_id}", "PATCH"
    )
    if body is None:
        return
    if isinstance(body.get("matchers"), list) and _refused(
        checked_matchers, "matchers", body["matchers"]
    ):
        body["matchers"] = []
    for name, (low, high) in _WEBHOOK_TIMERS.items():
        value = body.get(name)
        if isinstance(value, str) and _refused(duration_in, name, value, low, high):
            body[name] = "30s" if name != "repeat_interval" else "4h"


def _within_scope(case: schemathesis.Case) -> None:
    site = os.environ.get("NETMON_SCOPE_SITE")
    if not site:
        return
    for path, methods, fix in (
        ("/api/v1/devices", ("POST",), lambda b: b.__setitem__("site", site)),
        ("/api/v1/devices/{device_id}", ("PATCH",), lambda b: b.pop("site", None)),
        ("/api/v1/tokens", ("POST",), lambda b: b.__setitem__("sites", [site])),
        ("/api/v1/rules", ("POST",), lambda b: _confine(b, site)),
        ("/api/v1/rules/{name}", ("PUT",), lambda b: _confine(b, site)),
        ("/api/v1/silences", ("POST",), lambda b: _confine(b, site)),
        ("/api/v1/webhooks", ("POST",), lambda b: _confine(b, site)),
        ("/api/v1/webhooks/{webhook_id}", ("PATCH",), lambda b: _confine(b, site, only_if=True)),
    ):
        body = _body(case, path, *methods)
        if body is not None:
            fix(body)


def _confine(body: dict[str, Any], site: str, *, only_if: bool = False) -> None:
    matchers = body.get("matchers")
    if only_if and matchers is None:
        return
    kept = [m for m in matchers or [] if isinstance(m, str) and not re.match(r"\s*site\s*[=!]", m)]
    body["matchers"] = [f'site="{site}"', *kept][:50]


def _mend_metrics_query(case: schemathesis.Case) -> None:
    if case.operation.path not in ("/api/v1/metrics/last", "/api/v1/metrics/range"):
        return
    if not isinstance(case.query, dict):
        return
    query = case.query
    if not query.get("device") and not query.get("metric"):
        query["metric"] = ["ifHCInOctets:rate"]
    lookback = query.get("lookback")
    if isinstance(lookback, str) and _refused(lookback_window, lookback):
        query["lookback"] = "1h"
    if case.operation.path.endswith("/range"):
        window = [query.get(k) for k in ("start", "end", "step")]
        if all(v is None or isinstance(v, str) for v in window) and _refused(
            range_window, *window, RANGE_MAX, datetime.now(UTC)
        ):
            for name in ("start", "end", "step"):
                query.pop(name, None)


def _array_items(parameter: Any) -> dict[str, Any] | None:
    """The items schema of a query parameter declared as an array (or array or null)."""
    schema = getattr(parameter, "definition", {}).get("schema", {})
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if isinstance(branch, dict) and branch.get("type") == "array":
            items = branch.get("items")
            return items if isinstance(items, dict) else {}
    return None


def _wire(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _valid_on_the_wire(case: schemathesis.Case) -> bool:
    """Whether a repeatable parameter holds one value that, serialised, is a valid item."""
    if not isinstance(case.query, dict):
        return False
    for parameter in case.operation.query:
        if parameter.name not in case.query or isinstance(case.query[parameter.name], list):
            continue
        items = _array_items(parameter)
        if items is not None:
            value = case.query[parameter.name]
            if value is None or jsonschema_rs.validator_for(items).is_valid(_wire(value)):
                return True
    return False


@schemathesis.hook
def filter_case(ctx: Any, case: schemathesis.Case) -> bool:
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return not _valid_on_the_wire(case)
    return True


@schemathesis.hook
def before_call(ctx: Any, case: schemathesis.Case, **kwargs: Any) -> None:
    if (
        case.operation.path == "/api/v1/tokens/{token_id}"
        and case.method.upper() == "DELETE"
        and isinstance(case.path_parameters, dict)
        and str(case.path_parameters.get("token_id")) in _protected()
    ):
        case.path_parameters["token_id"] = ID_MAX  # a token that does not exist: 404
    if (
        case.operation.path == "/api/v1/webhooks/{webhook_id}"
        and case.method.upper() == "DELETE"
        and isinstance(case.path_parameters, dict)
        and str(case.path_parameters.get("webhook_id")) in _protected("WEBHOOK")
    ):
        case.path_parameters["webhook_id"] = ID_MAX
    _loopback_url(case)
    if _is_positive(case):
        _future_expiry(case)
        _mend_rule(case)
        _mend_silence(case)
        _mend_webhook(case)
        _mend_metrics_query(case)
        _within_scope(case)
