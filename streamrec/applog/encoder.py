"""Logs of raw values -> the Avro messages the pipeline reads, checked against the feature spec.

``LogEncoder(spec).encode(log)`` returns the single-object encoded message (``schemas.codec``'s
bytes exactly) or raises ``SpecError`` naming the field: a slot the spec does not have, or on
the wrong side, or retired; a raw value of the wrong type; a missing request id; a non-finite
dense value; an action that is neither a label nor ignored; a message larger than the joiner
takes. What it returns is never one the joiner dead-letters for its shape (``joiner.validate``
holds the same rules; tests check the two agree).

Why it writes the bytes itself: fastavro's generic writer took ~45 us per feature log, more
than producing the message. A feed logs the same users' and items' values all day, so what is
encoded is cached: an item's id and sparse map, its dense map and a user's two maps, each
keyed by ``marshal`` of its raw values (``_key``: exact types, the values as they are now, never
the objects, which an application may mutate and reuse); each slot's entry per raw value and
each cross's entry per pair of source entries (and its FID per pair of FIDs) for what misses.
A cached item then costs no Python code of its own (``_items_fast``: C-level passes over the
items), and values are checked one by one only on a miss. An action is joined from its request
id's Kafka key and header (kept per request id: a request's actions follow its feature log,
interleaved with other requests') and cached varints. All caches are bounded
(``client.fid_cache_size`` entries each, ``client.request_cache_size`` request ids).

The hot paths, the usual action and the usual feature log, also exist in C (``_native.c``,
built at install when a compiler is there): the same bytes from the same rules, ~2.4x faster on
the MovieLens replay. There an item's sparse map is cached under its id, and dense and user maps
under an exact hash of their values, each confirmed against a private copy of the values it was
encoded from (building marshal keys was most of an item's cost). Anything unusual there, and every miss,
comes back to the Python code below, which checks and raises; without the module the Python
paths run alone. The tests run on both and compare them.
"""

from __future__ import annotations

import operator
import struct
from itertools import chain, repeat
from marshal import dumps
from math import inf
from operator import attrgetter, itemgetter
from typing import Any

from schemas.avrobin import HIGH, LOW2, SMALL, SMALL_LONGS, long_bytes, string_bytes
from schemas.codec import default_codec
from schemas.fid import cross_fid, fid
from schemas.spec import CrossSpec, FeatureSpec, SpecError
from streamrec.applog.logs import ActionLog, FeatureLog, Item

try:  # the hot paths in C (setup.py builds it when a compiler is there): same bytes, same caches
    from streamrec.applog import _native
except ImportError:
    _native = None

F32_MAX = 3.4028234663852886e38
I32 = 1 << 31
I64 = 1 << 63
_F32 = struct.Struct("<f").pack
Entry = tuple[tuple[int, ...], bytes]  # a slot's FIDs for one raw value (or tuple) and its encoded map entry
# an item's cached id and sparse map: (item id, its varint, the count of its own sparse entries, those
# entries, per item cross the entries of its item-side sources, the map up to its end when no cross
# applies; for the one cross of ``LogEncoder._xfast``: that up to the cross's entry, the item-side
# source's entry and its bytes)
ItemEntry = tuple[int, bytes, int, bytes, tuple[tuple[Entry | None, Entry | None], ...], bytes, bytes,
                  Entry | None, bytes | None]
_KEY_FIELDS = attrgetter("item_id", "sparse")  # the raw values an item's ItemEntry is keyed by
_DENSE, _POSITION = attrgetter("dense"), attrgetter("position")
_IID, _IID_B, _PRE, _PRE_X, _XSRC_B = (itemgetter(i) for i in (0, 1, 5, 6, 8))


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
    """A cross slot: caches (entry of source a, entry of source b) -> its encoded map entry, and
    (FID a, FID b) -> the cross FID's varint, so a new combination of known values (a user and a
    movie's list of genres, say) costs lookups, not hashes.

    The sources' entries stand for their FIDs (one entry per slot and values) and, being bytes,
    keep their hash: the key costs two lookups of cached hashes, not a walk over big ints."""

    __slots__ = ("name", "number", "key", "a", "b", "cache", "pairs", "fid_cache", "limit", "native")

    def __init__(self, name: str, c: CrossSpec, limit: int):
        self.name, self.number = name, c.number
        self.key = string_bytes(name)
        self.a, self.b = c.of
        self.cache: dict[tuple[bytes, bytes], bytes] = {}
        self.pairs: dict[tuple[int, int], bytes] = {}
        self.fid_cache: dict[tuple[bytes, bytes], list[int]] = {}  # entries' pairs -> FIDs (``fids``)
        self.limit = limit
        # for the C path, which makes entries itself: (key, FID a -> FID b -> the pair's varint, pair)
        self.native: tuple[bytes, dict[int, dict[int, bytes]], Any] = (self.key, {}, self.pair)

    def entry(self, ea: Entry, eb: Entry) -> bytes:
        key = (ea[1], eb[1])
        got = self.cache.get(key)
        if got is None:
            fids = []
            pairs = self.pairs
            for x in ea[0]:
                for y in eb[0]:
                    f = pairs.get((x, y))
                    if f is None:
                        f = self.pair(x, y)
                        _put(pairs, (x, y), f, self.limit)
                    fids.append(f)
            got = self.key + (long_bytes(len(fids)) + b"".join(fids) if fids else b"") + b"\x00"
            _put(self.cache, key, got, self.limit)
        return got

    def pair(self, x: int, y: int) -> bytes:
        """The varint of the cross FID of source FIDs x and y."""
        return long_bytes(cross_fid(self.number, x, y))


class LogEncoder:
    """Encodes ``FeatureLog`` / ``ActionLog`` under one feature spec (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, max_message_bytes: int | None = None, fid_cache_size: int = 1_000_000,
                 request_cache_size: int = 1 << 16, native: bool = True):
        self.spec = spec
        # the C paths (``_native``) when built, unless ``native=False`` (the tests compare the two)
        self.native = _native if native else None
        self.max_bytes = max_message_bytes
        codec = default_codec()
        self.fl_header = codec.current["FeatureLog"].header
        self.al_header = codec.current["ActionLog"].header
        self.limit = limit = max(1, fid_cache_size)
        # marshal of raw values (``_key``) -> encoded parts: items' ids and sparse maps, items' dense
        # maps (after the end of the sparse map), users' sparse maps (with the entries of cross sources)
        self.items: dict[bytes, ItemEntry] = {}
        self.item_denses: dict[bytes, bytes] = {}
        self.users: dict[bytes, tuple[bytes, dict[str, Entry]]] = {}
        self.user_denses: dict[bytes, bytes] = {}
        # the C path's own item caches: exact hash of raw values -> (a copy of them, as above)
        self.native_items: dict[int, tuple[Any, ItemEntry]] = {}
        self.native_denses: dict[int, tuple[Any, bytes]] = {}
        self.native_cross: dict[bytes, dict[bytes, bytes]] = {}  # user's entry -> item's entry -> the cross's
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
        # the items' fast path (``_items_fast``) takes specs with no item cross, or one of a user-side
        # and an item-side slot: (that cross, whether its user-side source is its first)
        self._xfast: tuple[_Cross, bool] | None = None
        self._fast = not self.item_crosses
        if len(self.item_crosses) == 1:
            c = self.item_crosses[0]
            sides = spec.side(c.a), spec.side(c.b)
            if sorted(sides) == ["item", "user"]:
                self._xfast, self._fast = (c, sides[0] == "user"), True
        # an action with a request id's part (header included) at most this long always fits: the
        # rest is two longs, an action name and a float
        longest = max(map(len, self.actions.values()))
        self._fits = inf if max_message_bytes is None else max_message_bytes - 20 - longest - 5
        # request id -> (its Kafka key, an action's bytes up to the item id), for the request ids whose
        # actions always fit: a request's actions come within seconds of its feature log (which adds
        # it), interleaved with other requests', so the last one alone would rarely match
        self.heads: dict[str, tuple[bytes, bytes]] = {}
        self.heads_limit = max(1, request_cache_size)
        # what the C path's ``feature`` reads (its own user caches: exact hash -> (a copy, the maps))
        self.native_users: dict[int, tuple[Any, tuple[bytes, dict[str, Entry]]]] = {}
        self.native_user_denses: dict[int, tuple[Any, bytes]] = {}
        xf = self._xfast
        self._native_ctx = (
            self.fl_header, self.al_header, self.heads, self.heads_limit, -1 if self._fits == inf else self._fits,
            -1 if max_message_bytes is None else max_message_bytes, self.native_users, self.native_user_denses,
            limit, self._user_miss, self._user_dense_miss, self.native_items, self.native_denses, self._item_miss,
            self._item_dense,
            None if xf is None else (xf[0].a if xf[1] else xf[0].b, xf[1], self.native_cross, xf[0].native))

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
        return self.action_message(a)[1]

    def action_message(self, a: ActionLog) -> tuple[bytes, bytes]:
        """(Kafka key, message) of an action. The usual action (its request id in ``heads``, a
        small item id, a timestamp whose varint's high part is cached, no value) is checked in one
        test and joined from six cached pieces with no call: actions are most of the messages.
        Anything else takes ``_action_checked``, which checks each field and raises."""
        if self.native is not None:
            got = self.native.action(a, self.heads, self.actions)
            return self._action_checked(a) if got is None else got
        rid, iid, ts = a.request_id, a.item_id, a.ts_ms
        head = self.heads.get(rid) if type(rid) is str else None
        act = self.actions.get(a.action) if type(a.action) is str else None
        hi = HIGH.get(ts >> 13) if type(ts) is int and SMALL <= ts < I64 else None  # ts >> 13: (ts << 1) >> 14
        if head is None or act is None or hi is None or a.value is not None or type(iid) is not int \
                or not 0 <= iid < SMALL:
            return self._action_checked(a)
        return head[0], b"".join((head[1], SMALL_LONGS[iid], act, LOW2[(ts << 1) & 0x3FFF], hi, b"\x00"))

    def _action_checked(self, a: ActionLog) -> tuple[bytes, bytes]:
        """Any action, each field checked; its request id's head is remembered (``_head``)."""
        rid, iid, ts, v = a.request_id, a.item_id, a.ts_ms, a.value
        act = self.actions.get(a.action) if type(a.action) is str else None
        if act is None:
            raise SpecError("action", f"{a.action!r} is neither a label nor ignored in the feature spec "
                                      f"({sorted(self.actions)})")
        _request_id(rid)
        iid, ts = _int(iid, "item_id"), _int(ts, "ts_ms", 0)  # raises, or converts a numpy int
        got = self.heads.get(rid)
        if got is None:
            key = rid.encode()
            got = self._head(rid, key, (SMALL_LONGS[len(key)] if len(key) < SMALL else long_bytes(len(key))) + key)
        key, head = got
        data = b"".join((head, long_bytes(iid), act, long_bytes(ts),
                         b"\x00" if v is None else b"\x02" + _F32(_float(v, "value"))))
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise SpecError("request_id", f"the encoded action is {len(data)} bytes, more than the joiner takes "
                                          f"(joiner.max_message_bytes = {self.max_bytes})")
        return key, data

    def _head(self, rid: str, key: bytes, rid_bytes: bytes) -> tuple[bytes, bytes]:
        """(key, an action's bytes up to the item id) of a request id, kept in ``heads`` if any
        action of the request fits the joiner's limit (nearly always: ``_action_checked`` checks
        the others one by one)."""
        got = (key, self.al_header + rid_bytes)
        if len(got[1]) <= self._fits:
            _put(self.heads, rid, got, self.heads_limit)
        return got

    def feature_log(self, log: FeatureLog) -> bytes:
        return self.feature_message(log)[1]

    def feature_message(self, log: FeatureLog) -> tuple[bytes, bytes]:
        """(Kafka key, message): the user's maps, then each item's. An item's sparse map (with
        its id) and its dense map are cached, each keyed by ``marshal`` of its raw values
        (``_key``), as are the user's maps: a hit costs a C call and a lookup however many values
        it has. Only crosses of a user and an item slot, which depend on both, are looked up per
        item. The request id's action head is remembered for the actions that follow."""
        if self.native is not None and self._fast:
            try:  # the whole log in C; None (or an error): this code takes it, checks and raises in order
                got = self.native.feature(log, self._native_ctx)
            except SpecError:
                got = None
            if got is not None:
                return got
        rid = log.request_id
        if type(rid) is not str or not rid:
            _request_id(rid)  # raises
        key = rid.encode()
        rid_bytes = (SMALL_LONGS[len(key)] if len(key) < SMALL else long_bytes(len(key))) + key
        items = log.items
        if not items:
            raise SpecError("items", "no shown item: a feature log lists the items it scored")
        uid, ts = log.user_id, log.ts_ms
        if not (type(uid) is int and type(ts) is int and 0 <= uid < SMALL and 0 <= ts < I64):
            uid, ts = _int(uid, "user_id"), _int(ts, "ts_ms", 0)
        user, ufids = self._user_sparse(log.user)
        parts = [self.fl_header, rid_bytes, long_bytes(uid), long_bytes(ts), user, self._user_dense(log.user_dense),
                 long_bytes(len(items))]
        fast = self._items_fast(items, ufids) if self._fast else None
        if fast is None:
            self._items_loop(items, ufids, parts)
        else:
            parts.append(fast)
        if type(log.source) is not str:
            raise SpecError("source", f"{log.source!r} is of type {type(log.source).__name__}, not a string")
        parts.append(b"\x00")
        parts.append(string_bytes(log.source))
        data = b"".join(parts)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise SpecError("items", f"the encoded feature log is {len(data)} bytes, more than the joiner takes "
                                     f"(joiner.max_message_bytes = {self.max_bytes})")
        if rid not in self.heads:
            self._head(rid, key, rid_bytes)
        return key, data

    def _items_fast(self, items: list[Item], ufids: dict[str, Entry]) -> bytes | None:
        """Every item's bytes (from its id on) by C-level passes over the list (``map``, ``zip``):
        no Python code runs per cached item. None, and ``_items_loop`` (which checks and raises
        in order) takes the log, when anything is not the usual: an item that fails a check, an
        id shown twice, a position that is not a small int."""
        xf = self._xfast
        u = None if xf is None else ufids.get(xf[0].a if xf[1] else xf[0].b)
        n = len(items)
        try:
            keys = list(map(dumps, map(_KEY_FIELDS, items), repeat(2, n)))
            dkeys = list(map(dumps, map(_DENSE, items), repeat(2, n)))
        except (ValueError, AttributeError):
            return None
        es = list(map(self.items.get, keys))
        ds = list(map(self.item_denses.get, dkeys))
        try:
            if None in es:
                for j, e in enumerate(es):
                    if e is None:
                        es[j] = self._item(items[j], j, keys[j], set())
            if None in ds:
                for j, d in enumerate(ds):
                    if d is None:
                        ds[j] = self._item_dense(items[j].dense, j, dkeys[j])
        except SpecError:
            return None
        if len(set(map(_IID, es))) < n:
            return None
        pos = list(map(_POSITION, items))
        if pos.count(None) == n and n <= SMALL:
            posb = SMALL_LONGS[:n]
        else:
            posb = [SMALL_LONGS[q] if type(q) is int and 0 <= q < SMALL else None
                    for q in (j if p is None else p for j, p in enumerate(pos))]
            if None in posb:
                return None
        if u is None:  # no cross applies
            return b"".join(chain.from_iterable(zip(map(_IID_B, es), posb, map(_PRE, es), ds, strict=True)))
        c, user_first = xf
        us = repeat(u[1], n)  # the cross's key: its sources' entries' bytes, as in _Cross.entry
        xs = list(map(c.cache.get, zip(us, map(_XSRC_B, es), strict=True) if user_first
                      else zip(map(_XSRC_B, es), us, strict=True)))
        if None in xs:  # a pair not seen yet, or an item without the cross's source
            for j, x in enumerate(xs):
                if x is None:
                    i = es[j][7]
                    xs[j] = b"" if i is None else c.entry(u, i) if user_first else c.entry(i, u)
        return b"".join(chain.from_iterable(zip(map(_IID_B, es), posb, map(_PRE_X, es), xs, ds, strict=True)))

    def _items_loop(self, items: list[Item], ufids: dict[str, Entry], parts: list[bytes]) -> None:
        """The items one by one, checked in the order the wire has them: any spec, any log."""
        append = parts.append
        # the item crosses, with their user-side sources' entries looked up once per log
        crosses = [(c, ufids.get(c.a), ufids.get(c.b)) for c in self.item_crosses]
        shown: set[int] = set()
        for j, it in enumerate(items):
            k = _key((it.item_id, it.sparse))
            e = self.items.get(k)
            if e is None:
                e = self._item(it, j, k, shown)
            iid = e[0]
            if iid in shown:
                raise SpecError(f"items[{j}].item_id", f"item {iid} is shown twice: each shown item makes one "
                                                       "example, under an id of the request and the item")
            shown.add(iid)
            pos = it.position
            if pos is None:
                pos = j
            append(e[1])
            append(SMALL_LONGS[pos] if type(pos) is int and 0 <= pos < SMALL
                   else long_bytes(_int(pos, f"items[{j}].position", -I32, I32)))
            xs = []
            for (c, ua, ub), (ia, ib) in zip(crosses, e[4], strict=True):
                fa = ua if ua is not None else ia
                fb = ub if ub is not None else ib
                if fa is not None and fb is not None:
                    xs.append(c.entry(fa, fb))
            if xs:  # one block: the item's own entries, then its crosses
                append(long_bytes(e[2] + len(xs)) + e[3] + b"".join(xs))
            else:
                append(e[5])
            dk = _key(it.dense)
            d = self.item_denses.get(dk)
            append(d if d is not None else self._item_dense(it.dense, j, dk))

    def _item_miss(self, it: Item, j: int, k: None) -> ItemEntry:
        return self._item(it, j, k, set())

    def _item(self, it: Item, j: int, k: bytes | None, shown: set[int]) -> ItemEntry:
        """An item's id and sparse map, not in the cache: checked in the order the wire has them
        (id, position, sparse), encoded, and cached under ``k`` if its values are plain (``_plain``)."""
        iid = it.item_id
        if type(iid) is not int or not -I64 <= iid < I64:
            iid = _int(iid, f"items[{j}].item_id")
        if iid in shown:
            return (iid, b"", 0, b"", (), b"", b"", None, None)  # the caller raises: shown twice
        pos = it.position
        if pos is not None and not (type(pos) is int and 0 <= pos < SMALL):
            _int(pos, f"items[{j}].position", -I32, I32)
        slots = self.item
        entries = []
        fids: dict[str, Entry] = {}
        for name, v in it.sparse.items():
            s = slots.get(name)
            if s is None:
                raise self._slot_error(name, "item", _path(j, "sparse"))
            got = s.entry(v, j)
            entries.append(got[1])
            if s.crossed:
                fids[name] = got
        srcs = tuple((fids.get(c.a), fids.get(c.b)) for c in self.item_crosses)
        n, plain = len(entries), b"".join(entries)
        pre = long_bytes(n) + plain if n else b""
        xsrc = None
        if self._xfast is not None:
            xsrc = srcs[0][1] if self._xfast[1] else srcs[0][0]
        pre_x = pre if xsrc is None else long_bytes(n + 1) + plain
        e = (iid, long_bytes(iid), n, plain, srcs, pre, pre_x, xsrc, None if xsrc is None else xsrc[1])
        if k is not None and type(it.item_id) is int and _plain(it.sparse):
            _put(self.items, k, e, self.limit)
        return e

    def _item_dense(self, d: Any, j: int, k: bytes | None) -> bytes:
        """An item's dense map, not in the cache, after the end of its sparse map: checked, encoded,
        and cached under ``k`` if its values are plain."""
        got = b"\x00" + self._dense(d, self.item_dense, j)
        if k is not None and _plain(d):
            _put(self.item_denses, k, got, self.limit)
        return got

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
    def _user_sparse(self, raw: Any) -> tuple[bytes, dict[str, Entry]]:
        """The user's sparse map and the entries of its cross sources, cached like an item's
        (a user's values change far less often than they are logged)."""
        k = _key(raw)
        got = self.users.get(k)
        if got is None:
            fids: dict[str, Entry] = {}
            got = (self._user_sparse_checked(raw, fids), fids)
            if k is not None and _plain(raw):
                _put(self.users, k, got, self.limit)
        return got

    def _user_miss(self, raw: Any, j: int, k: None) -> tuple[bytes, dict[str, Entry]]:
        fids: dict[str, Entry] = {}
        return self._user_sparse_checked(raw, fids), fids

    def _user_dense_miss(self, raw: Any, j: int, k: None) -> bytes:
        return self._dense(raw, self.user_dense, -1)

    def _user_sparse_checked(self, raw: Any, fids: dict[str, Entry]) -> bytes:
        """The given slots, then the user-side crosses, every value checked (``_Slot.entry``);
        ``fids`` collects the entries of cross sources."""
        entries = []
        slots = self.user
        for name, v in raw.items():
            s = slots.get(name)
            if s is None:
                raise self._slot_error(name, "user", "user")
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

    def _user_dense(self, raw: Any) -> bytes:
        """The user's dense map, cached like an item's: the values (counts, rates) recur across users."""
        k = _key(raw)
        got = self.user_denses.get(k)
        if got is None:
            got = self._dense(raw, self.user_dense, -1)
            if k is not None and _plain(raw):
                _put(self.user_denses, k, got, self.limit)
        return got

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


def _key(x: Any) -> bytes | None:
    """The cache key of raw values, or None: ``marshal`` (version 2: no back-references, so equal
    values give equal bytes) tags each value with its exact type, so ``1``, ``1.0`` and ``True``,
    or a list and a tuple, never share a key, and mutating a dict changes its key."""
    try:
        return dumps(x, 2)
    except ValueError:  # a numpy int, a Mapping that is not a dict ...: not cached
        return None


def _plain(x: Any) -> bool:
    """Only dicts, ints, strings, floats, lists and tuples of them: what may be cached under ``_key``.

    marshal writes anything with the buffer protocol (a numpy int too) as bytes, so such a value
    could share a key with a bytes value the checks refuse; a value like that is encoded, never cached."""
    t = type(x)
    if t is int or t is str or t is float:
        return True
    if t is list or t is tuple:
        return all(_plain(y) for y in x)
    if t is dict:
        return all(type(k) is str and _plain(v) for k, v in x.items())
    return False


def _put(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Store in a bounded cache: when full it is emptied (the hot values come back at once)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
