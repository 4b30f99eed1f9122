"""The Python functions of the Flink join job: decode, and the keyed join that drives ``joiner.core``.

``JoinFn`` gets raw Kafka values keyed by the Kafka key (= request_id); its ``Decoder``s turn
them into records or dead letters (side output). It is a thin adapter: it keeps the core's
``RequestState`` bytes in keyed ValueState (RocksDB backend, checkpointed), feeds it the Flink
watermark and registers the event-time timer the core asks for. All join decisions are the core's.

Every call from Python into Flink's Java side (state, timers, watermark, metrics) costs tens of
microseconds in thread mode (measured: state update ~90 us, counter inc ~60 us, watermark ~40
us, more than the join itself), so the adapter makes as few as it can: metrics are counted in
Python and flushed once a second, unchanged state is not written back, a timer already registered
is not registered again, and the watermark is re-read every ``watermark_poll`` elements (a
timer at ``t`` also tells that it reached ``t``). A watermark seen a little late is one Flink
could have delivered later: the core decides by event times, so the outputs are the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, TimeDomain
from pyflink.datastream.functions import KeyedCoProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs.flink.metrics import METRIC_GROUP, METRICS
from joiner.config import JoinerConfig
from joiner.core import Joiner, RequestState, Step
from joiner.engine import DEAD_PAYLOAD_MAX, contract_breach, error_detail
from joiner.fastcodec import FastCodec
from joiner.validate import Validator
from schemas.codec import DecodeError, default_codec
from schemas.spec import FeatureSpec

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
# JoinFn's output: (encoded example, wall-clock ms) so the sink stamps records with the time they
# were made (freshness downstream), not with the event time of the timer that emitted them
STAMPED = Types.TUPLE([BYTES, Types.LONG()])
DEAD_LETTERS = OutputTag("dead-letters", BYTES)
METRICS_FLUSH_MS = 1000  # a processing-time timer pushes the Python-side counts to Flink's counters this often


def dead_letter(reason: str, detail: str, topic: str, payload: bytes, key: bytes | None = None) -> bytes:
    """A DeadLetter record (Avro bytes); the wall-clock ``ts_ms`` says when it was dead-lettered.

    Partition and offset stay -1: PyFlink's Kafka source hands Python the value only. Payloads
    are cut as the embedded runner cuts them, so a dead letter always fits in a Kafka message."""
    if len(payload) > DEAD_PAYLOAD_MAX:
        detail += f" (payload cut to {DEAD_PAYLOAD_MAX} bytes)"
        payload = payload[:DEAD_PAYLOAD_MAX]
    return default_codec().encode("DeadLetter", {
        "reason": reason, "detail": detail, "source_topic": topic, "partition": -1, "offset": -1,
        "key": key, "payload": payload, "ts_ms": int(time.time() * 1000),
    })


class Counts:
    """The ``METRICS`` counted in Python (a dict add, not a call into Java per event) and added to their
    Flink counters by ``flush``, which the join calls from a processing-time timer once a second and
    on close: a scrape lags the job by at most ``METRICS_FLUSH_MS``, even after its input stopped."""

    def __init__(self, ctx: RuntimeContext):
        group = ctx.get_metrics_group()
        for name in METRIC_GROUP:
            group = group.add_group(name)
        self.flink = {n: group.counter(metric) for n, metric in METRICS.items()}
        self.pending = dict.fromkeys(METRICS, 0)

    def add(self, name: str, n: int = 1) -> None:
        self.pending[name] += n

    def flush(self) -> None:
        for name, n in self.pending.items():
            if n:
                self.flink[name].inc(n)
                self.pending[name] = 0


class Decoder:
    """Raw Kafka bytes of one topic -> the valid record, or ``None``: either a dead letter was
    counted (``oversize`` / ``malformed`` / ``unknown_schema`` / ``wrong_type`` or the feature
    spec's reasons, ``joiner.validate``) and put in ``self.dead`` for the caller to emit, or an
    unknown action was dropped (``self.dead`` is None then). ``self.as_consumed``: the record is
    the message as decoded (no unknown feature was dropped from it)."""

    def __init__(self, record_name: str, topic: str, max_message_bytes: int, counts: Counts, spec: FeatureSpec):
        self.record_name = record_name
        self.topic = topic
        self.max_bytes = max_message_bytes
        validator = Validator(spec)
        self.check = validator.features if record_name == "FeatureLog" else validator.action
        fast = FastCodec()
        self.decode = fast.decode_action if record_name == "ActionLog" else lambda v: fast.decode(v, record_name)
        self.counts = counts
        self.dead: bytes | None = None
        self.as_consumed = True

    def __call__(self, value: bytes | None) -> dict | None:
        self.dead = None
        if value is None:  # a Kafka message without a value
            return self._dead("malformed", "no value", b"")
        value = value if isinstance(value, bytes) else bytes(value)
        if len(value) > self.max_bytes:
            return self._dead("oversize", f"{len(value)} bytes > {self.max_bytes}", value)
        try:
            rec = self.decode(value)
        except DecodeError as e:
            return self._dead(e.reason, e.detail, value)
        verdict = self.check(rec)
        if verdict.reason:
            return self._dead(verdict.reason, verdict.detail, value)
        if verdict.dropped:
            self.counts.add("dropped_unknown", len(verdict.dropped))
        self.as_consumed = verdict.record is rec
        if verdict.record is not None:
            self.counts.add("decoded")
        return verdict.record

    def _dead(self, reason: str, detail: str, value: bytes) -> None:
        self.counts.add("dead_letters")
        self.dead = dead_letter(reason, detail, self.topic, value)


class JoinFn(KeyedCoProcessFunction):
    """Input 1 = feature logs, input 2 = actions, both keyed by request_id.

    Flink's keyed state is the truth (checkpointed, restored); decoding it is costly (the
    feature log is kept Avro-encoded), so decoded states also stay in a bounded write-through
    dict per subtask (``cache_size``): every change is written to Flink state at once, and a
    restart builds a new function instance, hence an empty cache.

    ``fail_after``/``fail_flag`` inject one failure for the failover test: after this subtask
    handled ``fail_after`` elements, once a checkpoint has completed under ``checkpoint_dir``,
    the function renames the flag file and raises, so Flink restarts from that checkpoint.
    ``slow_ms`` (tests) sleeps that long every 100 elements, so that a small input runs long
    enough to be stopped with a savepoint or to lose a TaskManager mid-way.
    """

    def __init__(self, cfg: JoinerConfig, spec: FeatureSpec, topics: tuple[str, str], cache_size: int = 0,
                 watermark_poll: int = 1, fail_after: int | None = None, fail_flag: str | None = None,
                 checkpoint_dir: Path | None = None, slow_ms: float = 0.0):
        self.cfg = cfg
        self.spec = spec
        self.max_bytes = cfg.max_message_bytes
        self.topics = topics
        self.cache_size = cache_size
        self.watermark_poll = max(1, watermark_poll)
        self.fail_after = fail_after
        self.fail_flag = fail_flag
        self.checkpoint_dir = checkpoint_dir
        self.slow_s = slow_ms / 1000

    def open(self, ctx: RuntimeContext) -> None:
        self.fast = FastCodec()
        self.feature_header = self.fast.header("FeatureLog")
        self.joiner = Joiner(self.cfg, self.spec)
        # PICKLED_BYTE_ARRAY: PRIMITIVE_ARRAY(BYTE) state fails on an empty key in thread mode
        # (PyFlink 2.0.2 converts the missing value with `bytes(None)`).
        self.state = ctx.get_state(ValueStateDescriptor("request", Types.PICKLED_BYTE_ARRAY()))
        self.counts = Counts(ctx)
        self.flush_at: int | None = None  # the processing time of the armed metrics flush timer
        self.decode1 = Decoder("FeatureLog", self.topics[0], self.max_bytes, self.counts, self.spec)
        self.decode2 = Decoder("ActionLog", self.topics[1], self.max_bytes, self.counts, self.spec)
        self.seen = 0
        self.wm = -(1 << 63)
        # key -> (state, its bytes as written to Flink, the timer registered for it)
        self.cache: dict[str, tuple[RequestState, bytes, int | None]] = {}
        self._bytes: bytes | None = None
        self._timer: int | None = None

    def close(self) -> None:
        self.counts.flush()

    def _watermark(self, ctx: KeyedCoProcessFunction.Context) -> int:
        if self.seen % self.watermark_poll == 0:
            self.wm = max(self.wm, ctx.timer_service().current_watermark())
        return self.wm

    def _arm_flush(self, ctx: KeyedCoProcessFunction.Context) -> None:
        """One processing-time timer at a time pushes the counts (one call into Java a second). It is keyed
        (the current key's), so it lands in checkpoints: one restored from an older run only flushes too."""
        if self.flush_at is None:
            self.flush_at = int(time.time() * 1000) + METRICS_FLUSH_MS  # Flink's processing time: the wall clock
            ctx.timer_service().register_processing_time_timer(self.flush_at)

    def process_element1(self, value: bytes, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        self._tick()
        self._arm_flush(ctx)
        yield from self._guarded(self._features, value, ctx, self.topics[0])

    def process_element2(self, value: bytes, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        self._tick()
        self._arm_flush(ctx)
        yield from self._guarded(self._action, value, ctx, self.topics[1])

    def on_timer(self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext) -> Iterator[Any]:
        wm = ctx.timer_service().current_watermark()
        # An event-time timer fires once the watermark reached it, so only these two cases can be the
        # flush timer (ours, or one restored from a checkpoint); the time domain (a call into Java) says.
        if (timestamp == self.flush_at or timestamp > wm) and ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if timestamp == self.flush_at:
                self.flush_at = None
            self.counts.flush()
            return
        self._arm_flush(ctx)  # a timer emits examples too
        self.wm = max(self.wm, timestamp, wm)
        key = ctx.get_current_key()
        state = self._load(key)
        self._timer = None  # this registration is used up
        try:
            out = list(self._apply(key, self.joiner.on_timer(state, self.wm), ctx))
        except Exception as e:  # noqa: BLE001 - the request is dead-lettered and dropped, the job goes on
            self.state.clear()
            self.cache.pop(key, None)
            fbytes = state.fbytes if state is not None else None
            payload = self.fast.header("FeatureLog") + fbytes if fbytes is not None else b""
            self.counts.add("dead_letters")
            out = [(DEAD_LETTERS, dead_letter("internal_error", f"at its timer: {error_detail(e)}", self.topics[0],
                                              payload, str(key).encode()))]
        yield from out

    def _guarded(self, handle: Any, value: bytes, ctx: KeyedCoProcessFunction.Context, topic: str) -> list[Any]:
        """What ``handle`` outputs, or, if anything goes wrong with this input, one ``internal_error``
        dead letter with it: a failure would repeat on every restart from the checkpoint."""
        try:
            return list(handle(value, ctx))
        except Exception as e:  # noqa: BLE001 - any bug on any input: the message is kept, with why
            self.counts.add("dead_letters")
            return [(DEAD_LETTERS, dead_letter("internal_error", error_detail(e), topic, bytes(value or b"")))]

    def _features(self, value: bytes, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        rec = self._checked(self.decode1, value, ctx)
        if rec is None:
            yield DEAD_LETTERS, self.decode1.dead
            return
        key = rec["request_id"]
        step = self.joiner.on_features(self._load(key), rec, self._watermark(ctx))
        st = step.state
        if st is not None and st.features is rec and self.decode1.as_consumed and value[:10] == self.feature_header:
            st.fbytes = bytes(value[10:])  # the consumed body is the state's encoding: no re-encoding
        yield from self._apply(key, step, ctx)

    def _action(self, value: bytes, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        rec = self._checked(self.decode2, value, ctx)
        if rec is None:
            if self.decode2.dead is not None:  # else an unknown action, dropped
                yield DEAD_LETTERS, self.decode2.dead
            return
        key = rec["request_id"]
        step = self.joiner.on_action(self._load(key), rec, self._watermark(ctx))
        yield from self._apply(key, step, ctx)

    @staticmethod
    def _checked(decode: Decoder, value: bytes, ctx: KeyedCoProcessFunction.Context) -> dict | None:
        """The decoded record, or None with ``decode.dead`` set: undecodable, or keyed or timed
        by Kafka otherwise than the record says (``joiner.engine.contract_breach``)."""
        rec = decode(value)
        if rec is not None:
            key = ctx.get_current_key()
            key = key[0] if isinstance(key, Row) else key
            bad = contract_breach(rec, key, ctx.timestamp())
            if bad is not None:
                decode.counts.add("dead_letters")
                decode.dead = dead_letter(*bad, decode.topic, bytes(value), str(key or "").encode())
                return None
        return rec

    # ---- adapter ------------------------------------------------------------------------------
    def _load(self, key: str) -> RequestState | None:
        hit = self.cache.pop(key, None)  # the core consumes the state it is given
        if hit is not None:
            state, self._bytes, self._timer = hit
            return state
        self._timer = None
        self.counts.add("state_reads")
        self._bytes = self.state.value()
        return RequestState.from_bytes(self._bytes) if self._bytes is not None else None

    def _apply(self, key: str, step: Step, ctx: KeyedCoProcessFunction.Context) -> Iterator[Any]:
        timer = step.timer
        if timer is not None and timer != self._timer:  # Flink keeps one per (key, time) anyway
            ctx.timer_service().register_event_time_timer(timer)
        if step.state is None:
            if self._bytes is not None:
                self.state.clear()
        else:
            # unchanged (e.g. an impression of a known request): skip re-serializing it
            data = self._bytes if not step.changed and self._bytes is not None else step.state.to_bytes()
            if data != self._bytes:
                self.state.update(data)
                self.counts.add("state_writes")
            if self.cache_size:
                if len(self.cache) >= self.cache_size:
                    del self.cache[next(iter(self.cache))]  # least recently used first
                self.cache[key] = (step.state, data, timer)
        if step.examples:
            now_ms = int(time.time() * 1000)  # the Kafka timestamp: when the example was made, not its event time
            encode = self.fast.encode
            for ex in step.examples:
                yield encode("TrainingExample", ex), now_ms
        c = self.counts
        c.add("examples", len(step.examples))
        c.add("positives", step.positives)
        c.add("negatives_kept", step.negatives_kept)
        c.add("negatives_dropped", step.negatives_dropped)
        c.add("late", step.late)
        for d in step.dead_letters:
            topic = self.topics[0] if d.record_name == "FeatureLog" else self.topics[1]
            payload = self.fast.encode(d.record_name, d.record)
            key_b = str(d.record.get("request_id", "")).encode()
            self.counts.add("dead_letters")
            yield DEAD_LETTERS, dead_letter(d.reason, d.detail, topic, payload, key_b)

    def _tick(self) -> None:
        self.seen += 1
        self.counts.add("input")
        if self.slow_s and self.seen % 100 == 0:
            time.sleep(self.slow_s)
        if self.fail_after is None or self.seen < self.fail_after:
            return
        if not self.fail_flag or not os.path.exists(self.fail_flag):
            return
        done = sorted(Path(self.checkpoint_dir).glob("*/chk-*/_metadata")) if self.checkpoint_dir else []
        if not done:
            return  # wait for a completed checkpoint so recovery really restores state
        try:
            os.replace(self.fail_flag, self.fail_flag + ".fired")  # atomic: fires once
        except FileNotFoundError:
            return  # the other subtask fired first
        Path(self.fail_flag + ".fired").write_text(str(done[-1].parent))  # the checkpoint that existed
        raise RuntimeError(f"injected failure after {self.seen} elements (test)")
