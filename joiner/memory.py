"""The join in memory, one event at a time: the reference the streaming runtimes are checked against.

For the demo's reference join (fed as the replay streams), tests, and examples for the trainer
without Kafka (``jobs.replay_examples``). The records are exactly what the joiner would produce
from the same events (same rules, same validation, same example ids), in emission order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MAX, WATERMARK_MIN, Joiner, Step
from joiner.validate import Validator, Verdict
from schemas.spec import FeatureSpec


class MemoryJoin:
    """The join core driven in memory, one event at a time (``add_features`` / ``add_action``), then ``finish``.

    One global watermark, ``max event time seen - allowed_lateness_ms - 1``, and every timer due
    at it fired after each event; ``finish`` is the end of input (watermark at its maximum,
    every timer fired), as the embedded runner's drain and a bounded Flink source do. The join
    decides from event times only, so within the allowed lateness this gives what the streaming
    runtimes give, whatever their partitioning and per-partition watermarks.

    Collects the writer's examples (``examples``, emission order), the counts of ``Step``
    (positives, negatives_kept, negatives_dropped, late), dead letters by reason and features or
    actions dropped as unknown. ``validate=False``: the caller's input is valid by construction
    (logs the client encoded), and feature logs may be ``id_record``s (what the join rules read)
    for a writer that needs no features (the demo's, which keeps example ids).
    """

    def __init__(self, cfg: JoinerConfig, spec: FeatureSpec, writer: Any = None, validate: bool = True):
        self.joiner = Joiner(cfg, spec, writer)
        self.validator = Validator(spec) if validate else None
        self.lateness = cfg.allowed_lateness_ms
        self.states: dict[str, Any] = {}
        self.timers: list[tuple[int, str]] = []
        self.max_ts = WATERMARK_MIN
        self.examples: list[Any] = []
        self.counts: Counter[str] = Counter()
        self.dead_reasons: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def add_features(self, rec: dict[str, Any]) -> None:
        """One FeatureLog record, validated as the runtimes do."""
        if self.validator is not None:
            rec = self._valid(self.validator.features(rec))
        if rec is not None:
            self._event(rec, True)

    def add_action(self, rec: dict[str, Any]) -> None:
        """One ActionLog record, validated as the runtimes do."""
        if self.validator is not None:
            rec = self._valid(self.validator.action(rec))
        if rec is not None:
            self._event(rec, False)

    def _valid(self, v: Verdict) -> dict[str, Any] | None:
        if v.reason:
            self.dead_reasons[v.reason] += 1
        self.dropped.update(v.dropped)
        return v.record

    def _event(self, rec: dict[str, Any], features: bool) -> None:
        self.max_ts = max(self.max_ts, rec["ts_ms"])
        wm = self.max_ts - self.lateness - 1
        key = rec["request_id"]
        st = self.states.get(key)
        j = self.joiner
        self._apply(key, j.on_features(st, rec, wm) if features else j.on_action(st, rec, wm))
        self._fire(wm)

    def finish(self) -> None:
        """End of input: every window closes, waiting actions and states expire."""
        self._fire(WATERMARK_MAX)

    def _fire(self, wm: int) -> None:
        timers = self.timers
        while timers and timers[0][0] <= wm:
            _, key = heapq.heappop(timers)
            st = self.states.get(key)
            if st is not None:
                self._apply(key, self.joiner.on_timer(st, wm))

    def _apply(self, key: str, step: Step) -> None:
        self.examples.extend(step.examples)
        c = self.counts
        c["positives"] += step.positives
        c["negatives_kept"] += step.negatives_kept
        c["negatives_dropped"] += step.negatives_dropped
        c["late"] += step.late
        for d in step.dead_letters:
            self.dead_reasons[d.reason] += 1
        if step.state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = step.state
        if step.timer is not None and step.changed:  # unchanged: that timer is in the heap already
            heapq.heappush(self.timers, (step.timer, key))
