"""The demo's expected outcome: a reference join of the very replay it sends, computed in memory.

The joiner's own counters are incremented together (an example and its kind in the same
step), so checking them against each other can hardly fail. The reference is independent of
every stage: ``joiner.memory.MemoryJoin`` fed each event as the replay sends it, with
one global watermark instead of Kafka partitions, RocksDB, splicing or Flink. The join decides
from event times only and the replay keeps its disorder within the allowed lateness, so the
streaming joiner must produce exactly the reference's examples and dead letters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from joiner.config import JoinerConfig
from joiner.core import DictWriter, RequestState, example_id, id_record
from joiner.memory import MemoryJoin
from replay.events import FEATURES, ReplayEvent
from schemas.spec import FeatureSpec


class IdWriter(DictWriter):
    """A join writer that keeps only each example's id (what the checks compare), not its record."""

    def example(self, s: RequestState, item_id: int, kind: str, labels: dict[str, int], sample_rate: float,
                late: bool, join_delay_ms: int) -> str:
        return example_id(s.request_id, item_id, kind)


def ids_digest(ids: Iterable[str]) -> str:
    """sha1 of the sorted ids, one a line: two sets of ids compared without shipping either."""
    h = hashlib.sha1()
    for i in sorted(ids):
        h.update(i.encode() + b"\n")
    return h.hexdigest()


class ReferenceJoin:
    """Observer of the replay (``observe(event)``); ``result()`` once the replay is sent."""

    def __init__(self, cfg: JoinerConfig, spec: FeatureSpec):
        # the replay's logs are valid by construction (the client encodes them, or refuses): no validation
        self.join = MemoryJoin(cfg, spec, IdWriter(), validate=False)

    def observe(self, event: ReplayEvent) -> None:
        log = event.log
        if event.role == FEATURES:
            # the join decides on ids and times only (the embedded engine feeds it the same); whole
            # feature logs kept until the end would double the demo's memory (full MovieLens: +0.5 GB)
            self.join.add_features(id_record(log.request_id, log.ts_ms, [it.item_id for it in log.items]))
        else:
            self.join.add_action(log.record())

    def result(self) -> dict[str, Any]:
        """End of input, then the expected counts and the ids' digest (JSON-ready)."""
        j = self.join
        j.finish()
        ids = set(j.examples)
        if len(ids) != len(j.examples):
            raise AssertionError(f"reference join: {len(j.examples) - len(ids)} duplicate example ids")
        c = j.counts
        return {"examples": len(ids), **{k: c[k] for k in ("positives", "negatives_kept", "negatives_dropped",
                                                           "late")},
                "dead_letters": dict(j.dead_reasons), "ids_sha1": ids_digest(ids)}
