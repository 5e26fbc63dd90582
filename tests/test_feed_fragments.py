"""The writer's live-feed payloads, made from per-sample fragments, decode exactly as the
ones ``encode_samples`` makes (what the API's feed hub and caches read): same values,
same types, every payload within PostgreSQL's limit."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta

from netmon.records import Sample, SeriesKey
from netmon.store.notify import (
    PAYLOAD_LIMIT,
    decode_samples,
    decode_samples_wire,
    encode_samples,
    pack_fragments,
    sample_fragments,
)


class Level(enum.IntEnum):
    HIGH = 7


VALUES: list[int | float] = [
    0,
    1,
    -5,
    2**53 - 1,
    2**53,
    2**64 - 1,
    -(2**63),
    0.1,
    1e300,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    5.0,
    1e16,
    Level.HIGH,
]


def _exact(rows: list[tuple[int, datetime, int | float]]) -> list[tuple[int, datetime, str, type]]:
    return [(sid, time, repr(value), type(value)) for sid, time, value in rows]


def test_fragments_decode_as_encode_samples_payloads():
    t = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    ids: dict[SeriesKey, int] = {}
    samples: list[Sample] = []
    for i in range(3_000):
        key = SeriesKey.of("r1", f"m{i}", {"interface": f"e{i}"})
        ids[key] = 10_000 + i
        samples.append(Sample(key, t + timedelta(microseconds=i % 3), VALUES[i % len(VALUES)]))
    packed = pack_fragments(sample_fragments(samples, ids, {s.time for s in samples}))
    reference = encode_samples([(ids[s.series], s.time, s.value) for s in samples])
    assert all(len(p.encode()) <= PAYLOAD_LIMIT for p in packed)
    got = [row for p in packed for row in decode_samples(p)]
    want = [row for p in reference for row in decode_samples(p)]
    assert _exact(got) == _exact(want)
    wire = [row for p in packed for row in decode_samples_wire(p)]
    assert wire == [row for p in reference for row in decode_samples_wire(p)]


def test_one_sample_is_one_payload():
    key = SeriesKey("r1", "cpu")
    t = datetime(2026, 12, 7, tzinfo=UTC)
    (payload,) = pack_fragments(sample_fragments([Sample(key, t, 0.5)], {key: 3}, [t]))
    assert decode_samples(payload) == [(3, t, 0.5)]
