"""Webhook delivery: each webhook's outbox rows sent in id order, signed by Standard
Webhooks, retried with backoff or as Retry-After says, dead-lettered when the receiver
refuses them or they expire; 410 Gone disables the webhook (docs/alerts.md, "Delivery
contract").

Several processes may run a deliverer on one database. A webhook is served by one of
them at a time: the one that claims it holds its ``webhooks`` row (``FOR NO KEY UPDATE
SKIP LOCKED``, in a transaction on a pool connection of its own) across a bounded batch
of its messages, which keeps the order of a webhook's messages across processes. The
lock is ``NO KEY``: it does not block the outbox inserts of alert changes, whose foreign
key takes ``KEY SHARE`` on the same row. Outbox rows are read and updated in short
statements of their own, committed at once, and no outbox row is locked during an HTTP
call.

Delivery is at least once: a process that stops between the receiver's answer and the
update sends the message again, with the same ``webhook-id``, for the receiver to drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

import netmon
from netmon.alerts.destinations import AllowList, DestinationError, check_destination, parse_allow
from netmon.config import WebhookSettings
from netmon.errors import ConfigError
from netmon.logs import get_logger
from netmon.store.database import Database, is_connection_error

__all__ = ["Deliverer", "DeliveryStats"]

log = get_logger(__name__)

POLL_SECONDS = 1.0
# A claimed webhook is let go after this many messages or seconds, so other webhooks,
# other processes, and API edits of the webhook (which wait for its row) get a turn.
BATCH_ROWS = 100
BATCH_SECONDS = 10.0
ERROR_BODY_CHARS = 200
_READ_LIMIT = 4096  # of a receiver's answer: enough for the error text, no more
_RETRY_STATUSES = frozenset({408, 409, 425, 429})

OutcomeKind = Literal["delivered", "retry", "dead", "gone"]

_DUE = """
SELECT w.id, extract(epoch FROM h.next_attempt_at - clock_timestamp())::float8 AS wait
FROM webhooks w
CROSS JOIN LATERAL (
    SELECT o.next_attempt_at FROM webhook_outbox o
    WHERE o.webhook_id = w.id AND o.state = 'pending'
    ORDER BY o.id LIMIT 1
) h
WHERE w.enabled
ORDER BY wait
"""

_CLAIM = """
SELECT id, name, url, secret, enabled FROM webhooks WHERE id = $1
FOR NO KEY UPDATE SKIP LOCKED
"""

# The next pending messages in order: a few at a time, so a burst does not cost a round
# trip per message to find its head.
_HEADS = """
SELECT id, message_id, payload, attempts,
       extract(epoch FROM next_attempt_at - clock_timestamp())::float8 AS wait
FROM webhook_outbox WHERE webhook_id = $1 AND state = 'pending'
ORDER BY id LIMIT $2
"""
_HEADS_AT_ONCE = 20

_DELIVERED = """
UPDATE webhook_outbox SET state = 'delivered', delivered_at = clock_timestamp(),
    attempts = attempts + 1, last_attempt_at = $2, last_status = $3, last_error = NULL
WHERE id = $1 AND state = 'pending'
"""

_DEAD = """
UPDATE webhook_outbox SET state = 'dead', dead_at = clock_timestamp(),
    attempts = attempts + 1, last_attempt_at = $2, last_status = $3, last_error = $4
WHERE id = $1 AND state = 'pending'
"""

# A retry that would fall past expires_at dead-letters the message instead, keeping the
# last error as the reason. Times are the database's, as the rest of the outbox's.
_RETRY = """
WITH t AS (SELECT clock_timestamp() AS now,
                  clock_timestamp() + make_interval(secs => $5) AS next_at)
UPDATE webhook_outbox o SET
    attempts = o.attempts + 1, last_attempt_at = $2, last_status = $3, last_error = $4,
    state = CASE WHEN t.next_at > o.expires_at THEN 'dead' ELSE 'pending' END,
    dead_at = CASE WHEN t.next_at > o.expires_at THEN t.now END,
    next_attempt_at = CASE WHEN t.next_at > o.expires_at THEN o.next_attempt_at
                           ELSE t.next_at END
FROM t
WHERE o.id = $1 AND o.state = 'pending'
RETURNING o.state
"""

# 410: the message stays pending, due at once should the webhook be enabled again.
_GONE = """
UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at = $2, last_status = $3,
    last_error = $4, next_attempt_at = clock_timestamp()
WHERE id = $1 AND state = 'pending'
"""

_DISABLE = """
UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now() WHERE id = $1
"""


@dataclass
class DeliveryStats:
    """Counts since start: messages delivered, attempts made, failed attempts, retries
    scheduled, messages dead-lettered, webhooks disabled (410)."""

    delivered: int = 0
    attempts: int = 0
    failures: int = 0
    retried: int = 0
    dead: int = 0
    disabled: int = 0


@dataclass(frozen=True, slots=True)
class _Webhook:
    id: int
    name: str
    url: str
    secret: str

    @property
    def host(self) -> str:
        # What logs name: never the path or query, which may carry a receiver's token.
        try:
            return urlsplit(self.url).hostname or "?"
        except ValueError:
            return "?"


@dataclass(frozen=True, slots=True)
class _Head:
    id: int
    message_id: str
    payload: str
    attempts: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: OutcomeKind
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the receiver's Retry-After


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from ``now``: delay-seconds or an HTTP-date; None if absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _classify(status: int, text: str, retry_after: str | None) -> _Outcome:
    error = f"HTTP {status}: {text.strip()[:ERROR_BODY_CHARS]}"
    if 200 <= status < 300:
        return _Outcome("delivered", status)
    if status == 410:
        return _Outcome("gone", status, error)
    if status in _RETRY_STATUSES or 500 <= status < 600:
        return _Outcome("retry", status, error, _retry_after(retry_after, _now()))
    if 300 <= status < 400:
        error += " (redirects are not followed)"
    return _Outcome("dead", status, error)


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"timed out ({type(exc).__name__})"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {detail}"
    return f"{type(exc).__name__}: {detail}"


async def _read_some(response: httpx.Response) -> str:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _READ_LIMIT:
            break
    return data[:_READ_LIMIT].decode("utf-8", errors="replace")


class Deliverer:
    """Delivers the webhook outbox until closed. ``wake()`` after committing outbox rows
    (from the event loop's thread); it also looks every second on its own."""

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
        *,
        user_agent: str = f"netmon/{netmon.__version__}",
    ) -> None:
        self.db = db
        self.settings = settings
        self.user_agent = user_agent
        self.stats = DeliveryStats()
        self._allow: AllowList = parse_allow(settings.allow)
        self._timeout = settings.timeout.total_seconds()
        self._wake = asyncio.Event()
        self._closing = False
        self._loop: asyncio.Task[None] | None = None
        self._workers: dict[int, asyncio.Task[bool]] = {}
        self._held_elsewhere: dict[int, float] = {}  # webhook id -> monotonic retry time
        self._slots = 1
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        max_size = int(self.db.pool.get_max_size())
        if max_size < 3:
            # A worker holds two connections (its claim, its records), and the rest of
            # the process needs one.
            raise ConfigError("webhook delivery needs database.pool_max of 3 or more")
        self._slots = max(1, min(self.settings.concurrency, (max_size - 1) // 2))
        # No proxies from the environment (a proxy would connect wherever it likes, past
        # the checked address); TLS trusts the system's store, where an internal CA (an
        # NSP's) is added, and OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self._timeout,
            trust_env=False,
            verify=ssl.create_default_context(),
        )
        self._closing = False
        self._loop = asyncio.create_task(self._run(), name="webhook-deliverer")
        log.info("webhook delivery started", parallel=self._slots)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop: the attempts in flight finish (bounded by the timeout), none start."""
        self._closing = True
        self._wake.set()
        if self._loop is not None:
            await _finish([self._loop], self._timeout + 5)
            self._loop = None
        await _finish(list(self._workers.values()), self._timeout + 5)
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        failing = False  # log an outage of the database once, not every second
        while not self._closing:
            self._wake.clear()
            wait = POLL_SECONDS
            try:
                wait = min(wait, await self._dispatch())
                if failing:
                    log.info("webhook delivery: the outbox is readable again")
                failing = False
            except Exception as exc:
                if not failing:
                    _log_failure(exc, "webhook delivery: cannot read the outbox")
                failing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.005)):
                    await self._wake.wait()

    async def _dispatch(self) -> float:
        """Start a worker for each due webhook while slots are free; the seconds until the
        next head message that is not due yet."""
        rows = await self.db.pool.fetch(_DUE)
        now = time.monotonic()
        self._held_elsewhere = {k: t for k, t in self._held_elsewhere.items() if t > now}
        wait = POLL_SECONDS
        for row in rows:
            webhook_id, due_in = int(row["id"]), float(row["wait"])
            if webhook_id in self._workers or webhook_id in self._held_elsewhere:
                continue
            if due_in > 0:
                wait = min(wait, due_in)
            elif len(self._workers) < self._slots and not self._closing:
                self._spawn(webhook_id)
        return wait

    def _spawn(self, webhook_id: int) -> None:
        task = asyncio.create_task(self._serve(webhook_id), name=f"webhook-{webhook_id}")
        self._workers[webhook_id] = task
        task.add_done_callback(lambda t: self._worker_done(webhook_id, t))

    def _worker_done(self, webhook_id: int, task: asyncio.Task[bool]) -> None:
        self._workers.pop(webhook_id, None)
        claimed = not task.cancelled() and task.exception() is None and task.result()
        if not claimed:
            # Another process holds it (or it failed): look again at the next tick, not
            # at every wake, which would spin while the other holder works.
            self._held_elsewhere[webhook_id] = time.monotonic() + POLL_SECONDS
        self._wake.set()

    # --- one webhook -------------------------------------------------------------------

    async def _serve(self, webhook_id: int) -> bool:
        """Claim the webhook and deliver a batch of its messages; False if not claimed."""
        try:
            async with (
                self.db.pool.acquire() as conn,
                self.db.pool.acquire() as rec,
                conn.transaction(isolation="read_committed"),
            ):
                row = await conn.fetchrow(_CLAIM, webhook_id)
                if row is None or not row["enabled"]:
                    return False
                hook = _Webhook(int(row["id"]), row["name"], row["url"], row["secret"])
                await self._batch(conn, rec, hook)
                return True
        except Exception as exc:
            _log_failure(exc, "webhook delivery failed", webhook_id=webhook_id)
            return False

    async def _batch(
        self, conn: asyncpg.Connection, rec: asyncpg.Connection, hook: _Webhook
    ) -> None:
        """Deliver in order until a message must wait. Attempts are recorded on ``rec``
        (autocommit: a delivery stays recorded whatever happens to the claim), held for
        the batch rather than taken from the pool per message."""
        deadline = time.monotonic() + BATCH_SECONDS
        sent = 0
        while sent < BATCH_ROWS:
            rows = await conn.fetch(_HEADS, hook.id, min(_HEADS_AT_ONCE, BATCH_ROWS - sent))
            if not rows:
                return
            for row in rows:
                if self._closing or time.monotonic() > deadline or float(row["wait"]) > 0:
                    return
                head = _Head(
                    int(row["id"]), row["message_id"], row["payload"], int(row["attempts"])
                )
                outcome = await self._attempt(hook, head)
                sent += 1
                if not await self._record(conn, rec, hook, head, outcome):
                    return  # the head waits for its retry (or the webhook is disabled)

    async def send_direct(
        self, webhook_id: int, name: str, url: str, secret: str, message_id: str, payload: str
    ) -> bool:
        """One attempt at a message that is not in the outbox (the database is away):
        signed and checked as an outbox delivery; True if the receiver took it."""
        if self._client is None:
            return False
        outcome = await self._attempt(
            _Webhook(webhook_id, name, url, secret), _Head(0, message_id, payload, 0)
        )
        if outcome.kind != "delivered":
            log.warning("direct webhook attempt failed", webhook=name, error=outcome.error)
        return outcome.kind == "delivered"

    async def _attempt(self, hook: _Webhook, head: _Head) -> _Outcome:
        self.stats.attempts += 1
        try:
            addresses = await check_destination(hook.url, self._allow)
        except DestinationError as exc:
            return _Outcome("retry", None, f"destination refused: {exc}")
        try:
            headers = self._headers(hook, head)
        except Exception as exc:
            # The exception's type only: its text could quote the secret.
            return _Outcome(
                "retry", None, f"the webhook's secret is unusable ({type(exc).__name__})"
            )
        try:
            async with asyncio.timeout(self._timeout):
                return await self._post(hook.url, addresses, headers, head.payload)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return _Outcome("retry", None, _describe(exc))

    def _headers(self, hook: _Webhook, head: _Head) -> dict[str, str]:
        # Whole seconds, so the signed timestamp is the one the header says.
        stamp = datetime.fromtimestamp(int(time.time()), UTC)
        signature = Webhook(hook.secret).sign(head.message_id, stamp, head.payload)
        return {
            "webhook-id": head.message_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
            "user-agent": self.user_agent,
        }

    async def _post(
        self, url: str, addresses: list[str], headers: dict[str, str], body: str
    ) -> _Outcome:
        assert self._client is not None
        target = httpx.URL(url)
        if target.scheme == "https":
            # TLS verifies the certificate against the name: a name re-pointed elsewhere
            # after the check fails the handshake before anything is sent.
            return await self._send(target, headers, body)
        # Plain http: connect to an address just checked, not to a fresh resolution.
        pinned_headers = {**headers, "host": target.netloc.decode("ascii")}
        last: httpx.ConnectError | None = None
        for address in addresses:
            try:
                return await self._send(target.copy_with(host=address), pinned_headers, body)
            except httpx.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def _send(self, url: httpx.URL, headers: dict[str, str], body: str) -> _Outcome:
        assert self._client is not None
        content = body.encode()
        async with self._client.stream("POST", url, content=content, headers=headers) as resp:
            # Read (a bounded part of) every answer: a read response returns its
            # connection to the pool; the text is the error reason when there is one.
            text = await _read_some(resp)
            return _classify(resp.status_code, text, resp.headers.get("retry-after"))

    # --- outcomes ----------------------------------------------------------------------

    def _retry_delay(self, attempts: int, retry_after: float | None) -> float:
        initial = self.settings.retry_initial.total_seconds()
        longest = self.settings.retry_max.total_seconds()
        backoff = min(longest, initial * 2.0 ** min(attempts - 1, 60))
        return max(backoff, retry_after or 0.0)

    async def _record(
        self,
        conn: asyncpg.Connection,
        rec: asyncpg.Connection,
        hook: _Webhook,
        head: _Head,
        outcome: _Outcome,
    ) -> bool:
        """Store the attempt; True if the next message may go now."""
        args = (head.id, _now(), outcome.status)
        where = {"webhook": hook.name, "webhook_id": hook.id, "message_id": head.message_id}
        attempts = head.attempts + 1
        if outcome.kind == "delivered":
            await rec.execute(_DELIVERED, *args)
            self.stats.delivered += 1
            log.debug("webhook message delivered", status=outcome.status, **where)
            return True
        self.stats.failures += 1
        if outcome.kind == "dead":
            await rec.execute(_DEAD, *args, outcome.error)
            self.stats.dead += 1
            log.warning("webhook message refused: dead", error=outcome.error, **where)
            return True
        if outcome.kind == "gone":
            await self._disable(conn, rec, hook, head, outcome)
            return False
        delay = self._retry_delay(attempts, outcome.retry_after)
        state = await rec.fetchval(_RETRY, *args, outcome.error, delay)
        if state == "dead":
            self.stats.dead += 1
            log.warning("webhook message expired: dead", error=outcome.error, **where)
            return True
        self.stats.retried += 1
        log.warning(
            "webhook attempt failed; retrying",
            error=outcome.error,
            attempts=attempts,
            retry_in=round(delay, 3),
            host=hook.host,
            **where,
        )
        return False

    async def _disable(
        self,
        conn: asyncpg.Connection,
        rec: asyncpg.Connection,
        hook: _Webhook,
        head: _Head,
        outcome: _Outcome,
    ) -> None:
        await rec.execute(_GONE, head.id, _now(), outcome.status, outcome.error)
        reason = (
            f"the receiver answered 410 Gone at {_now().isoformat(timespec='seconds')} "
            f"(message {head.message_id})"
        )
        # On the claiming connection: it holds the webhook's row.
        await conn.execute(_DISABLE, hook.id, reason)
        self.stats.disabled += 1
        log.error("webhook disabled: 410 Gone", webhook=hook.name, webhook_id=hook.id)


async def _finish(tasks: list[asyncio.Task[Any]], grace: float) -> None:
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(exc: BaseException, what: str, **fields: Any) -> None:
    if is_connection_error(exc):
        # Debug: the writer's "database unreachable" is the outage's one warning.
        log.debug(what, error=f"{type(exc).__name__}: {exc}", **fields)
    else:
        log.exception(what, **fields)
