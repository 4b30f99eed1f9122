"""The archive dumper: the examples topic -> Parquet hour partitions, exactly once.

How a restart neither loses nor duplicates:

- Offsets live in the archive, not in Kafka: every commit publishes a manifest (``sinks.manifest``)
  holding the next offset per partition, atomically with the files it names. On start the dumper
  finishes the newest manifest (idempotent renames), deletes ``_tmp/`` leftovers and seeks to the
  manifest's offsets, so what it reads again is exactly what was never committed.
- Duplicates *in the topic* (at-least-once producers) are dropped by ``example_id``: ids are kept per
  event-time hour (a duplicate has the same ``ts_ms``, so the same hour); an hour's id set is
  rebuilt from its committed files the first time it is seen after a restart, and hours with
  buffered data are never evicted. So the window is the whole archive, not a time span.
- The watermark is the smallest, over partitions with input left, of the largest ``ts_ms`` read
  from each partition (so catch-up on one partition closes nothing early). An hour closes when the
  watermark passes its end plus ``allowed_lateness_ms``; its ``_SUCCESS`` is written by the first
  commit after that, after the hour's data files. An example for a closed hour goes to a
  ``late-<seq>.parquet`` file: committed files are never rewritten.
- Decoding: batches in the current TrainingExample schema go straight from Avro bytes to Arrow
  columns (``sinks.fastdecode``, compiled); other messages through ``schemas.codec``.
- Target failures (HDFS down, disk errors) are retried with exponential back-off, each step of a
  commit on its own, until the target is back; consumption pauses meanwhile (nothing is dropped).
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter, Gauge

from schemas.codec import DecodeError, default_codec
from sinks import layout, manifest
from sinks.fastdecode import decode_table
from sinks.fastdecode import header as fast_header
from sinks.fs import FileSystem, make_fs
from sinks.manifest import FileEntry, Manifest
from sinks.table import archive_schema, sort_by_time, to_table

log = logging.getLogger("streamrec.archive")
T = TypeVar("T")

# Prometheus conventions: counters end in _total, base units (seconds)
M_EXAMPLES = Counter("streamrec_archive_examples_total", "examples committed to the archive", ["late"])
M_DUPLICATES = Counter("streamrec_archive_duplicates_total", "examples dropped as duplicates by example_id")
M_DEAD = Counter("streamrec_archive_dead_letters_total", "undecodable messages sent to the dead-letter topic")
M_COMMITS = Counter("streamrec_archive_commits_total", "archive commits")
M_ERRORS = Counter("streamrec_archive_target_errors_total", "failed calls to the archive target (retried)")
M_TARGET_UP = Gauge("streamrec_archive_target_up", "1 when the last call to the archive target worked")
M_WATERMARK = Gauge("streamrec_archive_watermark_seconds", "the archive's event-time watermark (Unix time)")


class ArchiveError(RuntimeError):
    """The archive cannot be used as configured (wrong topic, a committed file missing, ...)."""


class Stopped(Exception):  # noqa: N818 - control flow, not an error
    """A stop was requested while the target was down: exit without committing (nothing lost)."""


@dataclass
class ArchiveStats:
    consumed: int = 0
    archived: int = 0
    late: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    commits: int = 0
    files: int = 0
    target_errors: int = 0
    outages: int = 0
    outage_s: float = 0.0
    target_down: bool = False
    last_error: str = ""


class SeenIds:
    """example_ids per event-time hour, LRU-bounded; an hour not in memory is rebuilt from its files."""

    def __init__(self, load: Callable[[int], set[str]], max_hours: int, pinned: Callable[[], Iterable[int]]):
        self._load, self._max, self._pinned = load, max_hours, pinned
        self._hours: OrderedDict[int, set[str]] = OrderedDict()

    def add(self, hour: int, example_id: str) -> bool:
        """Record ``example_id``; False if it was already there (a duplicate)."""
        ids = self._hours.get(hour)
        if ids is None:
            ids = self._hours[hour] = self._load(hour)
            self._evict(hour)
        else:
            self._hours.move_to_end(hour)
        if example_id in ids:
            return False
        ids.add(example_id)
        return True

    def _evict(self, keep: int) -> None:
        if len(self._hours) <= self._max:
            return
        pinned = set(self._pinned()) | {keep}
        for hour in list(self._hours):
            if len(self._hours) <= self._max:
                break
            if hour not in pinned:
                del self._hours[hour]


class Archiver:
    """Consumes ``kafka.topics.examples`` and commits Parquet hour partitions to the archive target."""

    def __init__(self, settings: Any, fs: FileSystem | None = None):
        self.cfg = settings.archive
        self.kafka = settings.kafka
        self.topic = settings.kafka.topics.examples
        self.dead_topic = settings.kafka.topics.dead_letter
        self.fs = fs or make_fs(self.cfg, settings.stack.run_dir)
        self.codec = default_codec()
        self.schema = archive_schema(settings.features)  # a column per slot of the spec
        self._fast_header = fast_header()
        self.run_id = uuid.uuid4().hex[:8]
        self.stats = ArchiveStats()
        self._stop = threading.Event()
        self._rng = random.Random()
        # state of the archive (from the newest manifest) and of the uncommitted buffer
        self.seq = 0
        self.offsets: dict[int, int] = {}
        self.committed_offsets: dict[int, int] = {}
        self.watermark_ms = 0
        self.partition_max: dict[int, int] = {}  # largest ts_ms read per partition
        self._partitions: list[int] = []
        self._idle: set[int] = set()  # partitions at their end
        self.open_hours: set[int] = set()
        self.totals: dict[str, int] = {"examples": 0, "late": 0, "duplicates": 0, "dead_letters": 0}
        self._buffer: dict[tuple[int, bool], list[pa.Table]] = defaultdict(list)
        self._buffer_bytes = 0
        self._buffer_since: float | None = None
        self._pending = {"examples": 0, "late": 0, "duplicates": 0, "dead_letters": 0}
        self._last_commit = time.monotonic()
        self._dead_producer = None
        self.seen = SeenIds(self._ids_of_hour, self.cfg.dedup_cache_hours,
                            lambda: {h for h, _ in self._buffer})

    # ---- control -------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask ``run`` to commit what it has and return (safe from a signal handler)."""
        self._stop.set()

    def _retry(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` until it works, backing off exponentially on target failures (OSError)."""
        delay, failures, since = self.cfg.retry_initial_s, 0, 0.0
        while True:
            try:
                result = fn(*args)
            except OSError as e:
                failures += 1
                self.stats.target_errors += 1
                M_ERRORS.inc()
                M_TARGET_UP.set(0)
                self.stats.last_error = f"{what}: {e}"
                if failures == 1:
                    since = time.monotonic()
                    self.stats.outages += 1
                    self.stats.target_down = True
                wait = delay * (0.8 + 0.4 * self._rng.random())
                log.warning("archive target %s unavailable (%s: %s); retry %d in %.1fs, down %.0fs",
                            self.fs.description, what, e, failures, wait, time.monotonic() - since)
                if self._stop.wait(wait):
                    raise Stopped(f"stop requested while the target was down ({what})") from None
                delay = min(delay * 2, self.cfg.retry_max_s)
                continue
            if failures:
                down = time.monotonic() - since
                self.stats.outage_s += down
                self.stats.target_down = False
                log.warning("archive target %s back after %.1fs and %d retries", self.fs.description,
                            down, failures)
            M_TARGET_UP.set(1)
            return result

    # ---- recovery ------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish the newest commit, drop files of unfinished ones, load offsets and watermark."""
        m = self._retry("read manifests", manifest.latest, self.fs)
        if m is not None:
            if m.topic != self.topic:
                raise ArchiveError(
                    f"archive {self.fs.description} holds topic {m.topic!r}, not kafka.topics.examples="
                    f"{self.topic!r}: use another archive.root"
                )
            self._retry("finish last commit", self._roll_forward, m)
            self.seq = m.seq + 1
            self.offsets = dict(m.offsets)
            self.committed_offsets = dict(m.offsets)
            self.watermark_ms = m.watermark_ms
            self.partition_max = dict(m.partition_max_ms)
            self.open_hours = set(m.open_hours)
            self.totals.update(m.totals)
            log.info("archive %s: resuming after commit %d at offsets %s", self.fs.description, m.seq, m.offsets)
        self._retry("clean _tmp", self._clean_tmp)

    def _clean_tmp(self) -> None:
        for name in self.fs.list(layout.TMP):
            self.fs.delete(f"{layout.TMP}/{name}")

    def _ids_of_hour(self, hour: int) -> set[str]:
        return self._retry(f"read ids of {layout.hour_label(hour)}", read_ids, self.fs, hour)

    # ---- consuming -----------------------------------------------------------------------
    def run(self, idle_s: float | None = None, max_s: float | None = None) -> ArchiveStats:
        """Archive until ``stop()``, or ``idle_s`` without new messages, or ``max_s``; commits at the end."""
        from confluent_kafka import KafkaError

        from streamrec.kafka import assign_from_start, check_access, consumer, require_topics

        check_access(self.kafka)  # a refused login fails here, in one line
        require_topics(self.kafka, ["examples"])
        self.fs.exists(layout.EXAMPLES)  # a target that does not answer at start fails here (Unreachable)
        log.info("archiving topic %s from %s to %s", self.topic, self.kafka.bootstrap, self.fs.description)
        self.recover()
        c = consumer(self.kafka, group=self.cfg.group)
        try:
            tps = assign_from_start(c, [self.topic], {(self.topic, p): o for p, o in self.offsets.items()})
            self._partitions = [tp.partition for tp in tps]
            start = last_msg = time.monotonic()
            while not self._stop.is_set():
                msgs = c.consume(self.cfg.poll_batch, timeout=0.2)
                good = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        good.append(m)
                        self._idle.discard(m.partition())
                    elif err.code() == KafkaError._PARTITION_EOF:
                        self._idle.add(m.partition())
                    else:
                        log.warning("kafka: %s", err)
                now = time.monotonic()
                if good:
                    self._ingest(good)
                    last_msg = now
                self._advance_watermark()
                if self._due(now):
                    self.commit()
                if (idle_s is not None and now - last_msg >= idle_s) or (max_s is not None and now - start >= max_s):
                    break
            self.commit()
        except Stopped as e:
            log.warning("archive: %s; uncommitted input will be read again next time", e)
        finally:
            c.close()
            if self._dead_producer is not None:
                self._dead_producer.flush(10)
        return self.stats

    def _ingest(self, msgs: list) -> None:
        """Decode, drop duplicates, route each example to (hour, late).

        Batches written with the current schema are decoded straight into Arrow columns
        (``sinks.fastdecode``); anything else goes message by message through ``schemas.codec``.
        """
        values = [m.value() for m in msgs]
        table = None
        if self._fast_header is not None and all(v is not None and v[:10] == self._fast_header for v in values):
            table = decode_table(values, self.schema)
        if table is None:
            self._ingest_slow(msgs)
            return
        closed_below = (self.watermark_ms - self.cfg.allowed_lateness_ms) // layout.HOUR_MS
        ts = table.column("ts_ms").to_numpy()
        hours = ts // layout.HOUR_MS
        keep = np.zeros(len(msgs), dtype=bool)
        seen_add, offsets, pmax = self.seen.add, self.offsets, self.partition_max
        for i, (m, eid, h, t) in enumerate(zip(msgs, table.column("example_id").to_pylist(),
                                               hours.tolist(), ts.tolist(), strict=True)):
            p = m.partition()
            offsets[p] = m.offset() + 1
            if seen_add(h, eid):
                keep[i] = True
                if t > pmax.get(p, -1):
                    pmax[p] = t
        self._count_consumed(len(msgs), len(msgs) - int(keep.sum()))
        route = hours * 2 + (hours < closed_below)
        groups = {}
        for key in np.unique(route[keep]).tolist():
            groups[(key // 2, bool(key % 2))] = table.take(np.nonzero(keep & (route == key))[0])
        self._add_groups(groups)

    def _ingest_slow(self, msgs: list) -> None:
        """Message by message through the codec (older writer schemas, bad messages -> dead letters)."""
        recs_by_key: dict[tuple[int, bool], list[dict]] = defaultdict(list)
        # layout.closed(h) <=> h < closed_below: one comparison per example
        closed_below = (self.watermark_ms - self.cfg.allowed_lateness_ms) // layout.HOUR_MS
        decode, seen_add, offsets, pmax = self.codec.decode, self.seen.add, self.offsets, self.partition_max
        hour_ms, dups = layout.HOUR_MS, 0
        for m in msgs:
            p = m.partition()
            offsets[p] = m.offset() + 1
            try:
                rec = decode(m.value(), expect="TrainingExample")[1]
            except DecodeError as e:
                self._dead_letter(m, e.reason, e.detail)
                continue
            ts = rec["ts_ms"]
            hour = ts // hour_ms
            if not seen_add(hour, rec["example_id"]):
                dups += 1
                continue
            recs_by_key[(hour, hour < closed_below)].append(rec)
            if ts > pmax.get(p, -1):
                pmax[p] = ts
        self._count_consumed(len(msgs), dups)
        self._add_groups({key: to_table(recs, self.schema) for key, recs in recs_by_key.items()})

    def _count_consumed(self, n: int, dups: int) -> None:
        self.stats.consumed += n
        self.stats.duplicates += dups
        self._pending["duplicates"] += dups
        M_DUPLICATES.inc(dups)

    def _add_groups(self, groups: dict[tuple[int, bool], pa.Table]) -> None:
        for key, t in groups.items():
            self._buffer[key].append(t)
            self._buffer_bytes += t.nbytes
            self._pending["late" if key[1] else "examples"] += t.num_rows
        if groups and self._buffer_since is None:
            self._buffer_since = time.monotonic()

    def _advance_watermark(self) -> None:
        """Watermark = the smallest per-partition max ts_ms over partitions that still have input.

        A partition at its end (EOF) does not hold the watermark back; one never read from does.
        So a partition running ahead during catch-up cannot close an hour that a lagging partition
        still has examples for. The watermark never goes back.
        """
        active = [p for p in self._partitions if p not in self._idle]
        if active:
            if any(p not in self.partition_max for p in active):
                return
            wm = min(self.partition_max[p] for p in active)
        elif self.partition_max:
            wm = max(self.partition_max.values())
        else:
            return
        if wm > self.watermark_ms:
            self.watermark_ms = wm
            M_WATERMARK.set(wm / 1000)

    def _dead_letter(self, m: Any, reason: str, detail: str) -> None:
        from streamrec.kafka import producer

        if self._dead_producer is None:
            self._dead_producer = producer(self.kafka)
        rec = {"reason": reason, "detail": f"archive: {detail}", "source_topic": m.topic(),
               "partition": m.partition(), "offset": m.offset(), "key": m.key(),
               "payload": m.value() or b"", "ts_ms": int(time.time() * 1000)}
        self._dead_producer.produce(self.dead_topic, self.codec.encode("DeadLetter", rec), key=m.key())
        self._pending["dead_letters"] += 1
        self.stats.dead_letters += 1
        M_DEAD.inc()

    def _closable(self) -> set[int]:
        lateness = self.cfg.allowed_lateness_ms
        cands = self.open_hours | {h for h, late in self._buffer if not late}
        return {h for h in cands if layout.closed(h, self.watermark_ms, lateness)}

    def _due(self, now: float) -> bool:
        if self._buffer_bytes >= self.cfg.roll_bytes:
            return True
        if self._buffer_since is not None:
            return now - self._buffer_since >= self.cfg.roll_age_s
        # nothing buffered: still record moved offsets (duplicates, dead letters) and close hours
        moved = self.offsets != self.committed_offsets
        return (moved or bool(self._closable())) and now - self._last_commit >= self.cfg.roll_age_s

    # ---- committing ----------------------------------------------------------------------
    def commit(self) -> Manifest | None:
        """Write the buffer as one commit: tmp files, then the manifest (atomic), then renames + _SUCCESS."""
        closable = self._closable()
        if not self._buffer and self.offsets == self.committed_offsets and not closable:
            return None
        seq = self.seq
        if self._dead_producer is not None:  # dead letters must be out before their offsets are committed
            self._dead_producer.flush(30)
        files: list[FileEntry] = []
        for i, ((hour, late), chunks) in enumerate(sorted(self._buffer.items())):
            table = sort_by_time(pa.concat_tables(chunks))
            data = self._parquet_bytes(table, seq)
            tmp = f"{layout.TMP}/{seq:010d}-{self.run_id}-{i}.parquet"
            self._retry(f"write {tmp}", self.fs.write_bytes, tmp, data)
            files.append(FileEntry(tmp, layout.data_file(hour, seq, late), table.num_rows, hour, late))
        late_hours = {h for h, late in self._buffer if late} - self.open_hours
        hours_with_data = self.open_hours | {h for h, late in self._buffer if not late}
        totals = {k: self.totals.get(k, 0) + self._pending[k] for k in self.totals}
        m = Manifest(
            seq=seq, topic=self.topic, offsets=dict(self.offsets),
            from_offsets=dict(self.committed_offsets), watermark_ms=self.watermark_ms,
            partition_max_ms=dict(self.partition_max),
            open_hours=sorted(hours_with_data - closable), files=files,
            success=sorted(closable | late_hours), committed_at_ms=int(time.time() * 1000), totals=totals,
        )
        self._retry(f"publish commit {seq}", self._publish, m)
        self._retry(f"finish commit {seq}", self._roll_forward, m)
        # committed: move the state forward
        self.seq = seq + 1
        self.committed_offsets = dict(m.offsets)
        self.open_hours = set(m.open_hours)
        self.totals = totals
        self.stats.commits += 1
        self.stats.files += len(files)
        self.stats.archived += self._pending["examples"] + self._pending["late"]
        self.stats.late += self._pending["late"]
        M_EXAMPLES.labels(late="false").inc(self._pending["examples"])
        M_EXAMPLES.labels(late="true").inc(self._pending["late"])
        M_COMMITS.inc()
        self._pending = dict.fromkeys(self._pending, 0)
        self._buffer.clear()
        self._buffer_bytes = 0
        self._buffer_since = None
        self._last_commit = time.monotonic()
        log.info("commit %d: %d rows in %d files, %d hours complete, offsets %s", seq,
                 sum(f.rows for f in files), len(files), len(m.success), m.offsets)
        self._retry("prune manifests", self._prune, seq)
        return m

    def _parquet_bytes(self, table: pa.Table, seq: int) -> bytes:
        meta = {b"streamrec.commit": str(seq).encode(), b"streamrec.topic": self.topic.encode(),
                b"streamrec.from_offsets": json.dumps(self.committed_offsets).encode(),
                b"streamrec.offsets": json.dumps(self.offsets).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        buf = io.BytesIO()
        comp = None if self.cfg.compression == "none" else self.cfg.compression
        pq.write_table(table, buf, compression=comp, row_group_size=self.cfg.row_group_rows)
        return buf.getvalue()

    def _publish(self, m: Manifest) -> None:
        final = layout.manifest_file(m.seq)
        if self.fs.exists(final):  # an earlier attempt got through but its answer was lost
            return
        tmp = f"{layout.TMP}/manifest-{m.seq:012d}-{self.run_id}.json"
        self.fs.write_bytes(tmp, m.to_json())
        self.fs.rename(tmp, final)

    def _roll_forward(self, m: Manifest) -> None:
        """Idempotent: move each file of the commit into place, then mark the closed hours."""
        for f in m.files:
            if self.fs.exists(f.path):
                if self.fs.exists(f.tmp):
                    self.fs.delete(f.tmp)
                continue
            if not self.fs.exists(f.tmp):
                raise ArchiveError(f"commit {m.seq}: neither {f.tmp} nor {f.path} exists")
            self.fs.rename(f.tmp, f.path)
        for hour in m.success:
            marker = f"{layout.hour_dir(hour)}/{layout.SUCCESS}"
            if not self.fs.exists(marker):
                self.fs.write_bytes(marker, f'{{"commit": {m.seq}, "watermark_ms": {m.watermark_ms}}}\n'.encode())

    def _prune(self, seq: int) -> None:
        for old in manifest.manifest_seqs(self.fs)[: -self.cfg.keep_manifests]:
            if old < seq:
                self.fs.delete(layout.manifest_file(old))


def read_ids(fs: FileSystem, hour: int) -> set[str]:
    """example_ids committed for one hour (reads only that column)."""
    d = layout.hour_dir(hour)
    ids: set[str] = set()
    for name in fs.list(d):
        if layout.is_data_file(name):
            col = pq.read_table(io.BytesIO(fs.read_bytes(f"{d}/{name}")), columns=["example_id"]).column(0)
            ids.update(col.to_pylist())
    return ids
