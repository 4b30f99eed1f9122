"""A rank's next batch, read and built in small chunks while the rank waits on a collective.

Ranks step in lockstep, so whichever rank finishes a phase first blocks in the next exchange until
the others catch up (and every exchange costs a loopback round trip besides). On a machine with a
core per rank that time is lost: instead, while an exchange is in flight, the rank reads a chunk of
its next batch from its source and does the per-record Python of building it
(``BatchBuilder.add``), polling the exchange between chunks. The rank that is ahead thus does part of
its next step's work, and the ranks balance themselves.

Nothing here changes what is trained or saved: the records are only *read* early. They reach the
dedup filter, the batch and its stream position when ``DistributedTrainer._next`` takes them, so a
snapshot still holds exactly what was trained, and a restore re-reads what was read ahead.
"""

from __future__ import annotations

from typing import Any

from schemas.spec import FeatureSpec
from trainer.batch import BatchBuilder


class Prefetcher:
    """Up to ``batch_size`` records of the next batch, read ahead in chunks of ``chunk`` records."""

    def __init__(self, source: Any, spec: FeatureSpec, batch_size: int, chunk: int) -> None:
        self.source = source
        self.spec = spec
        self.batch_size = batch_size
        self.chunk = chunk
        self.enabled = False  # the loop turns it on only while more of this rank's examples should be read
        self.builder = BatchBuilder(spec)
        self.ingest_ms = 0

    def work(self) -> bool:
        """Read and add one chunk; False when there is nothing to do (off, the batch full, nothing to read)."""
        room = self.batch_size - len(self.builder)
        if not self.enabled or self.chunk <= 0 or room <= 0:
            return False
        records, ingest_ms = self.source.read(min(self.chunk, room), 0.0)
        if not records:
            return False
        self.builder.add(records)
        self.ingest_ms = max(self.ingest_ms, ingest_ms)
        return True

    def take(self) -> tuple[BatchBuilder, int]:
        """What was read ahead (a builder holding up to ``batch_size`` records) and its newest ingest time."""
        out, ingest = self.builder, self.ingest_ms
        self.builder, self.ingest_ms = BatchBuilder(self.spec), 0
        return out, ingest
