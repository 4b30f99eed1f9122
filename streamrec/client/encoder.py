"""Logs of raw values -> the Avro messages the pipeline reads, checked against the feature spec.

``LogEncoder(spec).encode(log)`` returns the single-object encoded message (``schemas.codec``'s
bytes exactly) or raises ``SpecError`` naming the field: a slot the spec does not have, or on
the wrong side, or retired; a raw value of the wrong type; a missing request id; a non-finite
dense value; an action that is neither a label nor ignored; a message larger than the joiner
takes. What it returns is never one the joiner dead-letters for its shape (``joiner.validate``
holds the same rules; tests check the two agree).

Why it writes the bytes itself: fastavro's generic writer took ~45 us per feature log, more
than producing the message. Here each slot caches raw value (or tuple of values) -> its FIDs
and its whole encoded map entry (a feed logs the same users' and items' values all day), each
cross its entry per pair of source FIDs, and a message is joined from cached pieces; the loops
below are written for that (no call or string formatting per value unless something is wrong).
"""

from __future__ import annotations

import operator
import struct
from typing import Any

from schemas.avrobin import SMALL, SMALL_LONGS, long_bytes, string_bytes
from schemas.codec import default_codec
from schemas.fid import cross_fid, fid
from schemas.spec import CrossSpec, FeatureSpec, SpecError
from streamrec.client.logs import ActionLog, FeatureLog

F32_MAX = 3.4028234663852886e38
I32 = 1 << 31
I64 = 1 << 63
_F32 = struct.Struct("<f").pack
Entry = tuple[tuple[int, ...], bytes]  # a slot's FIDs for one raw value (or tuple) and its encoded map entry


def _path(j: int, part: str) -> str:
    """The builder field of a map: ``user`` / ``user_dense`` (j < 0) or ``items[j].sparse`` / ``.dense``."""
    return ("user" if part == "sparse" else "user_dense") if j < 0 else f"items[{j}].{part}"


def _encoded(key: bytes, fids: list[int] | tuple[int, ...]) -> bytes:
    """A map<string, array<long>> entry: the key, then the FIDs as one block."""
    if not fids:
        return key + b"\x00"
    return key + long_bytes(len(fids)) + b"".join([long_bytes(f) for f in fids]) + b"\x00"


class _Slot:
    """One slot: its map key and a bounded cache raw value (or tuple of values) -> ``Entry``."""

    __slots__ = ("name", "number", "key", "pytype", "cache", "limit", "crossed")

    def __init__(self, name: str, number: int, typ: str, limit: int):
        self.name, self.number = name, number
        self.key = string_bytes(name)
        self.pytype = int if typ == "int" else str
        self.cache: dict[Any, Entry] = {}
        self.limit = limit
        self.crossed = False  # a source of a cross: the encoder keeps its FIDs per log

    def entry(self, v: Any, j: int) -> Entry:
        """The entry of anything not found by the hot path: checks and converts every value."""
        if type(v) is list or type(v) is tuple:
            vals = tuple([self._coerce(x, j, k) for k, x in enumerate(v)])
        else:
            vals = (self._coerce(v, j, None),)
        key = vals if type(v) in (list, tuple) else vals[0]
        got = self.cache.get(key)
        if got is None:
            fids = tuple([fid(self.number, x) for x in vals])
            if len(self.cache) >= self.limit:
                self.cache.clear()  # bounded: the hot values come back at once
            got = self.cache[key] = (fids, _encoded(self.key, fids))
        return got

    def _coerce(self, v: Any, j: int, k: int | None) -> int | str:
        if type(v) is self.pytype:
            return v
        if self.pytype is int and not isinstance(v, bool | str):
            try:
                return operator.index(v)  # a numpy integer, say
            except TypeError:
                pass
        elif self.pytype is str and isinstance(v, str):
            return str(v)
        where = f"{_path(j, 'sparse')}.{self.name}" + ("" if k is None else f"[{k}]")
        want = "ints" if self.pytype is int else "strings"
        raise SpecError(where, f"{v!r} is of type {type(v).__name__}; slot {self.name!r} takes {want}")


class _Cross:
    """A cross slot: caches (entry of source a, entry of source b) -> its encoded map entry.

    The sources' entries stand for their FIDs (one entry per slot and values) and, being bytes,
    keep their hash: the key costs two lookups of cached hashes, not a walk over big ints."""

    __slots__ = ("name", "number", "key", "a", "b", "cache", "fid_cache", "limit")

    def __init__(self, name: str, c: CrossSpec, limit: int):
        self.name, self.number = name, c.number
        self.key = string_bytes(name)
        self.a, self.b = c.of
        self.cache: dict[tuple[bytes, bytes], bytes] = {}
        self.fid_cache: dict[tuple[bytes, bytes], list[int]] = {}  # the same pairs -> FIDs (``fids``)
        self.limit = limit

    def entry(self, ea: Entry, eb: Entry) -> bytes:
        key = (ea[1], eb[1])
        got = self.cache.get(key)
        if got is None:
            got = _encoded(self.key, [cross_fid(self.number, x, y) for x in ea[0] for y in eb[0]])
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[key] = got
        return got


class LogEncoder:
    """Encodes ``FeatureLog`` / ``ActionLog`` under one feature spec (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, max_message_bytes: int | None = None, fid_cache_size: int = 1_000_000):
        self.spec = spec
        self.max_bytes = max_message_bytes
        codec = default_codec()
        self.fl_header = codec.current["FeatureLog"].header
        self.al_header = codec.current["ActionLog"].header
        limit = max(1, fid_cache_size)
        sides: dict[str, dict[str, _Slot]] = {"user": {}, "item": {}}
        for name, s in spec.slots.items():
            if not s.retired:
                sides[s.side][name] = _Slot(name, s.number, s.type, limit)
        self.user, self.item = sides["user"], sides["item"]
        self.user_crosses: list[_Cross] = []
        self.item_crosses: list[_Cross] = []
        for name, c in spec.crosses.items():
            if not c.retired:
                (self.user_crosses if spec.side(name) == "user" else self.item_crosses).append(_Cross(name, c, limit))
                for src in c.of:
                    sides[spec.side(src)][src].crossed = True
        self.user_dense = {n: string_bytes(n) for n in spec.dense_on("user")}
        self.item_dense = {n: string_bytes(n) for n in spec.dense_on("item")}
        self.actions = {a: string_bytes(a) for a in spec.known_actions}
        self._rid = ("", b"")  # the last action's request id and its encoding

    # ---- entry points ---------------------------------------------------------------------
    def encode(self, log: FeatureLog | ActionLog) -> bytes:
        if type(log) is ActionLog:
            return self.action_log(log)
        if type(log) is FeatureLog:
            return self.feature_log(log)
        raise TypeError(f"not a FeatureLog or ActionLog: {type(log).__name__}")

    def record(self, log: FeatureLog | ActionLog) -> dict[str, Any]:
        """The record the pipeline reads for ``log`` (FIDs and all), as the codec decodes it."""
        return default_codec().decode(self.encode(log))[1]

    def action_log(self, a: ActionLog) -> bytes:
        rid, iid, ts, v = a.request_id, a.item_id, a.ts_ms, a.value
        act = self.actions.get(a.action) if type(a.action) is str else None
        if act is None:
            raise SpecError("action", f"{a.action!r} is neither a label nor ignored in the feature spec "
                                      f"({sorted(self.actions)})")
        if not (type(rid) is str and type(iid) is int and type(ts) is int and rid and len(rid) < SMALL
                and -I64 <= iid < I64 and 0 <= ts < I64):  # the usual case in one test; else say what is wrong
            rid_b = _request_id(rid)
            iid, ts = _int(iid, "item_id"), _int(ts, "ts_ms", 0)
        elif rid == self._rid[0]:
            rid_b = self._rid[1]  # a request's actions come together: its id is encoded once
        else:
            rid_b = rid.encode()
            rid_b = long_bytes(len(rid_b)) + rid_b
            self._rid = (rid, rid_b)
        value = b"\x00" if v is None else b"\x02" + _F32(_float(v, "value"))
        data = b"".join((self.al_header, rid_b, long_bytes(iid), act, long_bytes(ts), value))
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise SpecError("request_id", f"the encoded action is {len(data)} bytes, more than the joiner takes "
                                          f"(joiner.max_message_bytes = {self.max_bytes})")
        return data

    def feature_log(self, log: FeatureLog) -> bytes:
        """The user's maps, then each item's: the item loop is written out (no call per item or
        per value), since a feature log lists many items and this is the client's hot path."""
        rid = _request_id(log.request_id)
        items = log.items
        if not items:
            raise SpecError("items", "no shown item: a feature log lists the items it scored")
        ufids: dict[str, Entry] = {}
        parts = [self.fl_header, rid, long_bytes(_int(log.user_id, "user_id")),
                 long_bytes(_int(log.ts_ms, "ts_ms", 0)),
                 self._user_sparse(log.user, ufids),
                 self._dense(log.user_dense, self.user_dense, -1), long_bytes(len(items))]
        append = parts.append
        slots, dense, small = self.item, self.item_dense, SMALL_LONGS
        # the item crosses, with their user-side sources' entries looked up once per log
        crosses = [(c, ufids.get(c.a), ufids.get(c.b)) for c in self.item_crosses]
        shown: set[int] = set()
        for j, it in enumerate(items):
            iid, pos = it.item_id, it.position
            if pos is None:
                pos = j
            if type(iid) is not int or not -I64 <= iid < I64:
                iid = _int(iid, f"items[{j}].item_id")
            if iid in shown:
                raise SpecError(f"items[{j}].item_id", f"item {iid} is shown twice: each shown item makes one "
                                                       "example, under an id of the request and the item")
            shown.add(iid)
            if type(pos) is int and 0 <= pos < SMALL:
                append(long_bytes(iid) + small[pos])
            else:
                append(long_bytes(iid) + long_bytes(_int(pos, f"items[{j}].position", -I32, I32)))
            # sparse map: one block of entries, its count written once known
            raw = it.sparse
            n = len(raw)
            mark = len(parts)
            append(b"")
            fids = None
            for name, v in raw.items():
                s = slots.get(name)
                if s is None:
                    raise self._slot_error(name, "item", _path(j, "sparse"))
                t = type(v)
                got = None
                if t is s.pytype:
                    got = s.cache.get(v)
                elif (t is list or t is tuple) and s.pytype is str:  # a tuple of strings equals only strings
                    got = s.cache.get(v if t is tuple else tuple(v))
                if got is None:
                    got = s.entry(v, j)
                append(got[1])
                if s.crossed:
                    if fids is None:
                        fids = {}
                    fids[name] = got
            for c, ua, ub in crosses:
                fa = ua if ua is not None else (fids.get(c.a) if fids else None)
                fb = ub if ub is not None else (fids.get(c.b) if fids else None)
                if fa is not None and fb is not None:
                    append(c.entry(fa, fb))
                    n += 1
            if n:
                parts[mark] = long_bytes(n)
                append(b"\x00")
            else:
                parts[mark] = b"\x00"
            d = it.dense
            if not d:
                append(b"\x00")
            elif len(d) == 1:  # the usual single dense feature, inline
                for name, v in d.items():
                    key = dense.get(name)
                    if key is not None and type(v) is float and -F32_MAX <= v <= F32_MAX:  # NaN fails it too
                        append(b"\x02" + key + _F32(v) + b"\x00")
                    else:
                        append(self._dense(d, dense, j))  # raises, or converts an int
            else:
                append(self._dense(d, dense, j))
        if type(log.source) is not str:
            raise SpecError("source", f"{log.source!r} is of type {type(log.source).__name__}, not a string")
        append(b"\x00")
        append(string_bytes(log.source))
        data = b"".join(parts)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise SpecError("items", f"the encoded feature log is {len(data)} bytes, more than the joiner takes "
                                     f"(joiner.max_message_bytes = {self.max_bytes})")
        return data

    def fids(self, log: FeatureLog) -> dict[str, Any]:
        """The FeatureLog record ``feature_log`` would encode (FIDs, crosses computed), as a dict.

        For the model server: it scores with these FIDs and logs ``feature_log``'s bytes of the
        same raw values, both from the same per-slot caches, with the same checks (errors name
        the field), without an Avro write and read in between."""
        _request_id(log.request_id)
        if not log.items:
            raise SpecError("items", "no shown item: a feature log lists the items it scored")
        user, ue = self._side_fids(log.user, self.user, "user", -1, {})
        for c in self.user_crosses:
            self._cross_fids(c, ue.get(c.a), ue.get(c.b), user)
        items, shown = [], set()
        for j, it in enumerate(log.items):
            iid = _int(it.item_id, f"items[{j}].item_id")
            if iid in shown:
                raise SpecError(f"items[{j}].item_id", f"item {iid} is shown twice")
            shown.add(iid)
            sp, ie = self._side_fids(it.sparse, self.item, "item", j, ue)
            for c in self.item_crosses:
                self._cross_fids(c, ue.get(c.a) or ie.get(c.a), ue.get(c.b) or ie.get(c.b), sp)
            items.append({"item_id": iid, "position": j if it.position is None else it.position, "sparse": sp,
                          "dense": self._dense_values(it.dense, self.item_dense, j)})
        return {"request_id": log.request_id, "user_id": _int(log.user_id, "user_id"),
                "ts_ms": _int(log.ts_ms, "ts_ms", 0), "user_sparse": user,
                "user_dense": self._dense_values(log.user_dense, self.user_dense, -1), "items": items,
                "source": log.source}

    def _side_fids(self, raw: Any, slots: dict[str, _Slot], side: str, j: int,
                   user: dict[str, Entry]) -> tuple[dict[str, list[int]], dict[str, Entry]]:
        out, entries = {}, {}
        for name, v in raw.items():
            s = slots.get(name)
            if s is None:
                raise self._slot_error(name, side, _path(j, "sparse"))
            e = s.entry(v, j)
            out[name], entries[name] = list(e[0]), e
        return out, entries

    @staticmethod
    def _cross_fids(c: _Cross, ea: Entry | None, eb: Entry | None, into: dict[str, list[int]]) -> None:
        if ea is None or eb is None:
            return
        key = (ea[1], eb[1])
        got = c.fid_cache.get(key)
        if got is None:
            if len(c.fid_cache) >= c.limit:
                c.fid_cache.clear()
            got = c.fid_cache[key] = [cross_fid(c.number, x, y) for x in ea[0] for y in eb[0]]
        into[c.name] = got

    @staticmethod
    def _dense_values(raw: Any, names: dict[str, bytes], j: int) -> dict[str, float]:
        out = {}
        for name, v in raw.items():
            if name not in names:
                raise SpecError(f"{_path(j, 'dense')}.{name}", f"unknown dense feature {name!r} (the spec's "
                                f"{'user' if j < 0 else 'item'}-side ones: {sorted(names)})")
            out[name] = _float(v, f"{_path(j, 'dense')}.{name}")
        return out

    # ---- maps -------------------------------------------------------------------------------
    def _user_sparse(self, raw: Any, fids: dict[str, Entry]) -> bytes:
        """The user's sparse map: the given slots, then the user-side crosses (``feature_log``
        writes the items' maps the same way, inline). ``fids`` collects the entries of cross sources.

        A cached entry is used as is when the value's type proves it valid: a value of the
        slot's type, or a tuple of strings (equal only to strings) for a string slot; anything
        else goes through ``_Slot.entry``, which checks every value."""
        entries = []
        slots = self.user
        for name, v in raw.items():
            s = slots.get(name)
            if s is None:
                raise self._slot_error(name, "user", "user")
            t = type(v)
            got = None
            if t is s.pytype:
                got = s.cache.get(v)
            elif (t is list or t is tuple) and s.pytype is str:
                got = s.cache.get(v if t is tuple else tuple(v))
            if got is None:
                got = s.entry(v, -1)
            entries.append(got[1])
            if s.crossed:
                fids[name] = got
        for c in self.user_crosses:
            fa, fb = fids.get(c.a), fids.get(c.b)
            if fa is not None and fb is not None:
                entries.append(c.entry(fa, fb))
        if not entries:
            return b"\x00"
        return long_bytes(len(entries)) + b"".join(entries) + b"\x00"

    @staticmethod
    def _dense(raw: Any, names: dict[str, bytes], j: int) -> bytes:
        entries = []
        for name, v in raw.items():
            key = names.get(name)
            if key is None:
                raise SpecError(f"{_path(j, 'dense')}.{name}", f"unknown dense feature {name!r} (the spec's "
                                f"{'user' if j < 0 else 'item'}-side ones: {sorted(names)})")
            entries.append(key + _F32(_float(v, f"{_path(j, 'dense')}.{name}")))
        if not entries:
            return b"\x00"
        return long_bytes(len(entries)) + b"".join(entries) + b"\x00"

    def _slot_error(self, name: str, side: str, path: str) -> SpecError:
        spec = self.spec
        where = f"{path}.{name}"
        if name in spec.crosses:
            return SpecError(where, f"{name!r} is a cross of {list(spec.crosses[name].of)}: the client computes it")
        s = spec.slots.get(name)
        if s is not None and s.retired:
            return SpecError(where, f"slot {name!r} is retired in the feature spec")
        if s is not None:
            return SpecError(where, f"{name!r} is {'an' if s.side == 'item' else 'a'} {s.side}-side slot, "
                                    f"not {'an' if side == 'item' else 'a'} {side}-side one")
        known = sorted(self.user if side == "user" else self.item)
        return SpecError(where, f"unknown slot {name!r} (the spec's {side}-side slots: {known})")


def _request_id(rid: Any) -> bytes:
    if type(rid) is not str or not rid:
        raise SpecError("request_id", f"missing: got {rid!r}; a non-empty string (the Kafka key the join "
                                      "matches a request's logs by)")
    return string_bytes(rid)


def _int(n: Any, where: str, low: int = -I64, high: int = I64) -> int:
    """``n`` as an int in [low, high) (a numpy integer is one; a bool, float or string is not)."""
    if type(n) is not int:
        ok = not isinstance(n, bool | str | float)
        if ok:
            try:
                n = operator.index(n)
            except TypeError:
                ok = False
        if not ok:
            raise SpecError(where, f"{n!r} is of type {type(n).__name__}, not an int")
    if not low <= n < high:
        raise SpecError(where, f"{n} is out of range [{low}, {high})")
    return n


def _float(v: Any, where: str) -> float:
    if type(v) is not float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecError(where, f"{v!r} is of type {type(v).__name__}, not a float")
        v = float(v)
    if not (v - v == 0.0 and -F32_MAX <= v <= F32_MAX):
        raise SpecError(where, f"{v!r} is not a finite float32")
    return v
