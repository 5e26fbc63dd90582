"""Alerts that leave netmon while the database is away (docs/alerts.md, "While the
database is away").

The recorder hands the changes it cannot commit to :class:`OutageNotifier`, which writes
them to an on-disk outbox (``data_dir/alert-spool``: one file per batch, written to a
temporary name, fsync'd, renamed) with the messages rendered for the webhooks last read
from the database, and sends those messages at once, signed as the deliverer signs. When
the database is back the recorder commits each file's changes in order and records its
messages in ``webhook_outbox`` under the same ``webhook-id``: delivered ones as
delivered, the others pending, for the deliverer.

The webhook cache (with secrets: the database keeps them in clear too) is kept in memory
and in ``alert-spool/webhooks.json`` (mode 0600), so a restart during an outage still
knows where to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg

from netmon.alerts.engine import Transition
from netmon.alerts.matchers import MatcherError, parse_matchers
from netmon.alerts.model import AlertView
from netmon.alerts.payloads import Format, GroupInfo, render
from netmon.alerts.rules import Rule
from netmon.alerts.webhooks import Webhook
from netmon.logs import get_logger
from netmon.store.spool import write_durably

__all__ = ["DirectStats", "OutageNotifier", "SpoolEntry", "SpooledRule"]

log = get_logger(__name__)

_SUFFIX = ".alerts"
_CACHE = "webhooks.json"
_NOTIFIABLE = frozenset({"firing", "resolved"})
META_RULE = "netmon-database-unreachable"
_RETRY_MAX = 30.0


@dataclass(frozen=True, slots=True)
class SpooledRule:
    """What the recorder reads of a transition's rule, for changes read back from disk."""

    name: str
    severity: str
    kind: str
    metric: str


@dataclass(slots=True)
class DirectStats:
    delivered: int = 0  # messages sent directly and accepted by the receiver
    failed: int = 0  # direct attempts that failed (the message waits for the database)
    spooled: int = 0  # alert changes written to the on-disk outbox
    spool_bytes: int = 0  # size of the on-disk outbox now
    dropped: int = 0  # changes not spooled because the outbox was full


@dataclass(slots=True)
class SpoolEntry:
    path: Path
    transitions: list[Transition]
    messages: list[dict[str, Any]]
    routed: bool  # False: no webhooks were known; the normal route() decides at commit


@dataclass(frozen=True, slots=True)
class _Hook:
    webhook: Webhook
    url: str
    secret: str


def _encode_transition(t: Transition) -> dict[str, Any]:
    return {
        "event": t.event,
        "rule": {
            "name": t.rule.name,
            "severity": t.rule.severity,
            "kind": t.rule.kind,
            "metric": t.rule.metric,
        },
        "fingerprint": t.fingerprint,
        "device": t.device,
        "labels": [list(p) for p in t.labels],
        "time": t.time.isoformat(),
        "since": t.since.isoformat(),
        "value": t.value,
        "changes": t.changes,
        "detail": t.detail,
        "summary": t.summary,
        "description": t.description,
    }


def _decode_transition(d: dict[str, Any]) -> Transition:
    rule = SpooledRule(**d["rule"])
    return Transition(
        event=d["event"],
        # The recorder reads only these four fields of a rule.
        rule=cast(Rule, rule),
        fingerprint=d["fingerprint"],
        device=d["device"],
        labels=tuple((k, v) for k, v in d["labels"]),
        time=datetime.fromisoformat(d["time"]),
        since=datetime.fromisoformat(d["since"]),
        value=d["value"],
        changes=d["changes"],
        detail=d["detail"],
        summary=d["summary"],
        description=d["description"],
    )


def _rewrite(path: Path, data: bytes) -> None:
    if path.exists():
        write_durably(path, data)


class OutageNotifier:
    """The on-disk alert outbox, the webhook cache and the direct sender.

    ``send`` posts one signed message: ``(webhook_id, name, url, secret, message_id,
    payload) -> delivered?`` (the Deliverer's :meth:`send_direct`)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        external_url: str,
        down_notify_after: timedelta | None,
        send: Any,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.external_url = external_url
        self.down_notify_after = down_notify_after
        self.stats = DirectStats()
        self._send = send
        self._hooks: list[_Hook] = []
        self._started: dict[str, datetime] = {}  # fingerprint -> when it fired
        self._down_since: datetime | None = None
        self._meta_id: str | None = None  # message_id of the meta firing sent
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._backoff: dict[str, tuple[float, float]] = {}  # message id -> (next try, delay)
        self._cached = b""
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
        self._seq = max((int(p.stem) for p in self._files()), default=0)
        self._load_cache()
        self._measure()

    # -- the webhook cache ------------------------------------------------------------------

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Read the enabled webhooks (with secrets) as the database has them now."""
        rows = await conn.fetch("SELECT * FROM webhooks WHERE enabled ORDER BY id")
        hooks: list[_Hook] = []
        raw: list[dict[str, Any]] = []
        for r in rows:
            try:
                hooks.append(_Hook(Webhook.from_row(r), r["url"], r["secret"]))
            except MatcherError:  # a matcher this netmon refuses: load_webhooks skips it too
                log.warning("webhook not cached for direct delivery", webhook=r["id"])
                continue
            raw.append(
                {
                    "id": r["id"],
                    "name": r["name"],
                    "url": r["url"],
                    "secret": r["secret"],
                    "format": r["format"],
                    "matchers": [str(m) for m in hooks[-1].webhook.matchers],
                    "group_by": list(r["group_by"]),
                    "send_resolved": r["send_resolved"],
                }
            )
        self._hooks = hooks
        data = json.dumps(raw).encode()
        if data != self._cached:
            await asyncio.to_thread(write_durably, self.directory / _CACHE, data, 0o600)
            self._cached = data

    def _load_cache(self) -> None:
        path = self.directory / _CACHE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        zero = timedelta(0)
        for d in raw:
            hook = Webhook(
                id=d["id"],
                name=d["name"],
                format=d["format"],
                matchers=tuple(parse_matchers(d["matchers"])),
                group_by=tuple(d["group_by"]),
                group_wait=zero,
                group_interval=zero,
                repeat_interval=zero,
                send_resolved=d["send_resolved"],
            )
            self._hooks.append(_Hook(hook, d["url"], d["secret"]))

    # -- the on-disk outbox -----------------------------------------------------------------

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*" + _SUFFIX))

    def _measure(self) -> None:
        total = 0
        for p in self._files():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        self.stats.spool_bytes = total

    @property
    def lock(self) -> asyncio.Lock:
        """Held while the outbox files are sent or taken into the database."""
        return self._lock

    @property
    def pending(self) -> bool:
        return bool(self._files())

    def entries(self) -> list[SpoolEntry]:
        out = []
        for p in self._files():
            try:
                d = json.loads(p.read_bytes())
            except (OSError, ValueError):
                log.error("unreadable alert outbox file moved aside", file=p.name)
                corrupt = self.directory / "corrupt"
                corrupt.mkdir(exist_ok=True)
                p.replace(corrupt / p.name)
                continue
            out.append(
                SpoolEntry(
                    p,
                    [_decode_transition(t) for t in d["transitions"]],
                    d["messages"],
                    d["routed"],
                )
            )
        return out

    def done(self, entry: SpoolEntry) -> None:
        """The entry is in the database: remove its file."""
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        self._measure()

    async def spool(self, transitions: list[Transition]) -> bool:
        """Write changes the database cannot take to disk, for their messages to be sent
        (at once, by the loop). False
        if the outbox is full (the caller keeps them in memory)."""
        async with self._lock:
            if self.stats.spool_bytes >= self.max_bytes:
                self.stats.dropped += len(transitions)
                return False
            messages = self._render(transitions)
            self._seq += 1
            path = self.directory / f"{self._seq:012d}{_SUFFIX}"
            entry = {
                "transitions": [_encode_transition(t) for t in transitions],
                "messages": messages,
                "routed": bool(self._hooks),
            }
            await asyncio.to_thread(write_durably, path, json.dumps(entry).encode())
            self.stats.spooled += len(transitions)
            self._measure()
        # Sent by the loop: the recorder goes on at once, whatever the receivers do.
        self._kick.set()
        return True

    async def _deliver(self, path: Path, entry: dict[str, Any]) -> None:
        hooks = {h.webhook.id: h for h in self._hooks}
        changed = False
        now = time.monotonic()
        for m in entry["messages"]:
            hook = hooks.get(m["webhook_id"])
            mid = m["message_id"]
            if m["delivered"] or hook is None or self._backoff.get(mid, (0.0, 0.0))[0] > now:
                continue
            if await self._post(hook, mid, m["payload"]):
                m["delivered"] = True
                changed = True
                self._backoff.pop(mid, None)
            else:
                # Backoff per message: a receiver that is down is not asked every second.
                delay = min(_RETRY_MAX, max(1.0, self._backoff.get(mid, (0.0, 0.5))[1] * 2))
                self._backoff[mid] = (time.monotonic() + delay, delay)
        if changed:
            # The file may be gone already: the database came back and took it.
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(_rewrite, path, json.dumps(entry).encode())

    async def _post(self, hook: _Hook, message_id: str, payload: str) -> bool:
        ok = bool(
            await self._send(
                hook.webhook.id, hook.webhook.name, hook.url, hook.secret, message_id, payload
            )
        )
        if ok:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
        return ok

    def _view(self, t: Transition) -> AlertView:
        if t.event == "firing":
            self._started[t.fingerprint] = t.time
        started = self._started.get(t.fingerprint, t.since)
        resolved = t.event == "resolved"
        if resolved:
            self._started.pop(t.fingerprint, None)
        return AlertView(
            id=0,  # no row yet: the id is the database's
            fingerprint=t.fingerprint,
            rule=t.rule.name,
            device=t.device,
            labels=dict(t.labels),
            severity=cast(Any, t.rule.severity),
            state="resolved" if resolved else "firing",
            flapping=False,
            value=t.value,
            summary=t.summary,
            description=t.description,
            pending_at=t.since,
            started_at=started,
            acknowledged_at=None,
            acknowledged_by=None,
            resolved_at=t.time if resolved else None,
            updated_at=t.time,
            kind=cast(Any, t.rule.kind),
            metric=t.rule.metric,
        )

    def _render(self, transitions: list[Transition]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        out: list[dict[str, Any]] = []
        for t in transitions:
            if t.event not in _NOTIFIABLE:
                continue
            view = self._view(t)
            for h in self._hooks:
                if not h.webhook.wants(view):
                    continue
                labels = h.webhook.group_of(view)
                key = json.dumps(labels, sort_keys=True, separators=(",", ":"))
                info = GroupInfo(
                    webhook_id=h.webhook.id,
                    webhook_name=h.webhook.name,
                    group_key=key,
                    group_labels=labels,
                )
                fmt: Format = h.webhook.format
                for message in render(fmt, info, [view], external_url=self.external_url, now=now):
                    out.append(
                        {
                            "webhook_id": h.webhook.id,
                            "message_id": f"msg_{uuid.uuid4().hex}",
                            "group_key": key,
                            "fingerprint": t.fingerprint,
                            "payload": message.payload,
                            "delivered": False,
                        }
                    )
        return out

    # -- the database's state, retries and the meta alert -----------------------------------

    def database_down(self) -> None:
        if self._down_since is None:
            self._down_since = datetime.now(UTC)

    async def database_up(self) -> None:
        self._down_since = None
        if self._meta_id is not None:
            await self._meta("resolved")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="netmon-alert-direct")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self._send_files()
                since, after = self._down_since, self.down_notify_after
                if (
                    since is not None
                    and after is not None
                    and after > timedelta(0)
                    and self._meta_id is None
                    and datetime.now(UTC) - since >= after
                ):
                    await self._meta("firing")
            except Exception:
                log.exception("direct alert delivery failed")

    async def _send_files(self) -> None:
        """Send what the files hold and no receiver has taken yet. A file still here is
        not in the database: once it is, its messages are the deliverer's."""
        for p in self._files():
            async with self._lock:
                try:
                    entry = json.loads(p.read_bytes())
                except (OSError, ValueError):
                    continue
                if any(not m["delivered"] for m in entry["messages"]):
                    await self._deliver(p, entry)

    async def _meta(self, state: str) -> None:
        """netmon's own alert that it cannot reach its database. Sent to the cached webhooks
        only, never stored: there is no database to store it in."""
        since = self._down_since or datetime.now(UTC)
        now = datetime.now(UTC)
        if state == "firing":
            self._meta_id = f"msg_{uuid.uuid4().hex}"
            self._meta_started = since
        started = getattr(self, "_meta_started", since)
        view = AlertView(
            id=0,
            fingerprint=META_RULE,
            rule=META_RULE,
            device="netmon",
            labels={},
            severity="critical",
            state="firing" if state == "firing" else "resolved",
            flapping=False,
            value=None,
            summary="netmon: cannot reach the database",
            description="Alert changes are sent directly from netmon's on-disk outbox "
            "and recorded when the database is back.",
            pending_at=started,
            started_at=started,
            acknowledged_at=None,
            acknowledged_by=None,
            resolved_at=now if state == "resolved" else None,
            updated_at=now,
            kind="state",
            metric="database",
        )
        for h in self._hooks:
            if state == "resolved" and not h.webhook.send_resolved:
                continue
            labels = {"rule": META_RULE}
            info = GroupInfo(
                webhook_id=h.webhook.id,
                webhook_name=h.webhook.name,
                group_key=json.dumps(labels),
                group_labels=labels,
            )
            for message in render(
                h.webhook.format, info, [view], external_url=self.external_url, now=now
            ):
                mid = f"msg_{uuid.uuid4().hex}"
                await self._post(h, mid, message.payload)
        if state == "resolved":
            self._meta_id = None
