"""A corpus of hostile input for reliability tests: SYNTHETIC, malformed on purpose.

Every message is a (topic role, key, value, Kafka timestamp) that a careless or broken
producer could send: valid logs of every schema version, then random byte flips, truncations,
trailing garbage, records of the wrong type, overlong varints, non-UTF-8 strings, repeated map
keys, huge arrays and maps, extreme ids, empty and missing values, keys and timestamps that
break the producer contract. All request ids start with ``prefix``, so the corpus never
touches the requests of the valid traffic it is interleaved with; every message is stamped
with ``ts_of(i)`` (the valid traffic's time where it goes), so what the join accepts of it does
not move the watermark off. Kafka timestamps that break the contract are only ever earlier than
the record's ts_ms: the Flink job takes event time from Kafka timestamps before the join sees a
record, so a far-future one would move its watermark (and close every window) even though the
record itself is dead-lettered; the embedded runner ignores a rejected record's time.

Records use the feature spec's slots and dense features (FIDs made by the spec), so what is
accepted joins for real. What the join must do with each is decided by the reference reader
(``expected``): fastavro through ``schemas.codec``, then the spec's ``joiner.validate`` and the
producer contract. The fast paths must agree with it.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.codec import Codec, DecodeError, default_codec, load_schema
from schemas.spec import FeatureSpec

HISTORY = Path(__file__).resolve().parents[1] / "schemas" / "avro" / "history"


@dataclass(frozen=True)
class Poison:
    role: str  # "features" | "actions"
    key: bytes | None
    value: bytes | None
    ts: int  # the Kafka timestamp to send it with
    kind: str  # how it was made (for reports)


def _feature_log(spec: FeatureSpec, rid: str, ts: int, rng: random.Random, items: int = 3,
                 fids: int = 1) -> dict[str, Any]:
    """A valid feature log of ``spec``: each item shown once, FIDs of the right slots and sides."""
    u_slot, i_slot = next(iter(spec.sparse_on("user"))), next(iter(spec.sparse_on("item")))
    u_dense, i_dense = spec.dense_on("user"), spec.dense_on("item")
    shown = rng.sample(range(1, 10 * items + 10), items)
    return {"request_id": rid, "user_id": rng.randint(1, 10_000), "ts_ms": ts,
            "user_sparse": {u_slot: [spec.fid(u_slot, rng.randint(0, 1 << 20)) for _ in range(fids)]},
            "user_dense": {d: rng.random() for d in u_dense},
            "items": [{"item_id": i, "position": p, "sparse": {i_slot: [spec.fid(i_slot, i)]},
                       "dense": {d: rng.random() for d in i_dense}} for p, i in enumerate(shown)],
            "source": "poison"}


def _action(spec: FeatureSpec, rid: str, ts: int, rng: random.Random) -> dict[str, Any]:
    kinds = [*spec.labels, *spec.actions.ignored]
    return {"request_id": rid, "item_id": rng.randint(1, 5000), "action": rng.choice(kinds),
            "ts_ms": ts, "value": rng.choice([None, rng.random()])}


def _avro_string(text: str) -> bytes:
    raw = text.encode()
    n, out = len(raw) << 1, bytearray()  # zig-zag of a non-negative length
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + raw


def _varint_at(value: bytes, at: int, varint: bytes) -> bytes:
    return value[:at] + varint + value[at + 1:]


def corpus(spec: FeatureSpec, n: int, ts_of: Any, prefix: str = "fz-", seed: int = 1,
           max_message_bytes: int = 1 << 20, codec: Codec | None = None) -> Iterator[Poison]:
    """``n`` hostile messages; ``ts_of(i, role)`` is the timestamp for the i-th, a message of
    ``role`` (the traffic's time where it goes)."""
    codec = codec or default_codec()
    rng = random.Random(seed)
    old = [load_schema(p) for p in sorted(HISTORY.glob("FeatureLog.v*.avsc"))]
    makers = [
        "flip", "flip", "flip", "truncate", "truncate", "garbage", "wrong_type", "old_schema", "overlong_varint",
        "bad_utf8", "repeated_key", "huge_array", "huge_map", "extreme_ids", "empty", "none", "key_mismatch",
        "timestamp_mismatch", "valid",
    ]
    for i in range(n):
        role = rng.choice(["features", "actions"])
        ts = ts_of(i, role)
        rid = f"{prefix}{seed}-{i}"
        rec = _feature_log(spec, rid, ts, rng) if role == "features" else _action(spec, rid, ts, rng)
        name = "FeatureLog" if role == "features" else "ActionLog"
        value = codec.encode(name, rec)
        key = rid.encode()
        kind = rng.choice(makers)
        if kind == "flip":
            b = bytearray(value)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            value = bytes(b)
        elif kind == "truncate":
            value = value[:rng.randrange(len(value))]
        elif kind == "garbage":
            value += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        elif kind == "wrong_type":
            role = "actions" if role == "features" else "features"
        elif kind == "old_schema" and role == "features" and old:
            value = codec.encode(name, {k: v for k, v in rec.items() if k != "source"}, schema=rng.choice(old))
        elif kind == "overlong_varint":
            at = 10 + 1 + len(rid)  # the first long after request_id: user_id or item_id
            value = _varint_at(value, at, bytes([0x80 | rng.getrandbits(7)]) + b"\xff" * rng.randint(9, 11)
                               + bytes([rng.getrandbits(7)]))
        elif kind == "bad_utf8":
            value = value.replace(rid.encode(), rid.encode()[:-1] + b"\xff", 1)
        elif kind == "repeated_key":
            if role == "features" and spec.dense_on("user"):
                dense = spec.dense_on("user")[0]
                rec["user_dense"] = {dense: 1.0}
                body = codec.encode(name, rec)
                name_bytes = _avro_string(dense)  # the map's single entry: name, then a float
                at = body.index(name_bytes)
                entry = body[at:at + len(name_bytes) + 4]
                value = (body[:at - 1] + b"\x04" + entry + name_bytes + struct.pack("<f", 2.0)
                         + body[at + len(entry):])
            else:
                value = value + b"\x00"  # trailing byte: malformed
        elif kind == "huge_array" and role == "features":
            rec = _feature_log(spec, rid, ts, rng, items=rng.choice([1, 5000]), fids=rng.choice([1, 20_000]))
            value = codec.encode(name, rec)
        elif kind == "huge_map" and role == "features":
            rec["user_sparse"] = {f"s{k}": [k] for k in range(rng.choice([100, 3000]))}
            value = codec.encode(name, rec)
        elif kind == "extreme_ids":
            big = rng.choice([-(2**63), 2**63 - 1, 0, -1])
            if role == "features":
                rec["user_id"] = big
                rec["items"][0]["item_id"] = big
            else:
                rec["item_id"] = big
            value = codec.encode(name, rec)
        elif kind == "empty":
            value = b""
        elif kind == "none":
            value = None
        elif kind == "key_mismatch":
            key = rng.choice([None, b"", b"someone-else"])
        elif kind == "timestamp_mismatch":
            ts = ts - rng.choice([1, 1000, 86_400_000])  # earlier: see the module docstring
        if value is not None and len(value) > max_message_bytes:
            kind += "+oversize"
        yield Poison(role, key, value, ts, kind)


def expected(p: Poison, spec: FeatureSpec, role_record: dict[str, str], max_message_bytes: int,
             codec: Codec | None = None) -> str | None:
    """The dead-letter reason the join must give ``p`` on input, or None if it must not make one
    (it joins, or drops it as an action the spec does not know).

    ``role_record``: {"features": "FeatureLog", "actions": "ActionLog"}. The order of checks
    is the runtimes': size, decoding (fastavro), the spec (``joiner.validate``), the producer
    contract.
    """
    from joiner.engine import contract_breach
    from joiner.validate import Validator

    codec = codec or default_codec()
    if p.value is None:
        return "malformed"
    if len(p.value) > max_message_bytes:
        return "oversize"
    name = role_record[p.role]
    try:
        rec = codec.decode(p.value, expect=name)[1]
    except DecodeError as e:
        return e.reason
    validator = Validator(spec)
    verdict = validator.features(rec) if name == "FeatureLog" else validator.action(rec)
    if verdict.reason:
        return verdict.reason
    if verdict.record is None:
        return None  # dropped
    bad = contract_breach(verdict.record, p.key, p.ts)
    return bad[0] if bad is not None else None
