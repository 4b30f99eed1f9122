"""The embedded runtime of the join, without Kafka: bytes in, bytes out, watermarks, store.

``jobs/join_runner.py`` feeds it consumed messages and produces what it returns; tests and the
benchmark drive it directly. It decodes input and validates it against the feature spec
(``joiner.validate``: bad input -> dead letters with a reason naming the field; unknown
features or actions dropped and counted if the spec says so), keeps one event-time watermark
per input partition, runs ``joiner.core`` on the state from
the ``StateStore`` (cache, then RocksDB), fires due timers, and builds the checkpoint meta
(next offsets + per-partition max event time) that the store writes with the state.

Watermark: per partition ``max event time seen``; the join's watermark is the smallest of
them over the partitions that still have data to give (a partition at end-of-data is idle and
does not hold the others back; one that has given nothing yet holds everything back), minus
``allowed_lateness_ms`` minus 1, as Flink's bounded-out-of-orderness generator does.
"""

from __future__ import annotations

import json
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from joiner.batchparse import parse_ignored
from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MAX, WATERMARK_MIN, DeadLetterOut, Joiner, Step, check_features, id_record
from joiner.fastcodec import FastCodec
from joiner.splice import H_END, H_RID0, H_RID1, H_TS, H_USER, ITEM_FIELDS, SpliceWriter
from joiner.store import StateStore
from joiner.validate import SpanCheck, Validator, Verdict
from schemas.avrobin import string_bytes
from schemas.codec import Codec, DecodeError, default_codec
from schemas.spec import FeatureSpec

OFFSETS_KEY = b"offsets"
DEAD_PAYLOAD_MAX = 64 << 10  # oversize payloads are cut to this in the dead letter
DROPPED_NAMES = 1000  # unknown feature / action names counted one by one; the rest as "<other>"


Partition = tuple[str, int]


def encode_position(offsets: dict[Partition, int], part_max: dict[Partition, int | None], watermark: int) -> bytes:
    saved: dict[str, Any] = {f"{t}\x1f{p}": (off, part_max.get((t, p))) for (t, p), off in offsets.items()}
    saved["watermark"] = watermark
    return json.dumps(saved).encode()


def decode_position(raw: bytes | None) -> tuple[dict[Partition, tuple[int, int | None]], int]:
    """``encode_position``'s bytes -> ({partition: (next offset, max event time)}, watermark)."""
    saved = json.loads(raw) if raw else {}
    watermark = saved.pop("watermark", WATERMARK_MIN)
    out = {}
    for key, (off, mx) in saved.items():
        topic, part = key.rsplit("\x1f", 1)
        out[(topic, int(part))] = (off, mx)
    return out, watermark


def contract_breach(rec: dict[str, Any], key: bytes | str | None, kafka_ts: int | None) -> tuple[str, str] | None:
    """(reason, detail) if a log breaks the producer contract: Kafka key = request_id, Kafka
    timestamp = ts_ms. Both runtimes dead-letter such a message rather than repair it: the Flink
    job keys and times its input by the Kafka key and timestamp before any Python sees a record,
    so a repair there would need a decoding shuffle in front of the join; and a producer that
    gets these wrong is worth hearing about. ``kafka_ts`` None: not known, not checked."""
    rid = rec["request_id"]
    shown = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if shown != rid:
        return "key_mismatch", f"Kafka key {shown!r} is not the request_id {rid!r}"
    if kafka_ts is not None and kafka_ts != rec["ts_ms"]:
        return "timestamp_mismatch", f"Kafka timestamp {kafka_ts} is not ts_ms {rec['ts_ms']}"
    return None


def error_detail(e: Exception) -> str:
    """An exception as a dead letter's detail: type, message and where it was raised."""
    tb = traceback.extract_tb(e.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(e).__name__}: {e} (at {where})"[:2000]


class JoinEngine:
    def __init__(self, cfg: JoinerConfig, spec: FeatureSpec, store: StateStore, features_topic: str,
                 actions_topic: str, codec: Codec | None = None, splice: bool = True):
        self.cfg = cfg
        self.validator = Validator(spec)
        self.span_check = SpanCheck(spec)
        self.store = store
        self.codec = codec or default_codec()
        self.roles = {features_topic: "FeatureLog", actions_topic: "ActionLog"}
        self.actions_topic = actions_topic
        self.fast = FastCodec(self.codec)
        # splice: examples straight from the feature log's bytes (joiner/splice.py); else dicts
        self.splice = splice
        self.writer = SpliceWriter(self.fast)
        self.core = Joiner(cfg, spec, self.writer if splice else None)
        self._feature_fp = self.fast.fingerprint("FeatureLog")
        self.lateness = cfg.allowed_lateness_ms
        self.max_bytes = cfg.max_message_bytes
        ign = [string_bytes(a) for a in spec.actions.ignored]  # ignored action types as Avro strings
        self._ign = b"".join(ign)
        self._ign_off = np.cumsum([0, *map(len, ign)], dtype=np.int64)
        self._parsed = np.empty((1, 5), np.int64)  # parse_ignored's output, reused
        # load the compiled parser now (numba's on-disk cache), not on the first batch
        parse_ignored(b"", np.zeros(1, np.int64), 0, b"", self._ign, self._ign_off, self._parsed)
        self.examples: list[tuple[bytes, bytes]] = []  # (key, TrainingExample) to produce
        self.dead: list[tuple[bytes | None, bytes]] = []  # (key, DeadLetter) to produce
        self.offsets: dict[tuple[str, int], int] = {}  # next offset to consume
        self.part_max: dict[tuple[str, int], int | None] = {}
        self.idle: set[tuple[str, int]] = set()
        self.watermark = WATERMARK_MIN
        self.counts: Counter[str] = Counter()
        self.dead_reasons: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # unknown (or retired) features and actions dropped, by name
        self._last: tuple[bytes, np.ndarray | None] | None = None  # (body, spans) of the last feature log

    # ---- partitions, offsets, restore -----------------------------------------------------
    def restore(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Load saved offsets and watermarks; return where each partition resumes (0 if new)."""
        saved, watermark = decode_position(self.store.meta(OFFSETS_KEY))
        self.watermark = max(self.watermark, watermark)  # never moves back
        for tp in partitions:
            self.offsets[tp], self.part_max[tp] = saved.get(tp, (0, None))
        self._update_watermark()
        return dict(self.offsets)

    def position(self) -> bytes:
        """Where the join is in its input: next offsets, max event time per partition, watermark."""
        return encode_position(self.offsets, self.part_max, self.watermark)

    def checkpoint_meta(self) -> dict[bytes, bytes]:
        return {OFFSETS_KEY: self.position()}

    def checkpoint(self) -> int:
        """Save state + offsets atomically. Call only after everything returned so far was produced."""
        return self.store.checkpoint(self.checkpoint_meta())

    def mark_eof(self, topic: str, partition: int) -> None:
        self.idle.add((topic, partition))

    # ---- input ----------------------------------------------------------------------------
    def process_batch(self, msgs: list[Any], on_error: Any) -> int:
        """``process`` every message of a consumed batch; return how many had no error.

        ``msgs``: objects with the confluent-kafka ``Message`` methods (``error()``, ``topic()``,
        ``partition()``, ``offset()``, ``key()``, ``value()``); ``on_error(msg)`` gets those whose
        ``error()`` is not None (end of partition, ...). Why a batch call: most input is
        impressions of requests whose state is cached and whose timer is not due, which change
        nothing (``Joiner.is_noop_action``). The batch's impressions are parsed in one compiled
        call (``joiner.batchparse``) and recognised here without the per-event layers of
        ``process`` (same bookkeeping: offsets, partition max time, counts, cache recency).
        Everything else goes through ``process``, in order.
        """
        if not msgs:
            return 0
        vals = [m.value() for m in msgs]
        lens = np.fromiter([-1 if v is None else len(v) for v in vals], np.int64, len(vals))
        blob = b"".join([v for v in vals if v is not None])
        if len(self._parsed) < len(vals):
            self._parsed = np.empty((max(len(vals), 2 * len(self._parsed)), 5), np.int64)
        parse_ignored(blob, lens, self.max_bytes, self.fast.header("ActionLog"), self._ign, self._ign_off,
                      self._parsed)
        oks, r0s, r1s, its, tss = self._parsed[:len(vals)].T.tolist()  # five flat lists: no list per message
        actions = self.actions_topic
        offsets, idle, part_max = self.offsets, self.idle, self.part_max
        store = self.store
        cache = store.cache
        to_end = cache.move_to_end
        ttl = self.core.ttl_ms
        wm = self.watermark
        process = self.process
        got = fast = 0
        for m, value, ok, r0, r1, item, ts in zip(msgs, vals, oks, r0s, r1s, its, tss):  # noqa: B905 (same lengths)
            if m.error() is not None:
                on_error(m)
                continue
            got += 1
            topic = m.topic()
            kind, kafka_ts = m.timestamp()
            if not kind:
                kafka_ts = None  # no timestamp (not from Kafka): not checked
            if ok and topic == actions and (kafka_ts == ts or kafka_ts is None) and (key := m.key()) == blob[r0:r1]:
                try:
                    rid = key.decode()  # the same bytes as the record's request_id
                except UnicodeDecodeError:
                    rid = None  # ``process`` names the reason
                entry = cache.get(rid)
                if entry is not None and entry.timer is not None and entry.timer > wm:
                    st = entry.state
                    if st is not None and st.features is not None and ts <= st.ts + ttl:
                        items = st._items
                        if items is None:
                            items = st.items()
                        if item in items:  # a valid impression of a known request: no-op
                            tp = (topic, m.partition())
                            offsets[tp] = m.offset() + 1
                            if idle:
                                idle.discard(tp)
                            pm = part_max.get(tp)
                            if pm is None or ts > pm:
                                part_max[tp] = ts
                            to_end(rid)
                            fast += 1
                            continue
            process(topic, m.partition(), m.offset(), m.key(), value, kafka_ts)
        if fast:
            c = self.counts
            c["events"] += fast
            c["actions"] += fast
            store.hits += fast
        return got

    def process(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                kafka_ts: int | None = None) -> None:
        """One input message (``kafka_ts``: its Kafka timestamp, if known). Whatever goes wrong
        with it, it becomes a dead letter, never a crash: a crash would repeat on every restart
        (the same message comes again)."""
        try:
            self._process(topic, partition, offset, key, value, kafka_ts)
        except Exception as e:  # noqa: BLE001 - any bug on any input: the message is kept, with why
            self._dead_raw("internal_error", error_detail(e), topic, partition, offset, key, value)

    def _process(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 kafka_ts: int | None) -> None:
        tp = (topic, partition)
        self.offsets[tp] = offset + 1
        self.idle.discard(tp)
        self.counts["events"] += 1
        name = self.roles[topic]
        if value is None or len(value) > self.max_bytes:
            n = -1 if value is None else len(value)
            self._dead_raw("oversize" if value else "malformed",
                           "no value" if value is None else f"{n} bytes > max_message_bytes {self.max_bytes}",
                           topic, partition, offset, key, value)
            return
        try:
            if name == "FeatureLog":
                rec = self._features(value) if self.splice else self._full_features(value)
            else:
                rec = self._verdict(self.validator.action(self.fast.decode_action(value)))
        except DecodeError as e:
            self._dead_raw(e.reason, e.detail, topic, partition, offset, key, value)
            return
        if rec is None:
            return  # an unknown action, dropped (counted)
        bad = contract_breach(rec, key, kafka_ts)
        if bad is not None:
            self._dead_raw(bad[0], bad[1], topic, partition, offset, key, value)
            return
        ts = rec["ts_ms"]
        pm = self.part_max.get(tp)
        if pm is None or ts > pm:
            self.part_max[tp] = ts
        rid = rec["request_id"]
        entry = self.store.get(rid)
        state = entry.state if entry is not None else None
        if name == "FeatureLog":
            self.counts["features"] += 1
            step = self.core.on_features(state, rec, self.watermark)
            st = step.state
            if st is not None and st.features is rec:
                st.fbytes, st._splice = self._last  # the body joined: spliced into examples, saved as is
            self._apply(rid, entry, step, len(value), value)
        else:
            self.counts["actions"] += 1
            if (entry is not None and entry.timer is not None and entry.timer > self.watermark
                    and self.core.is_noop_action(state, rec)):
                return  # an impression of a known request: nothing to do
            step = self.core.on_action(state, rec, self.watermark)
            self._apply(rid, entry, step, 0)

    def _features(self, value: bytes) -> dict[str, Any]:
        """A valid FeatureLog as the join needs it (``id_record``: ids and times), from its bytes.

        The features themselves stay Avro bytes (``state.fbytes``) that the writer splices. The
        spec's rules are checked on the bytes (``SpanCheck``); a message that does not pass, an
        older writer's, or one whose slots overlap (rare) is decoded and validated in Python.
        """
        if value[2:10] != self._feature_fp or value[:2] != b"\xc3\x01":
            return self._full_features(value)  # older writer or bad: the codec decides
        body = value[10:]
        try:
            spans, k = self.span_check.scan(body)  # the splice's spans and the spec's rules, one walk
        except ValueError:
            return self._full_features(value)  # raises the codec's reason
        if not k:
            return self._full_features(value)  # the validator decides (or slots on both sides)
        head = spans[:H_END].tolist()
        try:
            rid = body[head[H_RID0]:head[H_RID1]].decode()
        except UnicodeDecodeError:
            return self._full_features(value)
        sp = spans[:k].copy()
        self._last = (body, sp)
        rec = id_record(rid, head[H_TS], sp[H_END::ITEM_FIELDS].tolist())
        bad = check_features(rec)
        if bad is not None:
            raise DecodeError(*bad)
        rec["user_id"] = head[H_USER]
        return rec

    def _full_features(self, value: bytes) -> dict[str, Any]:
        """Decode, validate (dead letter: ``DecodeError`` with the reason) and, when the message is
        not a current-schema body of exactly the joined record, re-encode it, so the state and the
        splice read the record that joined (without dropped features)."""
        full = self.fast.decode(value, "FeatureLog")
        rec = self._verdict(self.validator.features(full))
        same = rec is full and value[2:10] == self._feature_fp
        self._last = (value[10:] if same else self.fast.encode("FeatureLog", rec)[10:], None)
        return rec

    def _verdict(self, v: Verdict) -> dict[str, Any] | None:
        """The record to join (None: an unknown action dropped); a dead letter raises ``DecodeError``."""
        if v.reason:
            raise DecodeError(v.reason, v.detail)
        if v.dropped:
            dropped = self.dropped
            for name in v.dropped:  # names come from the input: a bounded number is kept apart
                dropped[name if name in dropped or len(dropped) < DROPPED_NAMES else "<other>"] += 1
            self.counts["dropped_unknown"] += len(v.dropped)
        return v.record

    def advance(self) -> int:
        """Move the watermark on and fire due timers (one bounded sweep); return timers fired."""
        self._update_watermark()
        return self._fire_due()[0]

    def advance_all(self) -> int:
        """Move the watermark on and fire every due timer: what happens between two rounds
        (``joiner.sequencer``), so that it depends on the input alone."""
        self._update_watermark()
        return self.fire_all_due()

    def _fire_due(self) -> tuple[int, int]:
        """Fire the timers due at the watermark (one bounded sweep): (fired, index entries seen)."""
        wm = self.watermark
        fired = 0
        store = self.store
        due = store.due(wm)
        for rid in due:
            entry = store.get(rid)
            if entry is None or entry.timer is None or entry.timer > wm:
                continue  # stale index entry
            fired += 1
            try:
                self._apply(rid, entry, self.core.on_timer(entry.state, wm), 0)
            except Exception as e:  # noqa: BLE001 - the request is dead-lettered, the join goes on
                self._drop_request(rid, entry, e)
        return fired, len(due)

    def _drop_request(self, rid: str, entry: Any, e: Exception) -> None:
        """A request whose timer failed: its feature log (or its id) goes to the dead-letter topic
        with ``internal_error`` and the state is removed, so it cannot fail again at every restart."""
        st = entry.state
        payload = b""
        if st is not None and st.fbytes is not None:
            payload = self.fast.header("FeatureLog") + st.fbytes
        self._dead_raw("internal_error", f"at its timer: {error_detail(e)}", next(iter(self.roles)), -1, -1,
                       rid.encode(), payload)
        self.store.put(rid, None, None, entry, 0)

    def drain(self) -> int:
        """End of input: move the watermark to its maximum and fire every timer, one bounded
        sweep per call (returns the timer entries it looked at: call until 0).

        Every window closes, late positives already seen are emitted, actions still waiting for
        features become ``no_features``, states expire: what Flink does at the end of a bounded
        source or on ``flink stop --drain``. The watermark stays at its maximum, so a drained
        state only dead-letters new input."""
        self.watermark = WATERMARK_MAX
        return self._fire_due()[1]

    def fire_all_due(self) -> int:
        """Fire every timer due at the watermark, not just one bounded sweep; return timers fired.

        A checkpoint that must be reproducible calls it: afterwards the state depends only on the
        input and the watermark, not on how many sweeps happened to run."""
        fired = 0
        while True:
            n, seen = self._fire_due()
            fired += n
            if not seen:
                return fired

    def raise_watermark(self, watermark: int) -> int:
        """Move the watermark to at least ``watermark`` (one a previous run reached) and fire
        everything due; return timers fired."""
        self.watermark = max(self.watermark, watermark)
        return self.fire_all_due()

    def _update_watermark(self) -> None:
        lows = []
        for tp, mx in self.part_max.items():
            if tp in self.idle:
                continue
            if mx is None:
                if self.offsets.get(tp, 0) == 0:
                    return  # a partition that has given nothing yet holds the watermark back
                continue
            lows.append(mx)
        if not lows:  # all idle: everything there is was seen
            lows = [mx for mx in self.part_max.values() if mx is not None]
            if not lows:
                return
            low = max(lows)
        else:
            low = min(lows)
        wm = low - self.lateness - 1
        if wm > self.watermark:
            self.watermark = wm

    # ---- output ---------------------------------------------------------------------------
    def _apply(self, rid: str, entry: Any, step: Step, size_hint: int, raw: bytes | None = None) -> None:
        if (step.state is None and entry is None) or not step.changed:
            pass  # nothing stored, nothing to store / nothing changed
        else:
            self.store.put(rid, step.state, step.timer, entry, size_hint)
        if step.examples:
            k = rid.encode()
            out = self.examples
            if self.splice:
                for ex in step.examples:
                    out.append((k, ex))
            else:
                enc = self.fast.encode
                for ex in step.examples:
                    out.append((k, enc("TrainingExample", ex)))
            c = self.counts
            c["joined"] += len(step.examples)
            c["late"] += step.late
            c["negatives_kept"] += step.negatives_kept
            c["positives"] += step.positives
        if step.negatives_dropped:
            self.counts["negatives_dropped"] += step.negatives_dropped
        for d in step.dead_letters:
            self._dead_out(d, raw)

    def _dead_out(self, d: DeadLetterOut, raw: bytes | None = None) -> None:
        topic = next((t for t, n in self.roles.items() if n == d.record_name), "")
        if d.record_name == "FeatureLog" and raw is not None:
            payload = raw  # the consumed message (the record the join saw may be partial)
        else:
            payload = self.fast.encode(d.record_name, d.record)
        self._dead(d.reason, d.detail, topic, -1, -1, d.record["request_id"].encode(), payload)

    def _dead_raw(self, reason: str, detail: str, topic: str, partition: int, offset: int,
                  key: bytes | None, value: bytes | None) -> None:
        payload = value or b""
        if len(payload) > DEAD_PAYLOAD_MAX:
            detail += f" (payload cut to {DEAD_PAYLOAD_MAX} bytes)"
            payload = payload[:DEAD_PAYLOAD_MAX]
        self._dead(reason, detail, topic, partition, offset, key, payload)

    def _dead(self, reason: str, detail: str, topic: str, partition: int, offset: int,
              key: bytes | None, payload: bytes) -> None:
        self.dead_reasons[reason] += 1
        rec = {"reason": reason, "detail": detail, "source_topic": topic, "partition": partition,
               "offset": offset, "key": key, "payload": payload, "ts_ms": int(time.time() * 1000)}
        self.dead.append((key, self.fast.encode("DeadLetter", rec)))

    def take_output(self) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes | None, bytes]]]:
        ex, dead = self.examples, self.dead
        self.examples, self.dead = [], []
        return ex, dead
