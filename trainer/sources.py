"""Where the trainer reads TrainingExample records: memory, the examples topic, the archive.

Each source reports a JSON-able position "just after what was returned", which snapshots store
and ``seek`` resumes from. Kafka (confluent-kafka) and the archive reader are imported lazily so
the trainer core stays engine-agnostic.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from schemas.codec import DecodeError, default_codec
from trainer import metrics

log = logging.getLogger(__name__)


class MemorySource:
    """Records held in a list (tests, benchmarks); position = index of the next record."""

    def __init__(self, records: Sequence[dict[str, Any]], name: str = "memory",
                 ingest_ms: Sequence[int] | None = None) -> None:
        self.records = records
        self.name = name
        self.ingest_ms = ingest_ms
        self.i = 0

    def read(self, max_records: int, timeout_s: float) -> tuple[list[dict[str, Any]], int]:
        out = list(self.records[self.i:self.i + max_records])
        j = self.i + len(out)
        ingest = int(max(self.ingest_ms[self.i:j])) if self.ingest_ms is not None and out else int(
            time.time() * 1000)
        self.i = j
        return out, ingest

    def position(self) -> int:
        return self.i

    def seek(self, position: int) -> None:
        self.i = int(position)

    @property
    def exhausted(self) -> bool:
        return self.i >= len(self.records)

    def close(self) -> None:
        pass


class KafkaSource:
    """The examples topic, every partition assigned explicitly (no group-join delay).

    Position = next offset per partition (``"topic:partition" -> offset``). Offsets are also
    committed to ``consumer_group`` after each snapshot, for monitoring lag; the snapshot's
    own offsets are what a restore resumes from.
    """

    def __init__(self, kafka_cfg: Any, topic: str, group: str, start: str = "earliest",
                 rank: int = 0, world: int = 1) -> None:
        """``rank`` of ``world``: read only partitions ``p`` with ``p % world == rank`` (a distributed trainer)."""
        from streamrec import kafka

        self.name = f"kafka:{topic}"
        self.topic = topic
        self.start = start
        self._kafka = kafka
        kafka.check_access(kafka_cfg)  # a refused login fails here, in one line
        self.consumer = kafka.consumer(kafka_cfg, group=group, **{"auto.offset.reset": start})
        self.partitions = own_partitions(kafka.partitions_of(self.consumer, topic), rank, world)
        if not self.partitions:
            log.warning("rank %d of %d has no partition of %s: it only serves its table shard", rank, world, topic)
        self.offsets: dict[str, int] = {}
        self.counts: Counter[str] = Counter()  # records returned per "topic:partition" since the last take
        self._assigned = False
        self.codec = default_codec()
        self.undecodable = 0

    def _assign(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        default = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
        tps = [TopicPartition(self.topic, p, self.offsets.get(f"{self.topic}:{p}", default))
               for p in self.partitions]
        self.consumer.assign(tps)
        self._assigned = True

    def seek(self, position: dict[str, int]) -> None:
        """Resume at ``position``; a position that names other partitions too (the union of every
        rank's, after a re-shard) is fine: only this source's partitions are taken from it."""
        self.offsets = {k: int(v) for k, v in position.items()
                        if k.rsplit(":", 1)[0] == self.topic and int(k.rsplit(":", 1)[1]) in self.partitions}
        if self._assigned:
            self._assign()

    def read(self, max_records: int, timeout_s: float) -> tuple[list[dict[str, Any]], int]:
        if not self._assigned:
            self._assign()
        msgs = self.consumer.consume(max_records, timeout=timeout_s)
        out, ingest = [], 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == self._kafka.KafkaError._PARTITION_EOF:
                    continue
                raise self._kafka.KafkaException(err)
            self.offsets[f"{m.topic()}:{m.partition()}"] = m.offset() + 1
            try:
                _, rec = self.codec.decode(m.value(), expect="TrainingExample")
            except DecodeError as e:  # the joiner dead-letters bad input; here only count it
                self.undecodable += 1
                metrics.UNDECODABLE.inc()
                log.warning("undecodable message at %s:%d@%d: %s", m.topic(), m.partition(), m.offset(), e)
                continue
            out.append(rec)
            self.counts[f"{m.topic()}:{m.partition()}"] += 1
            ingest = max(ingest, m.timestamp()[1])
        return out, ingest

    def take_counts(self) -> Counter[str]:
        """Records returned per partition since the last call (the proof that no partition is read twice)."""
        got, self.counts = self.counts, Counter()
        return got

    def position(self) -> dict[str, int]:
        return dict(self.offsets)

    def commit(self) -> None:
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), v) for k, v in self.offsets.items()]
        if tps:
            self.consumer.commit(offsets=tps, asynchronous=True)

    @property
    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        self.consumer.close()


class ArchiveSource:
    """An hour range of the archive (local dir or HDFS), hour by hour, rows in event-time order.

    Position = ``{"hour": h, "row": r}``: the next row of hour ``h`` (hours before ``h`` are done).
    An hour's row order is deterministic (sorted by ``ts_ms``, ``example_id``), so a restore
    reads exactly the rows the snapshot had not trained on.
    """

    def __init__(self, reader: Any, start: Any = None, end: Any = None, rank: int = 0, world: int = 1) -> None:
        """``rank`` of ``world``: only every world-th row of each hour, from row ``rank`` (rows are
        ordered deterministically, so the ranks' rows partition each hour); positions count those rows."""
        self.name = "archive"
        self.reader = reader
        self.rank, self.world = rank, world
        self.hours: list[int] = reader.hours(start, end)
        self.hi = 0  # index into self.hours
        self.row = 0
        self._table: Any = None
        self._table_hour: int | None = None

    def _current(self) -> Any:
        h = self.hours[self.hi]
        if self._table_hour != h:
            table = self.reader.read_hour(h)
            if self.world > 1:
                table = table.take(list(range(self.rank, table.num_rows, self.world)))
            self._table = table
            self._table_hour = h
        return self._table

    def read(self, max_records: int, timeout_s: float) -> tuple[list[dict[str, Any]], int]:
        from sinks.table import to_records

        while self.hi < len(self.hours):
            table = self._current()
            if self.row < table.num_rows:
                part = table.slice(self.row, max_records)
                self.row += part.num_rows
                return to_records(part), int(time.time() * 1000)
            self.hi += 1
            self.row = 0
        return [], 0

    def position(self) -> dict[str, int]:
        if self.hi < len(self.hours):
            return {"hour": self.hours[self.hi], "row": self.row}
        return {"hour": (self.hours[-1] + 1) if self.hours else 0, "row": 0}

    def seek(self, position: dict[str, int]) -> None:
        hour, row = int(position["hour"]), int(position["row"])
        self.hi = next((i for i, h in enumerate(self.hours) if h >= hour), len(self.hours))
        self.row = row if self.hi < len(self.hours) and self.hours[self.hi] == hour else 0

    @property
    def exhausted(self) -> bool:
        return self.hi >= len(self.hours)

    def close(self) -> None:
        self._table = None


def own_partitions(partitions: list[int], rank: int, world: int) -> list[int]:
    """The partitions rank ``rank`` of ``world`` reads: every world-th one, so each is read by one rank."""
    return [p for p in partitions if p % world == rank]


def parse_range(text: str) -> tuple[str | None, str | None]:
    """``FROM..TO`` (either side may be empty) -> (from, to); a single hour/date means just that."""
    if ".." not in text:
        raise ValueError(f"--batch wants FROM..TO (e.g. 2026-11-24T00..2026-11-24T06), got {text!r}")
    a, b = text.split("..", 1)
    return (a.strip() or None), (b.strip() or None)
