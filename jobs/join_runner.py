"""The embedded join runner (`streamrec join`): the join without a Flink cluster.

One process consumes ``features`` + ``actions`` (every partition, assigned explicitly from
the offsets saved in its own RocksDB, not from Kafka's group offsets), drives
``joiner.engine.JoinEngine`` and produces ``examples`` + ``dead-letter``. Every
``checkpoint_interval_ms`` it checkpoints; what that means depends on ``joiner.delivery``:

exactly-once (default). Each checkpoint interval's outputs go into one Kafka transaction, together
with the join's position (next input offsets, watermark) as a record keyed by ``group_id`` in
``joiner.commit_topic``; once it is committed, the join state and the same position are written
in ONE RocksDB WriteBatch. (Not ``send_offsets_to_transaction``: librdkafka can block in it past
its timeout while the group coordinator is away, librdkafka#5456; a record takes the normal
produce path. Group offsets are still committed after each checkpoint, for lag monitoring.)
Guarantee, for ``read_committed`` readers: every example is written once. Why it holds:
* a crash before the commit: the transaction is aborted (``init_transactions`` on restart
  fences the dead producer); RocksDB holds the previous checkpoint, whose offsets equal
  Kafka's, so that interval's input is joined again and its output written once;
* a crash between the commit and the WriteBatch: the committed position is ahead of RocksDB's.
  On restart the runner replays exactly that span, from RocksDB's offsets to the committed
  ones, with its output dropped (it was committed), raises the watermark to the committed one
  (every due timer was fired before each commit, so this fires the same ones), writes the
  rebuilt state, and goes on from the committed offsets. The rebuilt state is the
  one the crashed process had, because the join decides by event times: any interleaving of
  the same input within the allowed lateness gives the same result (``joiner.core``);
* a broker outage that aborts a transaction: the runner restarts itself from its last
  checkpoint (``Rewind``), as after a crash.

at-least-once. The producer is flushed before each WriteBatch; a crash re-consumes the input
after the last checkpoint and re-sends its examples, byte-identical (same state, same input,
same deterministic ``example_id``): consumers drop them by id.

One instance owns all partitions; to scale out run the Flink job (``jobs/flink``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from joiner.engine import JoinEngine, decode_position
from joiner.sequencer import Sequencer
from joiner.store import StateStore
from streamrec.config import Settings, load_config
from streamrec.errors import StreamrecError
from streamrec.kafka import (
    check_access,
    consumer,
    consumer_lag,
    create_topics,
    last_value,
    partitions_of,
    producer,
    require_topics,
)
from streamrec.metrics import serve_metrics

log = logging.getLogger("streamrec.join")
GC_THRESHOLDS = (200_000, 100, 100)
TXN_TIMEOUT_S = 60.0  # how long a transaction call may keep retrying through a broker outage
CRASH_AFTER_COMMIT_ENV = "STREAMREC_TEST_CRASH_AFTER_COMMIT"  # TEST: exit after the Nth commit of new input
CRASH_EXIT = 70


class Rewind(Exception):
    """A transaction had to be aborted: resume from the last checkpoint (``run_join`` does)."""


class StateGC:
    """The cyclic GC around long-lived join state.

    The cache holds many long-lived objects: with the default thresholds the GC rescans them
    all the time (~25% of CPU here), and even a gen-0 pass over a second's new states costs
    ~5%. Join state has no reference cycles, so what is alive after a checkpoint is frozen
    (``gc.freeze``: out of every later scan). Cyclic garbage that happens to be alive at that
    moment (say, a metrics scrape's) would be frozen with it, so every ``sweep_s`` everything
    is unfrozen and collected once (a full pass: ~0.1 s per million objects)."""

    def __init__(self, sweep_s: float):
        self.sweep_s = sweep_s
        self.old = gc.get_threshold()
        self.last_sweep = time.monotonic()
        self.sweeps = 0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def after_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self.last_sweep >= self.sweep_s:
            gc.unfreeze()
            gc.collect()
            self.last_sweep = now
            self.sweeps += 1
        gc.freeze()

    def stop(self) -> None:
        gc.set_threshold(*self.old)
        gc.unfreeze()


@dataclass
class RunStats:
    events: int = 0
    examples: int = 0
    dead_letters: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU (all threads, librdkafka's included)
    counts: dict[str, int] = field(default_factory=dict)
    dead_reasons: dict[str, int] = field(default_factory=dict)


class _Metrics:
    """Prometheus collector reading the live counters at scrape time, plus a periodic log line."""

    def __init__(self, runner: JoinRunner):
        self.r = runner
        self.last_t = time.monotonic()
        self.last_events = 0

    def collect(self) -> Any:
        """Prometheus conventions: one meaning per metric, base units (bytes, seconds), counters end in
        ``_total``; a ratio (the cache hit rate) is left to the query, from its two counters."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        e = self.r.engine
        counts = e.counts
        c = CounterMetricFamily("streamrec_join_input_messages_total", "messages consumed, by input topic role",
                                labels=["role"])
        for role in ("features", "actions"):
            c.add_metric([role], counts.get(role, 0))
        yield c
        for key, name, help_ in (
                ("joined", "examples", "examples written (positives and kept negatives, late ones included)"),
                ("positives", "positive_examples", "examples with at least one positive label"),
                ("late", "late_examples", "positive examples whose action came after the window closed"),
                ("negatives_kept", "negative_examples_kept", "negative examples kept by sampling"),
                ("negatives_dropped", "negative_examples_dropped", "negative examples dropped by sampling")):
            yield CounterMetricFamily(f"streamrec_join_{name}_total", help_, value=counts.get(key, 0))
        u = CounterMetricFamily("streamrec_join_dropped_unknown_total", "features and actions the feature spec "
                                "does not know, dropped (spec: unknown = drop), by name", labels=["name"])
        for name, n in e.dropped.items():
            u.add_metric([name], n)
        yield u
        d = CounterMetricFamily("streamrec_join_dead_letters_total", "dead letters by reason", labels=["reason"])
        for reason, n in e.dead_reasons.items():
            d.add_metric([reason], n)
        yield d
        s = e.store
        yield CounterMetricFamily("streamrec_join_cache_hits_total", "state lookups served by the in-memory cache",
                                  value=s.hits)
        yield CounterMetricFamily("streamrec_join_cache_misses_total", "state lookups that went to RocksDB",
                                  value=s.misses)
        yield GaugeMetricFamily("streamrec_join_cache_bytes", "bytes held by the in-memory join cache",
                                value=s.cached_bytes)
        yield GaugeMetricFamily("streamrec_join_cache_entries", "requests in the in-memory join cache",
                                value=len(s.cache))
        yield GaugeMetricFamily("streamrec_join_rocksdb_bytes", "size of the RocksDB join state on disk",
                                value=s.size_bytes())
        yield GaugeMetricFamily("streamrec_join_watermark_seconds", "the join's event-time watermark (Unix time)",
                                value=max(0, e.watermark) / 1000)
        if self.r.lag >= 0:  # unknown until the first fetch: absent rather than a made-up -1
            yield GaugeMetricFamily("streamrec_join_consumer_lag_messages",
                                    "messages in the input partitions not consumed yet", value=self.r.lag)

    def line(self) -> str:
        now = time.monotonic()
        e = self.r.engine
        s = e.store
        n = e.counts.get("events", 0)
        rate = (n - self.last_events) / max(1e-9, now - self.last_t)
        self.last_t, self.last_events = now, n
        dead = ",".join(f"{k}={v}" for k, v in sorted(e.dead_reasons.items())) or "-"
        dropped = ",".join(f"{k}={v}" for k, v in e.dropped.most_common(5)) or "-"
        return (f"events/s={rate:,.0f} events={n} joined={e.counts.get('joined', 0)} "
                f"neg_kept={e.counts.get('negatives_kept', 0)} neg_dropped={e.counts.get('negatives_dropped', 0)} "
                f"late={e.counts.get('late', 0)} dead[{dead}] dropped_unknown[{dropped}] "
                f"cache_hit={s.hits / max(1, s.hits + s.misses):.3f} cache_mb={s.cached_bytes / 1e6:.1f} "
                f"rocksdb_mb={s.size_bytes() / 1e6:.1f} lag={self.r.lag}")


class JoinRunner:
    def __init__(self, settings: Settings, from_start: bool = False):
        self.s = settings
        jc = settings.joiner
        t = settings.kafka.topics
        if from_start and jc.state_dir.exists():
            shutil.rmtree(jc.state_dir)
        self.store = StateStore.open(jc)
        self.engine = JoinEngine(jc, settings.features, self.store, t.features, t.actions)
        self.stop = False
        self.lag = -1
        self._delivery_errors: list[str] = []
        self._assigned: list[TopicPartition] = []
        self._drained_since: dict[tuple[str, int], float] = {}  # monotonic time each drained partition ran dry
        self.metrics_port: int | None = None
        self.metrics: _Metrics | None = None
        self.gc: StateGC | None = None  # set by run()
        self._commits = 0  # TEST: commits of new input so far, and the position of the last one
        self._last_committed: dict[tuple[str, int], int] = {}
        self._crash_after_commit = int(os.environ.get(CRASH_AFTER_COMMIT_ENV, "0")) or None

    @property
    def exactly_once(self) -> bool:
        return self.s.joiner.delivery == "exactly-once"

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def run(self, stop_when_idle: float | None = None, max_seconds: float | None = None,
            stop_after_events: int | None = None, drain: bool = False) -> RunStats:
        """Consume until stopped (``self.stop``, idle, time or event limits), then checkpoint.

        ``drain``: the input is complete; before the final checkpoint fire every timer
        (``JoinEngine.drain``), so no shown item is left without its window example.
        """
        jc, kc = self.s.joiner, self.s.kafka
        t = kc.topics
        check_access(kc)
        require_topics(kc, ["features", "actions"])
        c = consumer(kc, group=jc.group_id, **{"fetch.max.bytes": 64 << 20,
                                               "max.partition.fetch.bytes": 8 << 20,
                                               # a resumed partition is fetched again at once (_throttle)
                                               "fetch.queue.backoff.ms": 10})
        # only failures reach _on_delivery: a report per example was a Python call per example
        extra: dict[str, Any] = {"on_delivery": self._on_delivery, "delivery.report.only.error": True}
        if self.exactly_once:
            extra["transactional.id"] = jc.group_id
        p = producer(kc, **extra)
        tps = [(topic, n) for topic in (t.features, t.actions) for n in partitions_of(c, topic)]
        offsets = self.engine.restore(tps)
        if self.exactly_once:
            _txn(p.init_transactions, TXN_TIMEOUT_S)  # fences a predecessor and aborts what it left open
            offsets = self._catch_up(offsets)
            p.begin_transaction()
        self._assigned = [TopicPartition(tp[0], tp[1], off) for tp, off in offsets.items()]
        c.assign(self._assigned)
        metrics = self.metrics = _Metrics(self)
        server = None
        if jc.metrics_port is not None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            registry.register(metrics)
            server = serve_metrics(jc.metrics_port, self.s.metrics.host, registry, health=lambda: not self.stop)
            self.metrics_port = server.server_port
        self.gc = StateGC(jc.gc_sweep_interval_s)
        self.gc.start()
        started = time.monotonic()
        cpu0 = time.process_time()
        last_ckpt = last_log = last_msg = started
        ckpt_s = jc.checkpoint_interval_ms / 1000
        stats = RunStats()
        engine = self.engine

        seq = Sequencer(list(offsets), jc.round_size)
        paused: set[tuple[str, int]] = set()

        def on_error(m: Any) -> None:
            err = m.error()
            if err.code() == KafkaError._PARTITION_EOF:
                seq.end_of((m.topic(), m.partition()))
            elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(err)
            else:  # a broker away for a while: the client reconnects and resumes where it was
                log.warning("consumer: %s", err)

        try:
            while not self.stop:
                busy = self._take_in(c, c.consume(jc.consume_batch, timeout=0.1), seq, on_error)
                while (batch := seq.take()) is not None:  # rounds: see joiner.sequencer
                    busy += 1  # working through input taken earlier is not idle
                    engine.process_batch(batch, on_error)
                    self._end_round(seq, p)
                    self._throttle(c, seq, paused)  # resume a partition before it runs dry
                now = time.monotonic()
                if self._idle_for(seq, now):
                    self._end_round(seq, p)  # a partition long dry: it stops holding the watermark back
                self._throttle(c, seq, paused)
                if busy:
                    last_msg = now
                if now - last_ckpt >= ckpt_s:
                    self._checkpoint(p, c)
                    stats.checkpoints += 1
                    last_ckpt = now
                if now - last_log >= jc.log_interval_s:
                    self.lag = self._lag(c)
                    log.info(metrics.line())
                    last_log = now
                if stop_when_idle is not None and now - last_msg >= stop_when_idle:
                    self._end_round(seq, p, complete=True)  # the input is complete: the final watermark
                    break
                if max_seconds is not None and now - started >= max_seconds:
                    break
                if (stop_after_events is not None and engine.counts["events"] >= stop_after_events
                        and all(seq.drained(tp) for tp in seq.order)):
                    self._end_round(seq, p, complete=True)  # all consumed, every partition at its end
                    break
            while drain and engine.drain():
                self._produce(p, t.examples, t.dead_letter)
            self._checkpoint(p, c, last=True)
            stats.checkpoints += 1
            self.lag = self._lag(c)
            log.info(metrics.line())
            log.info("input left waiting for a round: %s; paused: %s; at their end: %s",
                     {f"{t}[{n}]": seq.waiting((t, n)) for t, n in seq.order}, sorted(paused),
                     [tp for tp in seq.order if seq.drained(tp) or tp in seq._ended])
        finally:
            c.close()
            self.store.close()
            self.gc.stop()
            if server is not None:
                server.shutdown()
                server.server_close()
        stats.seconds = time.monotonic() - started
        stats.cpu_seconds = time.process_time() - cpu0
        stats.events = engine.counts.get("events", 0)
        stats.examples = engine.counts.get("joined", 0)
        stats.dead_letters = sum(engine.dead_reasons.values())
        stats.counts = dict(engine.counts)
        stats.dead_reasons = dict(engine.dead_reasons)
        return stats

    def _idle_for(self, seq: Sequencer, now: float) -> bool:
        """Track how long each partition has been drained; True if one has been for
        ``joiner.idle_partition_ms`` and still holds the watermark back."""
        since = self._drained_since
        for tp in seq.order:
            if seq.drained(tp):
                since.setdefault(tp, now)
            else:
                since.pop(tp, None)
        limit = self.s.joiner.idle_partition_ms / 1000
        return any(now - t >= limit and tp not in self.engine.idle for tp, t in since.items())

    def _end_round(self, seq: Sequencer, p: Producer, complete: bool = False) -> None:
        """Between rounds: partitions drained for ``idle_partition_ms`` (every drained one if the
        input is ``complete``) stop holding the watermark back, the watermark moves, every due
        timer fires, the output goes out."""
        limit, now = self.s.joiner.idle_partition_ms / 1000, time.monotonic()
        for tp in seq.order:
            if seq.drained(tp) and (complete or now - self._drained_since.get(tp, now) >= limit):
                self.engine.mark_eof(*tp)
        self.engine.advance_all()
        self._produce(p, self.s.kafka.topics.examples, self.s.kafka.topics.dead_letter)

    @staticmethod
    def _take_in(c: Consumer, msgs: list[Any], seq: Sequencer, on_error: Any) -> int:
        """Consumed messages into the sequencer, errors (end of partition) in their place among them.

        A partition whose last message reaches the high watermark its fetch carried is at its end
        for now: librdkafka reports end-of-partition only after a fetch comes back empty, which
        under steady traffic never happens, and rounds would wait for ``round_size`` messages
        (seconds to minutes at the live head). Over a backlog this is true only at the input's
        end, where end-of-partition would say the same: the rounds stay those of the input. It
        ends a round but does not let the partition stop holding the watermark back
        (``Sequencer.end_of``): only librdkafka's end-of-partition does."""
        good = [m for m in msgs if m.error() is None]
        if len(good) == len(msgs):
            seq.add(good)
        else:
            run: list[Any] = []
            for m in msgs:
                if m.error() is None:
                    run.append(m)
                else:
                    seq.add(run)
                    run = []
                    on_error(m)
            seq.add(run)
        if not good:
            return 0
        for (topic, part), off in seq.newest_offsets().items():
            _, high = c.get_watermark_offsets(TopicPartition(topic, part), cached=True)
            if off + 1 >= high >= 0:
                seq.end_of((topic, part), confirmed=False)
        return len(good)

    def _throttle(self, c: Consumer, seq: Sequencer, paused: set[tuple[str, int]]) -> None:
        """Pause a partition far ahead of the others (its messages wait for theirs in the
        sequencer) and resume it once its backlog is down to a few rounds: memory stays bounded."""
        k = self.s.joiner.round_size
        for tp in seq.order:
            n = seq.waiting(tp)
            if n > 20 * k and tp not in paused:  # wide hysteresis: a resume re-fetches (librdkafka purges)
                c.pause([TopicPartition(*tp)])
                paused.add(tp)
            elif n <= 4 * k and tp in paused:
                c.resume([TopicPartition(*tp)])
                paused.discard(tp)

    def _produce(self, p: Any, examples_topic: str, dead_topic: str) -> None:
        ex, dead = self.engine.take_output()
        produce = p.produce
        for topic, batch in ((examples_topic, ex), (dead_topic, dead)):
            for k, v in batch:
                try:
                    produce(topic, v, k)
                except BufferError:  # local queue full: serve delivery reports until it takes it
                    while True:
                        p.poll(0.05)
                        try:
                            produce(topic, v, k)
                            break
                        except BufferError:
                            pass
        p.poll(0)

    def _checkpoint(self, p: Producer, c: Consumer, last: bool = False) -> None:
        """Outputs committed (or acknowledged) first, then state + offsets in one WriteBatch."""
        if self.exactly_once:
            # every due timer fired, so the committed output is a function of the input and the
            # watermark alone: what a catch-up after a crash rebuilds (_catch_up)
            self.engine.fire_all_due()
            self._produce(p, self.s.kafka.topics.examples, self.s.kafka.topics.dead_letter)
            if self._delivery_errors:
                _abort(p)
                raise Rewind(f"output delivery failed: {self._delivery_errors[:3]}")
            p.produce(self.s.joiner.commit_topic, self.engine.position(), self.s.joiner.group_id.encode())
            _txn(lambda: p.commit_transaction(TXN_TIMEOUT_S), TXN_TIMEOUT_S, p)
            if self._crash_after_commit and self.engine.offsets != self._last_committed:
                self._last_committed = dict(self.engine.offsets)
                self._commits += 1
                if self._commits == self._crash_after_commit:
                    os._exit(CRASH_EXIT)  # TEST: die between the commit (of new input) and the WriteBatch
        else:
            left = p.flush(60)
            if left:
                raise RuntimeError(f"{left} outputs not acknowledged; not committing state")
            if self._delivery_errors:
                raise RuntimeError(f"output delivery failed: {self._delivery_errors[:3]}")
        self.engine.checkpoint()
        if self.gc is not None:
            self.gc.after_checkpoint()
        if self.exactly_once and not last:
            p.begin_transaction()
        try:  # for lag monitoring only (kafka-consumer-groups); the runner resumes from its own position
            c.commit(offsets=[TopicPartition(t, n, off) for (t, n), off in self.engine.offsets.items()],
                     asynchronous=True)
        except KafkaException as e:
            log.debug("group offsets not committed: %s", e)

    def _catch_up(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Exactly-once restart after a crash between a commit and its WriteBatch: replay the input
        from RocksDB's offsets to the ones committed with the output, dropping what it makes (that
        output is in Kafka already), so the state catches up with what was committed."""
        jc = self.s.joiner
        create_topics(self.s.kafka, {jc.commit_topic: 1}, config={"cleanup.policy": "compact"})
        committed, watermark = decode_position(last_value(self.s.kafka, jc.commit_topic, jc.group_id.encode()))
        ends = {tp: committed[tp][0] for tp in offsets if tp in committed and committed[tp][0] > offsets[tp]}
        if not ends:
            return offsets  # RocksDB is where Kafka is (or Kafka has nothing: RocksDB rules)
        log.warning("catching up with the last committed transaction: %s",
                    {f"{t}[{n}]": f"{offsets[(t, n)]}..{end}" for (t, n), end in ends.items()})
        replay = consumer(self.s.kafka, group=f"{self.s.joiner.group_id}-catch-up")
        seq = Sequencer(list(offsets), jc.round_size)  # the same rounds as the run that committed
        for tp in offsets:
            if tp not in ends:
                seq.end_of(tp)
        try:
            replay.assign([TopicPartition(t, n, offsets[(t, n)]) for t, n in ends])
            left = set(ends)
            deadline = time.monotonic() + TXN_TIMEOUT_S
            while left or any(seq.waiting(tp) for tp in seq.order):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"catch-up could not read the committed input {sorted(left)}")
                got = [m for m in replay.consume(jc.consume_batch, timeout=0.5)
                       if m.error() is None and m.offset() < ends[(m.topic(), m.partition())]]
                seq.add(got)
                for m in got:
                    if m.offset() + 1 == ends[(m.topic(), m.partition())]:
                        left.discard((m.topic(), m.partition()))
                        seq.end_of((m.topic(), m.partition()))
                while (batch := seq.take()) is not None:
                    self.engine.process_batch(batch, lambda m: None)
                    self.engine.advance_all()
                    self.engine.take_output()
        finally:
            replay.close()
        self.engine.raise_watermark(watermark)
        self.engine.take_output()
        self.engine.checkpoint()
        return {**offsets, **ends}

    def _lag(self, c: Consumer) -> int:
        """Messages behind the input's end: sum over input partitions of high watermark - position."""
        try:
            return consumer_lag(c, {(t, n): off for (t, n), off in self.engine.offsets.items()})
        except KafkaException:
            return -1


def _txn(call: Any, timeout: float, p: Producer | None = None) -> Any:
    """A transactional call, retried while its error is retriable (a broker outage); an error that
    dooms the transaction aborts it and raises ``Rewind``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0]
            if err.retriable() and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if p is not None and err.txn_requires_abort():
                _abort(p)
                raise Rewind(str(err)) from e
            raise


def _abort(p: Producer) -> None:
    _txn(lambda: p.abort_transaction(TXN_TIMEOUT_S), TXN_TIMEOUT_S)


def run_join(settings: Settings, from_start: bool = False, stop_when_idle: float | None = None,
             max_seconds: float | None = None, drain: bool = False,
             on_runner: Callable[[JoinRunner], None] | None = None) -> RunStats:
    """Run until SIGTERM/SIGINT (or idle / time limits); a clean stop checkpoints first.
    ``on_runner`` sees each runner (a new one after a ``Rewind``), e.g. for a progress display."""
    runner = JoinRunner(settings, from_start=from_start)
    if on_runner is not None:
        on_runner(runner)

    def _stop(signum: int, frame: Any) -> None:
        runner.stop = True

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return runner.run(stop_when_idle=stop_when_idle, max_seconds=max_seconds, drain=drain)
            except Rewind as e:
                log.warning("transaction aborted (%s): resuming from the last checkpoint", e)
                stopping = runner.stop
                runner = JoinRunner(settings)
                runner.stop = stopping
                if on_runner is not None:
                    on_runner(runner)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def main(argv: list[str] | None = None) -> None:
    """``python -m jobs.join_runner [--config F] [--set k=v ...] [--from-start] [--stop-when-idle S]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--from-start", action="store_true", help="discard saved state and offsets first")
    ap.add_argument("--stop-when-idle", type=float, default=None, help="stop after S seconds without input")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--drain", action="store_true", help="on stop, fire every timer first (the input is complete)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        s = load_config(a.config, a.overrides)
        st = run_join(s, from_start=a.from_start, stop_when_idle=a.stop_when_idle, max_seconds=a.max_seconds,
                      drain=a.drain)
    except StreamrecError as e:  # a bad setting, a refused login, no broker, a missing topic: one line
        print(e, file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    log.info("done: %s", st)


if __name__ == "__main__":
    main()
