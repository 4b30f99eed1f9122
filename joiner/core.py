"""The join as a per-request state machine, engine-agnostic (no I/O, no Kafka, no Flink).

One ``RequestState`` per ``request_id`` holds the feature log (once it came), the actions that
came before it, the positive actions seen per item (deduplicated by ``(item_id, action)``) and
what was already emitted. Every decision is made from EVENT TIMES and the watermark, never
from arrival order, so any interleaving of the same events within the allowed lateness gives
the same examples (the embedded runner and the Flink job therefore agree after dedup by id).

How a runtime drives it
-----------------------
::

    joiner = Joiner(cfg, spec)                # joiner.config.JoinerConfig, schemas.spec.FeatureSpec
    step = joiner.on_features(state, feature_log_record, watermark)
    step = joiner.on_action(state, action_log_record, watermark)
    step = joiner.on_timer(state, watermark)  # when the watermark reached step.timer

* ``state`` is the key's current ``RequestState`` or ``None`` (no state yet). Calls mutate and
  may return the same object: treat the state you passed in as consumed, keep ``step.state``.
* ``step.state`` is the new state, or ``None``: delete the key.
* ``step.examples``: TrainingExample records (dicts matching TrainingExample.avsc) to produce,
  or whatever the ``writer`` passed to ``Joiner(cfg, spec, writer)`` returns (``joiner.splice``
  returns the encoded bytes of the same records).
* ``step.dead_letters``: ``DeadLetterOut(reason, detail, record_name, record)``; the runtime
  turns each into a DeadLetter record (payload = the record re-encoded with its schema, key =
  request_id, source topic, wall-clock ts_ms).
* ``step.changed`` is False when the state and its timer did not change (e.g. an impression
  of a known request): the runtime may skip writing it back. ``joiner.is_noop_action(state,
  rec)`` says so before the call, for a runtime that knows the key's timer is not due.
* ``step.negatives_dropped`` / ``negatives_kept`` / ``positives`` / ``late``: counts (metrics).
* ``step.timer``: the next EVENT TIME (ms) at which ``on_timer`` must be called for this key
  (when ``watermark >= step.timer``), or ``None`` if the key needs no timer. One timer per key:
  Flink registers it with ``ctx.timer_service().register_event_time_timer(step.timer)``; old
  registrations may still fire, which is harmless (``on_timer`` only does what is due and
  returns the same ``timer`` again). The embedded runner keeps one timer index entry per key.
* ``watermark`` is the runtime's current event-time watermark: ``max event time seen -
  allowed_lateness_ms - 1`` (exactly Flink's ``for_bounded_out_of_orderness(allowed_lateness)``),
  or ``WATERMARK_MIN`` before any event. A timer at ``t`` is due when ``watermark >= t``
  (Flink's rule), so an event with ``ts >= watermark + 1`` is never late.
* Validate records first with ``joiner.validate.Validator`` (the feature spec's rules; missing
  or empty ``request_id`` -> ``missing_field``, unknown slots ...); decode errors are the
  runtime's (``schemas.codec``).
* State to and from bytes: ``state.to_bytes()`` / ``RequestState.from_bytes(b)`` (compact:
  the feature log is kept Avro-encoded; protocol versioned by the first byte). Flink keeps the
  bytes in a keyed ValueState (Types.PICKLED_BYTE_ARRAY() or PRIMITIVE_ARRAY(BYTE())). A store
  that can write the feature log once and the rest at each change uses ``state.to_parts()`` /
  ``RequestState.from_parts(small, feature_part)`` instead (``joiner.store``).
* Writers: ``writer.window(...)`` returns a closing window's examples (one call per request, so
  a compiled writer does them all at once), ``writer.example(...)`` a single (late) one.

Rules (DESIGN.md "Join semantics", notes/joiner_semantics.md)
-------------------------------------------------------------
With ``f`` = feature log time, ``T = f + window_ms`` (window close), ``E = f + ttl_ms``:

* Window example per shown item, emitted when ``watermark >= T``: labels = every label of the
  feature spec (``actions.labels``) -> 0/1, counting actions with ``ts <= T``; duplicates count
  once; any other action (``actions.ignored``, like ``impression``) gives no label.
  Items with no positive label are negatives, kept iff ``keep_hash(seed, request_id, item_id)
  < negative_keep_rate`` (``sample_rate = r``); positives have ``sample_rate = 1.0``.
  ``join_delay_ms = window_ms``; ``kind = "window"``.
* A positive action with ``T < ts <= E`` is a LATE positive: one example per ``(item, action)``
  (``kind = "late-<action>"``, ``late = True``, labels ``{action: 1}``, ``join_delay_ms = ts -
  f`` using the smallest such ts), emitted when ``watermark >= ts``, and not at all if the same
  ``(item, action)`` already counted in the window example. A positive with ``ts <= T`` that
  arrives after the window example was emitted (later than the allowed lateness) is treated
  the same way (late example, emitted at once) unless the window already counted it.
* Actions that come before their feature log wait in the state; if none came by
  ``watermark >= ts + action_wait_ms`` they are dead letters ``no_features``.
* At ``watermark >= E`` the feature log expires: the state shrinks to a tombstone (``f`` only)
  kept until ``E + tombstone_ms``. An action with ``ts > E``, or one meeting a tombstone, is a
  dead letter ``expired``; a feature log arriving when ``watermark >= E`` is ``expired`` too.
  After the tombstone is gone, an action finds no state and waits (-> ``no_features``).
* An action for an item the feature log did not show: dead letter ``unknown_item``. A second
  feature log for the same request with another ts or other items: dead letter
  ``conflicting_features`` (one with the same ts and items is a duplicate and ignored).
* ``example_id = example_id(request_id, item_id, kind)`` (blake2b-128 hex): consumers dedup.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fastavro

from joiner.config import JoinerConfig
from schemas.codec import default_codec
from schemas.spec import FeatureSpec

WATERMARK_MIN = -(1 << 63)
WATERMARK_MAX = (1 << 63) - 1  # end of input: every timer is due (Flink's MAX_WATERMARK)
_STATE_V1 = b"\x01"  # still read: the feature log decoded at once
_STATE_V2 = b"\x02"  # + the item ids, so that reading a state back decodes no Avro
_STATE_V3, _STATE_V3_F = b"\x03\x00", b"\x03\x01"  # to_parts: without / with a feature part
_U64 = float(1 << 64)


def example_id(request_id: str, item_id: int, kind: str) -> str:
    """Deterministic id of an example; the same in every runtime and every rerun."""
    return hashlib.blake2b(f"{request_id}\x1f{item_id}\x1f{kind}".encode(), digest_size=16).hexdigest()


def keep_hash(seed: int, request_id: str, item_id: int) -> float:
    """Uniform in [0, 1), decided by (seed, request_id, item_id) only: reruns sample the same.

    (``DictWriter.window`` computes the same value incrementally, ``joiner.splice`` in compiled
    code; keep them in step.)"""
    d = hashlib.blake2b(f"{seed}\x1f{request_id}\x1f{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "little") / _U64


def id_record(request_id: str, ts_ms: int, item_ids: list[int]) -> dict[str, Any]:
    """A feature log reduced to what the join rules read (ids and time): states read back, the
    embedded runner's fresh states (their bytes are spliced) and reference joins keep this
    instead of the whole record. ``RequestState.record()`` decodes the whole one if needed."""
    return {"request_id": request_id, "ts_ms": ts_ms, "item_ids": item_ids}


def shown_ids(rec: dict[str, Any]) -> list[int]:
    """The shown item ids, in order, of a feature log: whole or reduced (``id_record``)."""
    ids = rec.get("item_ids")
    return ids if ids is not None else [it["item_id"] for it in rec["items"]]


def check_features(rec: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) if the feature log cannot be joined, else None."""
    if not rec.get("request_id"):
        return "missing_field", "FeatureLog.request_id is empty"
    if not rec.get("items") and not rec.get("item_ids"):
        return "missing_field", "FeatureLog.items is empty"
    ids = shown_ids(rec)
    if len(set(ids)) != len(ids):  # two examples would share one id
        twice = next(i for i, n in Counter(ids).items() if n > 1)
        return "duplicate_item", f"FeatureLog.items shows item_id {twice} more than once"
    return None


def check_action(rec: dict[str, Any]) -> tuple[str, str] | None:
    if not rec.get("request_id"):
        return "missing_field", "ActionLog.request_id is empty"
    if not rec.get("action"):
        return "missing_field", "ActionLog.action is empty"
    return None


@dataclass(slots=True)
class DeadLetterOut:
    reason: str
    detail: str
    record_name: str  # "ActionLog" | "FeatureLog"
    record: dict[str, Any]


@dataclass(slots=True)
class Step:
    state: RequestState | None
    examples: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    timer: int | None = None
    negatives_dropped: int = 0  # metrics: negatives not kept by sampling in this step
    negatives_kept: int = 0  # metrics: window examples that are sampled negatives
    positives: int = 0  # metrics: window examples with a positive label
    late: int = 0  # metrics: late examples
    changed: bool = True  # False: state and timer are exactly as before (nothing to save)


class RequestState:
    """Everything the join keeps for one request (see the module docstring)."""

    __slots__ = ("request_id", "features", "ts", "pending", "win", "late", "late_done",
                 "window_done", "expired", "_items", "fbytes", "_splice")

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.features: dict[str, Any] | None = None  # the FeatureLog record
        self.ts: int | None = None  # feature log ts_ms (kept in the tombstone)
        self.pending: list[tuple[int, str, int, float | None]] = []  # actions before features
        self.win: set[tuple[int, str]] = set()  # positives with ts <= T
        self.late: dict[tuple[int, str], int] = {}  # positives with ts > T -> smallest ts, not emitted yet
        self.late_done: set[tuple[int, str]] = set()
        self.window_done = False
        self.expired = False  # tombstone: features dropped after the TTL
        self._items: dict[int, dict[str, Any]] | None = None
        # Avro body of ``features`` (current FeatureLog schema) if known: saves re-encoding it.
        # A runtime that has the consumed message may set it (bytes after the 10-byte header).
        self.fbytes: bytes | None = None
        self._splice: Any = None  # a writer's cache of byte spans of fbytes (never serialized)

    # ---- serialization --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole state, self-contained (a Flink ValueState keeps this)."""
        feats, ids = (self._avro(), list(self.items())) if self.features is not None else (b"", None)
        body = (self.request_id, feats, ids, self.ts, self.pending, self.win, self.late, self.late_done,
                self.window_done, self.expired)
        return _STATE_V2 + pickle.dumps(body, protocol=5)

    def to_parts(self, features: bool = True) -> tuple[bytes, bytes | None]:
        """(mutable part, feature part or None): for a store that writes the feature part once.

        The feature log (~all of a state's bytes) never changes once joined, while the rest
        changes two or three times (window closed, late positives, expiry); saving them apart
        makes those later writes tiny. ``from_parts`` reads them back; ``parts_need_features``
        says if the mutable part goes with a feature part (``features=False``: one already
        saved, don't build it again)."""
        has = self.features is not None
        small = (_STATE_V3_F if has else _STATE_V3) + pickle.dumps(
            (self.request_id, self.ts, self.pending, self.win, self.late, self.late_done, self.window_done,
             self.expired), protocol=5)
        return small, pickle.dumps((list(self.items()), self._avro()), protocol=5) if has and features else None

    @staticmethod
    def parts_need_features(small: bytes) -> bool:
        """Does the mutable part ``small`` (from ``to_parts``) go with a feature part?"""
        return small[:2] == _STATE_V3_F

    def _avro(self) -> bytes:
        if self.fbytes is None:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, _FEATURE_SCHEMA, self.features)
            self.fbytes = buf.getvalue()
        return self.fbytes

    @classmethod
    def from_parts(cls, small: bytes, feature_part: bytes | None) -> RequestState:
        if small[:1] != _STATE_V3[:1]:
            return cls.from_bytes(small)  # an older, self-contained state
        rid, ts, pending, win, late, late_done, window_done, expired = pickle.loads(small[2:])
        if small[:2] == _STATE_V3_F:
            if feature_part is None:
                raise ValueError(f"join state of {rid!r} lost its feature part")
            ids, feats = pickle.loads(feature_part)
        else:
            ids = feats = None
        return cls._build(rid, feats, ids, ts, pending, win, late, late_done, window_done, expired)

    @classmethod
    def from_bytes(cls, data: bytes) -> RequestState:
        """The state back, without decoding its feature log: the join needs only the item ids
        (saved beside the Avro body), and most states are read for an impression that changes
        nothing. ``record()`` decodes the feature log when an example needs more."""
        version = data[:1]
        if version == _STATE_V2:
            (rid, feats, ids, ts, pending, win, late, late_done, window_done, expired) = pickle.loads(data[1:])
        elif version == _STATE_V1:
            (rid, feats, ts, pending, win, late, late_done, window_done, expired) = pickle.loads(data[1:])
            ids = None
        else:
            raise ValueError(f"unknown join state version {version!r}")
        return cls._build(rid, feats, ids, ts, pending, win, late, late_done, window_done, expired)

    @classmethod
    def _build(cls, rid: str, feats: bytes | None, ids: list[int] | None, ts: int | None, pending: list,
               win: set, late: dict, late_done: set, window_done: bool, expired: bool) -> RequestState:
        s = cls(rid)
        if feats:
            s.fbytes = feats
            if ids is None:
                s.features = fastavro.schemaless_reader(io.BytesIO(feats), _FEATURE_SCHEMA, None)
            else:
                s.features = id_record(rid, ts, ids)  # ``record()`` decodes the rest if needed
        s.ts, s.pending, s.win, s.late, s.late_done = ts, pending, win, late, late_done
        s.window_done, s.expired = window_done, expired
        return s

    def record(self) -> dict[str, Any]:
        """The whole FeatureLog record (decoded from ``fbytes`` once if only its ids are kept)."""
        f = self.features
        if f is not None and "item_ids" in f and self.fbytes is not None:
            self.features = fastavro.schemaless_reader(io.BytesIO(self.fbytes), _FEATURE_SCHEMA, None)
            self._items = None
        return self.features

    def items(self) -> dict[int, dict[str, Any] | None]:
        """Shown item id -> its record (None while only the ids are kept: ``record()`` first)."""
        if self._items is None:
            f = self.features
            if not f:
                self._items = {}
            elif "item_ids" in f:
                self._items = dict.fromkeys(f["item_ids"])
            else:
                self._items = {it["item_id"]: it for it in f["items"]}
        return self._items

    def __repr__(self) -> str:
        return (f"RequestState({self.request_id!r}, ts={self.ts}, features={self.features is not None}, "
                f"pending={len(self.pending)}, win={len(self.win)}, late={len(self.late)}, "
                f"window_done={self.window_done}, expired={self.expired})")


_FEATURE_SCHEMA = fastavro.parse_schema(json.loads(default_codec().current["FeatureLog"].text))


class DictWriter:
    """Builds each example as a TrainingExample dict (the default; the Flink job uses it).

    A runtime may pass its own writer to ``Joiner`` (e.g. ``joiner.splice.SpliceWriter``, which
    returns the encoded bytes of the very same record).
    """

    def window(self, s: RequestState, positives: dict[int, dict[str, int]], zero: dict[str, int], rate: float,
               seed: int, window_ms: int) -> tuple[list[Any], int]:
        """The window examples of every shown item, in feature-log order: ``positives`` (item ->
        labels) always, negatives (labels ``zero``) iff ``keep_hash(seed, request_id, item) <
        rate``. Returns (examples, negatives kept). A writer may do it all in one call."""
        out = []
        # keep_hash(seed, request_id, item) for every item: hash the common prefix once
        base = hashlib.blake2b(f"{seed}\x1f{s.request_id}\x1f".encode(), digest_size=8)
        kept = 0
        for iid in shown_ids(s.features):
            labels = positives.get(iid)
            if labels is None:
                if rate < 1.0:
                    h = base.copy()
                    h.update(str(iid).encode())
                    if int.from_bytes(h.digest(), "little") / _U64 >= rate:
                        continue
                kept += 1
                out.append(self.example(s, iid, "window", dict(zero), rate, False, window_ms))
            else:
                out.append(self.example(s, iid, "window", labels, 1.0, False, window_ms))
        return out, kept

    def example(self, s: RequestState, item_id: int, kind: str, labels: dict[str, int], sample_rate: float,
                late: bool, join_delay_ms: int) -> Any:
        feats = s.record()
        item = s.items()[item_id]
        sparse = dict(feats["user_sparse"])
        for slot, ids in item["sparse"].items():
            sparse[slot] = sparse[slot] + ids if slot in sparse else ids
        dense = dict(feats["user_dense"])
        dense.update(item["dense"])
        rid = s.request_id
        return {
            "example_id": example_id(rid, item_id, kind),
            "request_id": rid,
            "item_id": item_id,
            "user_id": feats["user_id"],
            "ts_ms": s.ts,
            "sparse": sparse,
            "dense": dense,
            "labels": labels,
            "sample_rate": sample_rate,
            "late": late,
            "join_delay_ms": join_delay_ms,
            "kind": kind,
        }


class Joiner:
    """The join rules; one instance per runtime (holds only the config)."""

    def __init__(self, cfg: JoinerConfig, spec: FeatureSpec, writer: DictWriter | None = None):
        self.cfg = cfg
        self.writer = writer or DictWriter()
        self.window_ms = cfg.window_ms
        self.ttl_ms = cfg.ttl_ms
        self.tombstone_ms = cfg.tombstone_ms
        self.wait_ms = cfg.action_wait
        self.rate = float(cfg.negative_keep_rate)
        self.seed = cfg.seed
        self.ignored = frozenset(spec.actions.ignored)
        self.labels = frozenset(spec.labels)
        self.label_zero = dict.fromkeys(spec.labels, 0)

    # ---- entry points ---------------------------------------------------------------------
    def on_features(self, state: RequestState | None, rec: dict[str, Any], watermark: int) -> Step:
        rid = rec["request_id"]
        s = state if state is not None else RequestState(rid)
        step = Step(s)
        f = rec["ts_ms"]
        if s.expired:
            step.dead_letters.append(DeadLetterOut("expired", "feature log after its TTL (tombstone)",
                                                   "FeatureLog", rec))
        elif s.features is not None:
            if f != s.ts or shown_ids(rec) != list(s.items()):
                step.dead_letters.append(DeadLetterOut(
                    "conflicting_features", "a different feature log for this request_id was joined",
                    "FeatureLog", rec))
        elif watermark >= f + self.ttl_ms:
            step.dead_letters.append(DeadLetterOut("expired", "feature log came after its TTL",
                                                   "FeatureLog", rec))
            s.ts, s.expired = f, True
            for p in s.pending:
                step.dead_letters.append(self._dead_action("expired", "feature log expired", rid, p))
            s.pending = []
        else:
            s.features, s.ts, s._items, s._splice = rec, f, None, None
            pending, s.pending = s.pending, []
            for p in pending:
                self._classify(s, p, step)
        return self._advance(s, watermark, step)

    def on_action(self, state: RequestState | None, rec: dict[str, Any], watermark: int) -> Step:
        s = state if state is not None else RequestState(rec["request_id"])
        step = Step(s)
        p = (rec["item_id"], rec["action"], rec["ts_ms"], rec.get("value"))
        if s.expired:
            step.dead_letters.append(self._dead_action("expired", "feature log expired (tombstone)",
                                                       s.request_id, p))
        elif s.features is None:
            s.pending.append(p)
        elif p[1] in self.ignored and state is not None and p[0] in s.items() and p[2] <= s.ts + self.ttl_ms:
            step.changed = False  # a valid impression: no label, nothing to remember
            step.timer = self.next_timer(s)
            if step.timer is None or step.timer > watermark:
                return step
            step.changed = True
        else:
            self._classify(s, p, step)
        return self._advance(s, watermark, step)

    def is_noop_action(self, state: RequestState | None, rec: dict[str, Any]) -> bool:
        """True if ``on_action`` would change nothing and emit nothing for this action, provided
        the key's timer is not due: a valid impression of a known request. A runtime that knows
        its timer is later than the watermark may then skip ``on_action`` (the hot path)."""
        return (state is not None and state.features is not None and rec["action"] in self.ignored
                and rec["item_id"] in state.items() and rec["ts_ms"] <= state.ts + self.ttl_ms)

    def on_timer(self, state: RequestState | None, watermark: int) -> Step:
        if state is None:
            return Step(None)
        return self._advance(state, watermark, Step(state))

    # ---- rules ----------------------------------------------------------------------------
    def _classify(self, s: RequestState, p: tuple[int, str, int, float | None], step: Step) -> None:
        """Place one action of a request whose feature log is known."""
        item, action, ts, _ = p
        if item not in s.items():
            step.dead_letters.append(self._dead_action(
                "unknown_item", f"item {item} not shown in request", s.request_id, p))
            return
        if ts > s.ts + self.ttl_ms:
            step.dead_letters.append(self._dead_action("expired", "action after the feature log's TTL",
                                                       s.request_id, p))
            return
        if action not in self.labels:
            return  # ignored (validation dropped or dead-lettered unknown actions before)
        key = (item, action)
        if key in s.win or key in s.late_done:
            return  # duplicate
        if ts <= s.ts + self.window_ms and not s.window_done:
            s.win.add(key)
        else:
            old = s.late.get(key)
            if old is None or ts < old:
                s.late[key] = ts

    def _advance(self, s: RequestState, wm: int, step: Step) -> Step:
        """Emit whatever is due at watermark ``wm``; set step.state / step.timer."""
        if s.features is not None:
            f = s.ts
            close = f + self.window_ms
            if not s.window_done and wm >= close:
                self._emit_window(s, step)
                s.window_done = True
            if s.late and s.window_done:
                for key in [k for k, ts in s.late.items() if ts <= wm]:
                    ts = s.late.pop(key)
                    if key not in s.win:
                        self._emit_late(s, key, ts, step)
                    s.late_done.add(key)
            if wm >= f + self.ttl_ms:
                s.features, s._items, s.fbytes, s._splice, s.expired = None, None, None, None, True
                s.win, s.late, s.late_done = set(), {}, set()
        if s.expired:
            if wm >= s.ts + self.ttl_ms + self.tombstone_ms:
                step.state = None
                return step
        elif s.features is None and s.pending:
            keep = []
            for p in s.pending:
                if wm >= p[2] + self.wait_ms:
                    step.dead_letters.append(self._dead_action(
                        "no_features", "no feature log came within action_wait_ms", s.request_id, p))
                else:
                    keep.append(p)
            s.pending = keep
            if not keep:
                step.state = None
                return step
        step.timer = self.next_timer(s)
        return step

    def next_timer(self, s: RequestState) -> int | None:
        if s.expired:
            return s.ts + self.ttl_ms + self.tombstone_ms
        if s.features is not None:
            t = s.ts + self.ttl_ms
            if not s.window_done:
                t = min(t, s.ts + self.window_ms)
            if s.late:
                t = min(t, max(s.ts + self.window_ms, min(s.late.values())))
            return t
        if s.pending:
            return min(p[2] for p in s.pending) + self.wait_ms
        return None

    # ---- outputs ----------------------------------------------------------------------------
    def _emit_window(self, s: RequestState, step: Step) -> None:
        positives: dict[int, list[str]] = {}
        for item, action in s.win:
            positives.setdefault(item, []).append(action)
        zero = self.label_zero
        labels: dict[int, dict[str, int]] = {}
        for item, acts in positives.items():
            lab = labels[item] = dict(zero)
            for a in sorted(acts):
                lab[a] = 1
        out, kept = self.writer.window(s, labels, zero, self.rate, self.seed, self.window_ms)
        step.examples.extend(out)
        step.negatives_kept += kept
        step.positives += len(out) - kept
        step.negatives_dropped += len(shown_ids(s.features)) - len(out)

    def _emit_late(self, s: RequestState, key: tuple[int, str], ts: int, step: Step) -> None:
        item, action = key
        step.late += 1
        step.examples.append(self.writer.example(s, item, f"late-{action}", {action: 1}, 1.0, True, ts - s.ts))

    @staticmethod
    def _dead_action(reason: str, detail: str, rid: str, p: tuple[int, str, int, float | None]) -> DeadLetterOut:
        item, action, ts, value = p
        rec = {"request_id": rid, "item_id": item, "action": action, "ts_ms": ts, "value": value}
        return DeadLetterOut(reason, detail, "ActionLog", rec)
