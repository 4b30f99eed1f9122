"""The codec's hot path for the join: the same bytes as ``schemas.codec``, several times cheaper.

``schemas.codec`` parses schemas without fastavro's "already parsed" hint, so fastavro re-walks
the schema on every call, and it decodes any writer schema. Here messages written with the
CURRENT schema (nearly all of them) are read and written with hint-parsed schemas and a reused
buffer; anything else (older writers, errors) goes through ``schemas.codec`` unchanged, so the
dead-letter reasons stay the codec's.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
from fastavro._read import schemaless_reader
from fastavro._write import schemaless_writer

from schemas.codec import HEADER_LEN, Codec, DecodeError, default_codec


class FastCodec:
    def __init__(self, codec: Codec | None = None):
        self.codec = codec or default_codec()
        self._parsed: dict[str, Any] = {}
        self._fp: dict[str, bytes] = {}
        self._header: dict[str, bytes] = {}
        for name, sch in self.codec.current.items():
            self._parsed[name] = fastavro.parse_schema(json.loads(sch.text))
            self._fp[name] = sch.fingerprint
            self._header[name] = sch.header
        self._buf = io.BytesIO()

    def fingerprint(self, name: str) -> bytes:
        return self._fp[name]

    def header(self, name: str) -> bytes:
        """Magic + fingerprint of the current schema: a message starting so needs no resolution."""
        return self._header[name]

    def decode(self, data: bytes, expect: str) -> dict[str, Any]:
        """The record, read with the current reader schema; raises ``DecodeError`` like the codec."""
        if data[2:HEADER_LEN] == self._fp[expect] and data[:2] == b"\xc3\x01":
            buf = io.BytesIO(data)
            buf.seek(HEADER_LEN)
            try:
                rec = schemaless_reader(buf, self._parsed[expect], None)
            except Exception as e:  # corrupt body: let the codec name the reason
                raise DecodeError("malformed", f"{expect} body unreadable: {type(e).__name__}: {e}") from None
            if buf.tell() != len(data):
                raise DecodeError("malformed", f"{len(data) - buf.tell()} trailing bytes after {expect}")
            return rec
        return self.codec.decode(data, expect=expect)[1]

    def decode_action(self, v: bytes) -> dict[str, Any]:
        """An ActionLog in plain Python: half of fastavro's time for this 5-field record. Anything
        unusual (an overlong varint, bad UTF-8, another shape) goes to fastavro, whose reading is
        the reference: the result is always exactly fastavro's."""
        if v[2:HEADER_LEN] != self._fp["ActionLog"] or v[:2] != b"\xc3\x01":
            return self.decode(v, "ActionLog")
        try:
            return _action(v)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error):
            return self.decode(v, "ActionLog")  # let the general path name the problem

    def encode(self, name: str, rec: dict[str, Any]) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        buf.write(self._header[name])
        schemaless_writer(buf, self._parsed[name], rec)
        return buf.getvalue()


_F32 = struct.Struct("<f")


def _action(v: bytes) -> dict[str, Any]:
    """ActionLog body: string request_id, long item_id, string action, long ts_ms, [null, float]."""
    t = action_fields(v)
    if t is None:
        return _action_general(v)
    return {"request_id": t[0], "item_id": t[1], "action": t[2], "ts_ms": t[3], "value": t[4]}


def action_fields(v: bytes) -> tuple[str, int, str, int, float | None] | None:
    """(request_id, item_id, action, ts_ms, value) of a current-schema ActionLog message, no dict.

    Unrolled for the usual shape (both strings under 64 bytes): None for any other shape (use
    ``FastCodec.decode_action``); raises IndexError / ValueError / UnicodeDecodeError if corrupt.
    """
    n = len(v)
    b = v[HEADER_LEN]
    if b >= 0x80 or b & 1:
        return None
    i = HEADER_LEN + 1 + (b >> 1)
    if i > n:
        raise ValueError("bad string length")
    rid = v[HEADER_LEN + 1:i].decode()
    b = v[i]
    i += 1
    x = b & 0x7F
    sh = 7
    while b >= 0x80:
        if sh > 63:
            raise ValueError("varint longer than 10 bytes")  # fastavro decides what it means
        b = v[i]
        i += 1
        x |= (b & 0x7F) << sh
        sh += 7
    if x >> 64:
        raise ValueError("varint beyond 64 bits")
    item = (x >> 1) ^ -(x & 1)
    b = v[i]
    if b >= 0x80 or b & 1:
        return None
    j = i + 1 + (b >> 1)
    if j > n:
        raise ValueError("bad string length")
    act = v[i + 1:j].decode()
    i = j
    b = v[i]
    i += 1
    x = b & 0x7F
    sh = 7
    while b >= 0x80:
        if sh > 63:
            raise ValueError("varint longer than 10 bytes")  # fastavro decides what it means
        b = v[i]
        i += 1
        x |= (b & 0x7F) << sh
        sh += 7
    if x >> 64:
        raise ValueError("varint beyond 64 bits")
    ts = (x >> 1) ^ -(x & 1)
    u = v[i]
    i += 1
    if u == 0:
        value = None
    elif u == 2:
        value = _F32.unpack_from(v, i)[0]
        i += 4
    else:
        raise ValueError("bad union index")
    if i != n:
        raise ValueError("trailing bytes")
    return rid, item, act, ts, value


def _action_general(v: bytes) -> dict[str, Any]:
    """ActionLog body: string request_id, long item_id, string action, long ts_ms, [null, float]."""
    i = HEADER_LEN
    out = []
    for kind in (1, 0, 1, 0):  # 1 = string, 0 = long (zig-zag varints)
        b = v[i]
        i += 1
        n = b & 0x7F
        shift = 7
        while b >= 0x80:
            if shift > 63:
                raise ValueError("varint longer than 10 bytes")
            b = v[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
        if n >> 64:
            raise ValueError("varint beyond 64 bits")
        n = (n >> 1) ^ -(n & 1)
        if kind:
            if n < 0 or i + n > len(v):
                raise ValueError("bad string length")
            out.append(v[i:i + n].decode())
            i += n
        else:
            out.append(n)
    u = v[i]
    i += 1
    if u == 0:
        value = None
    elif u == 2:
        value = _F32.unpack_from(v, i)[0]
        i += 4
    else:
        raise ValueError("bad union index")
    if i != len(v):
        raise ValueError("trailing bytes")
    return {"request_id": out[0], "item_id": out[1], "action": out[2], "ts_ms": out[3], "value": value}
