"""The joiner's validation of input against the feature spec (every runtime uses it).

A FeatureLog joins only if its shape follows the spec: a request id and shown items; in
``user_sparse`` only the spec's user-side slots (and crosses), in each item's ``sparse`` only
item-side ones; every FID carrying its slot's number; dense features on their side with finite
values. An ActionLog needs a request id and an action the spec knows (a label or an ignored one).

What breaks it is a dead letter whose reason says what (``missing_field``, ``wrong_side``,
``bad_fid``, ``bad_value``, ``unknown_slot``, ``unknown_dense``, ``unknown_action``) and whose
detail names the field. A slot, dense feature or action the spec does not know is handled as the
spec's ``unknown`` says: ``drop`` (the feature is removed, the action ignored; both counted) or
``dead_letter``. A retired slot is always dropped (the spec knows it; old producers may still
send it). ``streamrec.applog`` builds exactly what passes here (tests check it).

``Validator`` works on decoded records (the Flink job, the in-memory join, and the embedded
runtime's slow path). ``SpanCheck`` is the embedded runtime's fast path: the same rules on the
Avro bytes (spans from ``joiner.splice``), compiled; anything it does not pass goes to
``Validator`` for the verdict and its reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from joiner.core import check_action, check_features
from joiner.splice import (
    _NO_KEYS,
    H_END,
    H_N,
    H_OVERLAP,
    H_RID0,
    H_RID1,
    H_TS,
    H_UD0,
    H_UD1,
    H_US0,
    H_US1,
    H_USER,
    ITEM_FIELDS,
    MAX_ITEMS,
    _fits,
    _map_keys,
    _varint,
)
from schemas.fid import HASH_BITS
from schemas.spec import FeatureSpec

F32_MAX = 3.4028234663852886e38
DETAIL_MAX = 2000  # a dead letter's detail lists the problems up to this length


@dataclass(slots=True)
class Verdict:
    """``record``: what to join (the input, or a copy without dropped features), None if not
    joinable; ``reason``/``detail``: the dead letter if any; ``dropped``: names removed."""

    record: dict[str, Any] | None
    reason: str = ""
    detail: str = ""
    dropped: list[str] = field(default_factory=list)


class _Side:
    """What one side's maps may hold: sparse name -> number, retired names, dense names."""

    def __init__(self, spec: FeatureSpec, side: str):
        self.side = side
        self.sparse = spec.sparse_on(side)
        self.retired = frozenset(spec.sparse_on(side, retired=True))
        self.dense = frozenset(spec.dense_on(side))


class Validator:
    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.drop_unknown = spec.unknown == "drop"
        self.user = _Side(spec, "user")
        self.item = _Side(spec, "item")
        self.actions = spec.known_actions

    # ---- actions ----------------------------------------------------------------------------
    def action(self, rec: dict[str, Any]) -> Verdict:
        bad = check_action(rec)
        if bad is not None:
            return Verdict(None, *bad)
        a = rec["action"]
        if a in self.actions:
            return Verdict(rec)
        if self.drop_unknown:
            return Verdict(None, dropped=[a])
        return Verdict(None, "unknown_action", f"ActionLog.action: {a!r} is neither a label nor ignored in the "
                                               f"feature spec ({sorted(self.actions)})")

    # ---- feature logs -----------------------------------------------------------------------
    def features(self, rec: dict[str, Any]) -> Verdict:
        bad = check_features(rec)
        if bad is not None:
            return Verdict(None, *bad)
        problems: list[tuple[str, str]] = []  # (reason, "field: message")
        drops: list[tuple[dict, str, str]] = []  # (map, key, name) to remove
        self._sparse(rec["user_sparse"], "user_sparse", self.user, self.item, problems, drops)
        self._dense(rec["user_dense"], "user_dense", self.user, self.item, problems, drops)
        for j, it in enumerate(rec["items"]):
            self._sparse(it["sparse"], f"items[{j}].sparse", self.item, self.user, problems, drops)
            self._dense(it["dense"], f"items[{j}].dense", self.item, self.user, problems, drops)
        if problems:
            detail = "; ".join(p for _, p in problems)
            if len(detail) > DETAIL_MAX:
                detail = detail[:DETAIL_MAX] + " ..."
            return Verdict(None, problems[0][0], detail)
        if not drops:
            return Verdict(rec)
        return Verdict(_without(rec, drops), dropped=[name for _, _, name in drops])

    def _unknown(self, reason: str, msg: str, m: dict, key: str, problems: list, drops: list) -> None:
        if self.drop_unknown:
            drops.append((m, key, key))
        else:
            problems.append((reason, msg))

    def _sparse(self, m: dict[str, list[int]], path: str, side: _Side, other: _Side, problems: list,
                drops: list) -> None:
        for name, fids in m.items():
            number = side.sparse.get(name)
            if number is None:
                if name in side.retired:
                    drops.append((m, name, name))
                elif name in other.sparse or name in other.retired:
                    problems.append(("wrong_side", f"{path}.{name}: {name!r} is {_an(other.side)}-side slot"))
                else:
                    self._unknown("unknown_slot", f"{path}.{name}: unknown slot {name!r} (the spec's "
                                  f"{side.side} slots: {sorted(side.sparse)})", m, name, problems, drops)
                continue
            for k, f in enumerate(fids):
                if f >> HASH_BITS != number:
                    problems.append(("bad_fid", f"{path}.{name}[{k}]: FID {f} carries slot number "
                                                f"{f >> HASH_BITS}, not {name!r}'s {number}"))
                    break

    def _dense(self, m: dict[str, float], path: str, side: _Side, other: _Side, problems: list, drops: list) -> None:
        for name, v in m.items():
            if name not in side.dense:
                if name in other.dense:
                    problems.append(("wrong_side", f"{path}.{name}: {name!r} is {_an(other.side)}-side dense feature"))
                else:
                    self._unknown("unknown_dense", f"{path}.{name}: unknown dense feature {name!r} (the spec's "
                                  f"{side.side} ones: {sorted(side.dense)})", m, name, problems, drops)
            elif not math.isfinite(v) or abs(v) > F32_MAX:
                problems.append(("bad_value", f"{path}.{name}: {v!r} is not a finite float"))


def _an(side: str) -> str:
    return f"an {side}" if side == "item" else f"a {side}"


def _without(rec: dict[str, Any], drops: list[tuple[dict, str, str]]) -> dict[str, Any]:
    """A copy of the feature log without the dropped keys (the maps that lose one are copied)."""
    gone: dict[int, set[str]] = {}
    for m, key, _ in drops:
        gone.setdefault(id(m), set()).add(key)

    def clean(m: dict) -> dict:
        keys = gone.get(id(m))
        return m if keys is None else {k: v for k, v in m.items() if k not in keys}

    out = dict(rec)
    out["user_sparse"] = clean(rec["user_sparse"])
    out["user_dense"] = clean(rec["user_dense"])
    out["items"] = [{**it, "sparse": clean(it["sparse"]), "dense": clean(it["dense"])} for it in rec["items"]]
    return out


# ---- the compiled fast path ---------------------------------------------------------------------
def _table(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Names as one blob of their UTF-8 bytes + offsets (key ``t`` is ``blob[off[t]:off[t + 1]]``)."""
    raw = [n.encode() for n in names]
    blob = np.frombuffer(b"".join(raw) or b"\x00", np.uint8).copy()
    return blob, np.cumsum([0, *map(len, raw)]).astype(np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _find(b: np.ndarray, i: int, n: int, blob: np.ndarray, off: np.ndarray) -> int:
    """Index of the key ``b[i:i + n]`` among the table's names, or -1."""
    for t in range(len(off) - 1):
        a = off[t]
        if off[t + 1] - a == n:
            same = True
            for q in range(n):
                if blob[a + q] != b[i + q]:
                    same = False
                    break
            if same:
                return t
    return -1


@numba.njit(cache=True, nogil=True)
def _block(b: np.ndarray, i: int) -> tuple[int, int]:
    """An Avro block's item count at ``b[i]`` (a negative count is followed by the block's size)."""
    count, i = _varint(b, i)
    if count < 0:
        count = -count
        _, i = _varint(b, i)
    return count, i


@numba.njit(cache=True, nogil=True)
def _sparse_ok(b: np.ndarray, s: int, e: int, blob: np.ndarray, off: np.ndarray, num: np.ndarray) -> bool:
    """Every key of the map<array<long>> blocks ``b[s:e]`` is a known slot whose FIDs carry its number."""
    i = s
    while i < e:
        count, i = _block(b, i)
        for _ in range(_fits(b, i, count)):
            klen, i = _varint(b, i)
            t = _find(b, i, _fits(b, i, klen), blob, off)
            if t < 0:
                return False
            i += klen
            want = num[t]
            while True:
                n, i = _block(b, i)
                if n == 0:
                    break
                for _ in range(_fits(b, i, n)):
                    f, i = _varint(b, i)
                    if (f >> HASH_BITS) != want:
                        return False
    return True


@numba.njit(cache=True, nogil=True)
def _dense_ok(b: np.ndarray, s: int, e: int, blob: np.ndarray, off: np.ndarray) -> bool:
    """Every key of the map<float> blocks ``b[s:e]`` is a known dense feature with a finite value."""
    i = s
    while i < e:
        count, i = _block(b, i)
        for _ in range(_fits(b, i, count)):
            klen, i = _varint(b, i)
            if _find(b, i, _fits(b, i, klen), blob, off) < 0:
                return False
            i += klen
            _fits(b, i, 4)  # bounds checked by hand, as in joiner.splice
            if (b[i + 3] & 0x7F) == 0x7F and (b[i + 2] & 0x80):  # exponent all ones: inf or nan
                return False
            i += 4
    return True


@numba.njit(cache=True, nogil=True)
def _spans_ok(b: np.ndarray, sp: np.ndarray, ub: np.ndarray, uo: np.ndarray, un: np.ndarray, db: np.ndarray,
              do: np.ndarray, ib: np.ndarray, io: np.ndarray, inum: np.ndarray, eb: np.ndarray,
              eo: np.ndarray) -> bool:
    if len(sp) < H_END or len(sp) < H_END + sp[H_N] * ITEM_FIELDS:
        return False  # not the spans of this scan
    if not _sparse_ok(b, sp[H_US0], sp[H_US1], ub, uo, un) or not _dense_ok(b, sp[H_UD0], sp[H_UD1], db, do):
        return False
    for j in range(sp[H_N]):
        k = H_END + j * ITEM_FIELDS
        if not _sparse_ok(b, sp[k + 2], sp[k + 3], ib, io, inum) or not _dense_ok(b, sp[k + 4], sp[k + 5], eb, eo):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _spec_map(b: np.ndarray, i: int, arrays: bool, blob: np.ndarray, off: np.ndarray, num: np.ndarray,
              keys: np.ndarray) -> tuple[int, int, bool]:
    """``joiner.splice._skip_map`` and the spec's rules in one walk: (blocks end, after terminator,
    ok). Not ok, and the walk stops, at a key that is not ASCII, is one of ``keys`` (an item slot
    also on the user side), or is not in the table, or at a value that breaks its rule (a FID of
    another slot, a float that is not finite): the caller then takes the validator's path."""
    nk = keys.shape[0]
    while True:
        count, j = _varint(b, i)
        if count == 0:
            return i, j, True
        i = j
        if count < 0:
            count = -count
            _, i = _varint(b, i)  # block size in bytes
        for _ in range(_fits(b, i, count)):
            klen, i = _varint(b, i)
            for q in range(_fits(b, i, klen)):
                if b[i + q] >= 0x80:
                    return i, i, False
            for r in range(nk):
                if keys[r, 1] == klen:
                    k0 = keys[r, 0]
                    same = True
                    for q in range(klen):
                        if b[k0 + q] != b[i + q]:
                            same = False
                            break
                    if same:
                        return i, i, False
            t = _find(b, i, klen, blob, off)
            if t < 0:
                return i, i, False
            i += klen
            if arrays:
                want = num[t]
                while True:
                    n, i = _varint(b, i)
                    if n == 0:
                        break
                    if n < 0:
                        n = -n
                        _, i = _varint(b, i)
                    for _ in range(_fits(b, i, n)):
                        f, i = _varint(b, i)
                        if (f >> HASH_BITS) != want:
                            return i, i, False
            else:
                _fits(b, i, 4)
                if (b[i + 3] & 0x7F) == 0x7F and (b[i + 2] & 0x80):  # exponent all ones: inf or nan
                    return i, i, False
                i += 4


@numba.njit(cache=True, nogil=True)
def _scan_spec(b: np.ndarray, out: np.ndarray, ub: np.ndarray, uo: np.ndarray, un: np.ndarray, db: np.ndarray,
               do: np.ndarray, ib: np.ndarray, io: np.ndarray, inum: np.ndarray, eb: np.ndarray,
               eo: np.ndarray) -> int:
    """``joiner.splice._scan`` and ``_spans_ok`` in one walk of the body: the number of int64s of
    spans written if the feature log is joinable as is (the very spans ``_scan`` writes), 0 if
    the validator must decide (a rule broken or unsure, a slot on both sides, a non-ASCII
    string), -1 if too many items or ``out`` is too small; IndexError if the bytes are corrupt
    (as ``_scan``; corrupt bytes after a broken rule may give 0 instead: the same path)."""
    if len(out) < H_END:
        return -1
    n, i = _varint(b, 0)
    out[H_RID0] = i
    i += _fits(b, i, n)
    out[H_RID1] = i
    out[H_USER], i = _varint(b, i)
    out[H_TS], i = _varint(b, i)
    out[H_US0] = i
    out[H_US1], i, ok = _spec_map(b, i, True, ub, uo, un, _NO_KEYS)
    if not ok:
        return 0
    out[H_UD0] = i
    out[H_UD1], i, ok = _spec_map(b, i, False, db, do, un, _NO_KEYS)
    if not ok:
        return 0
    k = H_END
    items = 0
    ukeys = _map_keys(b, out[H_US0], out[H_US1])
    while True:
        count, i = _varint(b, i)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, i = _varint(b, i)
        for _ in range(_fits(b, i, count)):
            if items >= MAX_ITEMS or k + ITEM_FIELDS > len(out):
                return -1
            out[k], i = _varint(b, i)
            out[k + 1], i = _varint(b, i)
            out[k + 2] = i
            out[k + 3], i, ok = _spec_map(b, i, True, ib, io, inum, ukeys)
            if not ok:
                return 0
            out[k + 4] = i
            out[k + 5], i, ok = _spec_map(b, i, False, eb, eo, inum, _NO_KEYS)
            if not ok:
                return 0
            k += ITEM_FIELDS
            items += 1
    n, i = _varint(b, i)  # source
    ascii = True
    for q in range(_fits(b, i, n)):
        if b[i + q] >= 0x80:
            ascii = False
    i += n
    if i != len(b):
        raise IndexError("trailing bytes")
    if not ascii:
        return 0
    out[H_N] = items
    out[H_OVERLAP] = 0
    return k


class SpanCheck:
    """The spec's rules on a FeatureLog body and its ``joiner.splice`` spans: True = joinable as is.

    False means "not sure": the caller decodes the message and asks ``Validator``, which gives
    the verdict (dead letter with reasons, or features dropped) for the rare message that needs one."""

    def __init__(self, spec: FeatureSpec):
        user, item = spec.sparse_on("user"), spec.sparse_on("item")
        ub, uo = _table(list(user))
        ib, io = _table(list(item))
        db, do = _table(spec.dense_on("user"))
        eb, eo = _table(spec.dense_on("item"))
        self._args = (ub, uo, np.array(list(user.values()) or [0], np.int64), db, do,
                      ib, io, np.array(list(item.values()) or [0], np.int64), eb, eo)

        self._buf = np.zeros(H_END + ITEM_FIELDS * 64, np.int64)

    def __call__(self, body: bytes, spans: np.ndarray) -> bool:
        try:
            return _spans_ok(body, spans, *self._args)
        except IndexError:
            return False

    def scan(self, body: bytes) -> tuple[np.ndarray, int]:
        """``SpliceWriter.scan`` and this check in one compiled walk (the engine's hot path: two
        walks were ~15% of the join's CPU): (spans, n_int64) if the body is joinable as is,
        (spans, 0) if the validator must decide; ValueError if it is not a FeatureLog body.

        The spans are in a buffer reused by the next call: copy what you keep."""
        need = H_END + ITEM_FIELDS * max(64, len(body) // 4)
        if len(self._buf) < need:
            self._buf = np.zeros(need, dtype=np.int64)
        try:
            k = _scan_spec(body, self._buf, *self._args)
        except IndexError as e:
            raise ValueError(f"not a FeatureLog body: {e}") from None
        if k < 0:
            raise ValueError("too many items")
        return self._buf, k

