"""Live feeds between processes over PostgreSQL LISTEN/NOTIFY: channels and payloads.

The writer publishes what it committed; every API process LISTENs on one connection and
fans out to its WebSocket clients (``netmon.api.feeds``). ``netmon_control`` carries
cache invalidations from the API to writers and feed hubs in other processes.

Payloads are JSON, each under PostgreSQL's 8000-byte limit, so a batch goes out as several
notifications, all sent in one round trip:

- ``netmon_samples``: ``{"t0": <epoch µs>, "s": [series_id, µs after t0, value, ...]}``,
  a flat array of triples. A value is a JSON number, except integers beyond ±2**53 and
  non-finite floats, which are strings (``"18446744073709551615"``, ``"nan"``, ``"inf"``):
  what a JavaScript client reads exactly, and what the API sends on unchanged.
- ``netmon_events``: ``[{"device", "time", "kind", "message", "severity", "attributes",
  "uid"}, ...]``, the fields of ``DeviceEvent``.
- ``netmon_control``: ``{"op": "series_forget"}`` and friends, see ``publish_control``.

Notifications are best effort by nature: one sent while a listener is disconnected is lost
to it. Listeners therefore treat a reconnect as a gap.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from typing import Any, NamedTuple

import asyncpg
import msgspec

from netmon.records import DeviceEvent, Sample, SeriesKey

__all__ = [
    "CHANNELS",
    "CONTROL_CHANNEL",
    "EVENTS_CHANNEL",
    "MAX_SAFE_INTEGER",
    "PAYLOAD_LIMIT",
    "SAMPLES_CHANNEL",
    "Control",
    "Fragments",
    "SamplesPayload",
    "WireValue",
    "decode_control",
    "decode_events",
    "decode_samples",
    "encode_events",
    "encode_samples",
    "from_wire",
    "pack_fragments",
    "publish",
    "publish_control",
    "publish_events",
    "publish_fragments",
    "publish_samples",
    "sample_fragments",
    "to_wire",
]

SAMPLES_CHANNEL = "netmon_samples"
EVENTS_CHANNEL = "netmon_events"
CONTROL_CHANNEL = "netmon_control"
# Alert changes (netmon.alerts.model.AlertChange as JSON), sent in the change's transaction.
ALERTS_CHANNEL = "netmon_alerts"
CHANNELS = (SAMPLES_CHANNEL, EVENTS_CHANNEL, CONTROL_CHANNEL, ALERTS_CHANNEL)

# PostgreSQL refuses a payload of 8000 bytes or more (BLCKSZ - NAMEDATALEN - 128); a little
# margin keeps us clear of it should the server count differently (another encoding).
PAYLOAD_LIMIT = 7900
# JavaScript's Number.MAX_SAFE_INTEGER: larger integers travel as strings.
MAX_SAFE_INTEGER = 2**53 - 1

WireValue = int | float | str
# What may be published: the writer's rows hold a float as Decimal(repr(float)).
Number = int | float | Decimal
# One sample on the wire: series id, epoch microseconds, value.
WireSample = tuple[int, int, WireValue]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOTIFY_MANY = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"
_encoder = msgspec.json.Encoder()


class SamplesPayload(msgspec.Struct):
    t0: int
    s: list[WireValue]


class Control(msgspec.Struct, kw_only=True):
    op: str
    args: dict[str, Any] = {}


_samples_decoder = msgspec.json.Decoder(SamplesPayload)
_events_decoder = msgspec.json.Decoder(list[DeviceEvent])
_control_decoder = msgspec.json.Decoder(Control)


# -- values ------------------------------------------------------------------------------


def to_wire(value: Number) -> WireValue:
    """A value as JSON carries it exactly to any client (see the module docstring)."""
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        number = int(value)
        return number if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER else str(number)
    number_f = float(value)
    return number_f if math.isfinite(number_f) else repr(number_f)


def from_wire(value: WireValue) -> int | float:
    """The exact value back: a string is a big integer, or nan/inf/-inf."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return float(value)
    return value


def _us(time: datetime) -> int:
    # Exact integer arithmetic: a float timestamp would lose microseconds in 2026.
    delta = time - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# -- samples -----------------------------------------------------------------------------


def encode_samples(
    rows: Iterable[tuple[int, datetime, Number]], limit: int = PAYLOAD_LIMIT
) -> list[str]:
    """Payloads for ``rows`` of (series id, time, value), each at most ``limit`` bytes."""
    rows = rows if isinstance(rows, Sequence) else list(rows)
    if not rows:
        return []
    # A batch holds few distinct times (one per poll): each is converted once.
    offsets = {time: _us(time) for time in {time for _, time, _ in rows}}
    t0 = min(offsets.values())
    for time in offsets:
        offsets[time] -= t0
    safe = MAX_SAFE_INTEGER
    # This runs once per written sample: the common cases inline, no call per sample (a
    # plain int in the safe range; a finite float, where inf - inf and nan - nan are nan).
    flat: list[WireValue] = list(
        chain.from_iterable(
            (
                series_id,
                offsets[time],
                value
                if (type(value) is int and -safe <= value <= safe)
                or (type(value) is float and value - value == 0.0)
                else str(value)
                if type(value) is int
                else to_wire(value),
            )
            for series_id, time, value in rows
        )
    )
    return _chunks(flat, 3, lambda part: _encoder.encode(SamplesPayload(t0=t0, s=part)), limit)


class Fragments(NamedTuple):
    """Samples on their way to ``netmon_samples``, not yet cut into payloads: ``t0`` and
    one ``"series_id,µs after t0,value"`` string per sample (see ``sample_fragments``)."""

    t0: int
    items: list[str]


def sample_fragments(
    samples: Sequence[Sample], ids: Mapping[SeriesKey, int], times: Iterable[datetime]
) -> Fragments:
    """``samples`` (with their series ids) as the text of their triples in a
    ``netmon_samples`` payload, for ``pack_fragments``: the same JSON ``encode_samples``
    writes (values as ``to_wire`` gives them), made with one f-string a sample rather
    than a flat list of objects to encode. ``times``: every time among the samples."""
    offsets = {time: _us(time) for time in times}
    t0 = min(offsets.values())
    for time in offsets:
        offsets[time] -= t0
    safe = MAX_SAFE_INTEGER
    items: list[str] = []
    add = items.append
    # A loop with the value in a local: a comprehension would load it from the struct
    # once per test, and this runs for every sample published.
    for s in samples:
        v = s.value
        kind = type(v)
        if (kind is int and -safe <= v <= safe) or (kind is float and v - v == 0.0):
            add(f"{ids[s.series]},{offsets[s.time]},{v}")
        elif kind is int or kind is float:
            # A 64-bit counter past 2**53, or nan/inf: a string (see to_wire), written
            # directly: these are common (big counters), and msgspec per value cost 1 µs.
            add(f'{ids[s.series]},{offsets[s.time]},"{v!r}"')
        else:
            add(f"{ids[s.series]},{offsets[s.time]},{_json_wire(v)}")
    return Fragments(t0, items)


def _json_wire(value: Number) -> str:
    return _encoder.encode(to_wire(value)).decode()


def pack_fragments(fragments: Fragments, limit: int = PAYLOAD_LIMIT) -> list[str]:
    """``netmon_samples`` payloads of at most ``limit`` bytes (fragments are ASCII)."""
    head = f'{{"t0":{fragments.t0},"s":['
    room = limit - len(head) - 2  # "]}"
    out: list[str] = []
    items = fragments.items
    start = 0
    size = -1  # no comma before the first
    for i, item in enumerate(items):
        n = len(item) + 1
        if size + n > room and i > start:
            out.append(head + ",".join(items[start:i]) + "]}")
            start, size = i, -1
        size += n
    if start < len(items):
        out.append(head + ",".join(items[start:]) + "]}")
    return out


async def publish_fragments(conn: asyncpg.Connection, fragments: Fragments) -> int:
    """Publish committed samples given as fragments; return how many notifications."""
    payloads = pack_fragments(fragments)
    await publish(conn, SAMPLES_CHANNEL, payloads)
    return len(payloads)


def decode_samples(payload: str | bytes) -> list[tuple[int, datetime, int | float]]:
    """(series id, time, exact value) of every sample in one notification."""
    return [(sid, _time(us), from_wire(value)) for sid, us, value in decode_samples_wire(payload)]


def decode_samples_wire(payload: str | bytes) -> list[WireSample]:
    """(series id, epoch µs, value as on the wire): what the feed hub passes on as is."""
    data = _samples_decoder.decode(payload)
    flat, t0 = data.s, data.t0
    if len(flat) % 3:
        raise msgspec.ValidationError("samples: expected (series_id, time, value) triples")
    out: list[WireSample] = []
    for i in range(0, len(flat), 3):
        sid, dt, value = flat[i], flat[i + 1], flat[i + 2]
        if type(sid) is not int or type(dt) is not int:
            raise msgspec.ValidationError("samples: series id and time must be integers")
        out.append((sid, t0 + dt, value))
    return out


# -- events ------------------------------------------------------------------------------


def encode_events(events: Sequence[DeviceEvent], limit: int = PAYLOAD_LIMIT) -> list[str]:
    """Payloads for ``events``; one event too large on its own loses its attributes, then
    the tail of its message (marked with an ellipsis), rather than the whole event."""
    return _chunks([_fit(event, limit) for event in events], 1, _encoder.encode, limit)


def _fit(event: DeviceEvent, limit: int) -> DeviceEvent:
    if len(_encoder.encode([event])) <= limit:
        return event
    bare = msgspec.structs.replace(event, attributes={"truncated": "true"}, message="")
    room = limit - len(_encoder.encode([bare])) - 8
    message = event.message[: max(0, room)]
    # JSON escapes and multi-byte characters take more than one byte a character.
    while (
        message
        and len(_encoder.encode([msgspec.structs.replace(bare, message=message + "…")])) > limit
    ):
        message = message[: len(message) * 3 // 4]
    return msgspec.structs.replace(bare, message=message + "…" if message else "")


def decode_events(payload: str | bytes) -> list[DeviceEvent]:
    return _events_decoder.decode(payload)


# -- control -----------------------------------------------------------------------------


def decode_control(payload: str | bytes) -> Control:
    return _control_decoder.decode(payload)


# -- chunking and sending ----------------------------------------------------------------


def _chunks(items: list[Any], stride: int, encode: Any, limit: int) -> list[str]:
    """Encode ``items`` in runs of whole records (``stride`` items each), every run as
    large as fits in ``limit`` bytes: the run length adapts to the bytes each record took
    so far, and a run that came out too large is cut shorter and encoded again."""
    out: list[str] = []
    records = len(items) // stride
    per = 64
    i = 0
    while i < records:
        n = min(per, records - i)
        data: bytes = encode(items[i * stride : (i + n) * stride])
        if len(data) > limit:
            if n == 1:
                raise ValueError(f"one record takes {len(data)} bytes, more than {limit}")
            per = max(1, min(n - 1, int(n * limit * 0.97 / len(data))))
            continue
        out.append(data.decode())
        i += n
        # Aim a little under the limit, so the next run rarely has to be encoded twice.
        per = max(1, int(n * limit * 0.97 / len(data)))
    return out


async def publish(conn: asyncpg.Connection, channel: str, payloads: Sequence[str]) -> None:
    """Send ``payloads`` on ``channel``, all in one round trip. Outside a transaction each
    is delivered at once; inside one, at its commit (and never if it rolls back)."""
    if payloads:
        await conn.execute(_NOTIFY_MANY, channel, list(payloads))


async def publish_samples(
    conn: asyncpg.Connection, rows: Iterable[tuple[int, datetime, Number]]
) -> int:
    """Publish committed samples; return how many notifications that took."""
    payloads = encode_samples(rows)
    await publish(conn, SAMPLES_CHANNEL, payloads)
    return len(payloads)


async def publish_events(conn: asyncpg.Connection, events: Sequence[DeviceEvent]) -> int:
    payloads = encode_events(events)
    await publish(conn, EVENTS_CHANNEL, payloads)
    return len(payloads)


async def publish_control(conn: asyncpg.Connection, op: str, **args: Any) -> None:
    """Tell every netmon process: ``series_forget`` (a device or its series were deleted:
    drop cached series ids and metadata), ``device_changed`` (a device was renamed or moved
    to another site: feed hubs drop their metadata), ``token_revoked`` (``id``: its feeds
    close, token caches forget), ``samples_replayed`` (``stored``: a writer stored spooled
    samples without publishing them; the API's last values refill), ``inventory_reload``,
    ``inventory_changed`` (``ids``, ``full``, ``at``: a NetBox webhook; the poller re-reads them),
    ``config_backup`` (``device``),
    ``rules_reload``, ``outbox_wake``. Call it in the transaction of the change, so it is
    sent only if the change commits."""
    payload = _encoder.encode(Control(op=op, args=args) if args else {"op": op}).decode()
    await publish(conn, CONTROL_CHANNEL, [payload])


# Who sent a control message: a process that acts on its own request at once (say, an
# inventory reload through the API) skips the echo of it.
ORIGIN = f"{socket.gethostname()}:{os.getpid()}"
