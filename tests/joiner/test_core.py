"""Unit tests of the join rules (joiner/core.py): pure logic, no I/O."""

from __future__ import annotations

from typing import Any

from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MIN, Joiner, RequestState, Step, example_id, keep_hash
from tests.joiner.conftest import SPEC, action, feature_log


class Driver:
    """A minimal runtime: one dict of states, watermark = max ts - lateness - 1."""

    def __init__(self, cfg: JoinerConfig):
        self.j = Joiner(cfg, SPEC)
        self.cfg = cfg
        self.states: dict[str, RequestState] = {}
        self.max_ts = WATERMARK_MIN
        self.examples: list[dict[str, Any]] = []
        self.dead: list[tuple[str, dict[str, Any]]] = []

    @property
    def wm(self) -> int:
        return WATERMARK_MIN if self.max_ts == WATERMARK_MIN else self.max_ts - self.cfg.allowed_lateness_ms - 1

    def _take(self, rid: str, step: Step) -> None:
        if step.state is None:
            self.states.pop(rid, None)
        else:
            # round-trip through bytes every time: state must survive serialization exactly
            self.states[rid] = RequestState.from_bytes(step.state.to_bytes())
        self.examples += step.examples
        self.dead += [(d.reason, d.record) for d in step.dead_letters]

    def feed(self, rec: dict[str, Any]) -> None:
        self.max_ts = max(self.max_ts, rec["ts_ms"])
        rid = rec["request_id"]
        on = self.j.on_features if "items" in rec else self.j.on_action
        self._take(rid, on(self.states.get(rid), rec, self.wm))
        self.tick()

    def tick(self, wm: int | None = None) -> None:
        w = self.wm if wm is None else wm
        for rid in list(self.states):
            self._take(rid, self.j.on_timer(self.states[rid], w))

    def by_kind(self) -> dict[tuple[int, str], dict[str, Any]]:
        return {(e["item_id"], e["kind"]): e for e in self.examples}


def cfg(**kw: Any) -> JoinerConfig:
    base = dict(window_ms=1000, allowed_lateness_ms=500, ttl_ms=10_000, tombstone_ms=5000,
                negative_keep_rate=1.0, seed=3)
    return JoinerConfig(**{**base, **kw})


def test_window_labels_multitask_and_duplicates_count_once() -> None:
    d = Driver(cfg())
    d.feed(feature_log("r1", 0, [10, 11, 12]))
    for rec in [action("r1", 10, "impression", 100), action("r1", 10, "click", 200),
                action("r1", 10, "click", 200), action("r1", 10, "like", 300), action("r1", 11, "click", 999)]:
        d.feed(rec)
    assert d.examples == []  # window (1000 ms) not closed yet
    d.tick(wm=1000)
    ex = d.by_kind()
    assert set(ex) == {(10, "window"), (11, "window"), (12, "window")}
    assert ex[(10, "window")]["labels"] == {"click": 1, "like": 1}  # every label of the spec, in its order
    assert ex[(11, "window")]["labels"]["click"] == 1 and ex[(11, "window")]["labels"]["like"] == 0
    assert ex[(12, "window")]["labels"] == dict.fromkeys(SPEC.labels, 0)
    assert ex[(10, "window")]["sample_rate"] == 1.0
    assert "impression" not in ex[(10, "window")]["labels"]
    e = ex[(10, "window")]
    assert e["example_id"] == example_id("r1", 10, "window")
    assert e["ts_ms"] == 0 and e["join_delay_ms"] == 1000 and e["late"] is False
    assert set(e["sparse"]) == {"user_id", "age", "item_id"} and set(e["dense"]) == {"user_activity", "item_popularity"}
    d.tick(wm=5000)
    assert len(d.examples) == 3  # emitted once


def test_late_positive_after_window_and_dedup_against_window() -> None:
    d = Driver(cfg())
    d.feed(feature_log("r1", 0, [10, 11]))
    d.feed(action("r1", 10, "click", 500))
    d.feed(action("r1", 11, "click", 2500))   # after the window: late
    d.feed(action("r1", 10, "click", 3000))   # same (item, action) as a window label: no late example
    d.feed(action("r1", 11, "like", 4000))    # a second late action type: its own late example
    d.feed(action("r1", 11, "click", 4100))   # duplicate late click: nothing new
    d.tick(wm=9000)
    ex = d.by_kind()
    assert set(ex) == {(10, "window"), (11, "window"), (11, "late-click"), (11, "late-like")}
    late = ex[(11, "late-click")]
    assert late["late"] is True and late["labels"] == {"click": 1} and late["join_delay_ms"] == 2500
    assert ex[(11, "window")]["labels"]["click"] == 0


def test_negative_sampling_is_deterministic_and_near_rate() -> None:
    r = 0.3
    kept = [keep_hash(5, f"req{i}", 7) < r for i in range(20_000)]
    assert abs(sum(kept) / len(kept) - r) < 0.02
    assert kept == [keep_hash(5, f"req{i}", 7) < r for i in range(20_000)]
    assert [keep_hash(6, f"req{i}", 7) < r for i in range(200)] != kept[:200]  # the seed matters

    d = Driver(cfg(negative_keep_rate=r, seed=5))
    items = list(range(100, 140))
    d.feed(feature_log("q", 0, items))
    d.tick(wm=2000)
    want = {i for i in items if keep_hash(5, "q", i) < r}
    assert {e["item_id"] for e in d.examples} == want
    assert all(e["sample_rate"] == r for e in d.examples)  # float32 in Avro; exact here


def test_early_actions_wait_for_features_and_orphans_dead_letter() -> None:
    d = Driver(cfg(action_wait_ms=3000))
    d.feed(action("r1", 10, "click", 50))     # before its feature log
    d.feed(action("zz", 1, "click", 60))      # never gets features
    d.feed(feature_log("r1", 0, [10, 11]))
    d.tick(wm=2000)
    assert d.by_kind()[(10, "window")]["labels"]["click"] == 1
    assert d.dead == []
    d.tick(wm=3060)
    assert [(r, rec["request_id"]) for r, rec in d.dead] == [("no_features", "zz")]
    assert "zz" not in d.states


def test_expiry_tombstone_and_expired_reasons() -> None:
    d = Driver(cfg())
    d.feed(feature_log("r1", 0, [10]))
    d.feed(action("r1", 10, "click", 10_001))  # after the TTL (10 s): expired
    d.tick(wm=10_000)
    assert d.states["r1"].expired and d.states["r1"].features is None
    d.feed(action("r1", 10, "like", 9_000))    # meets the tombstone
    d.feed(action("r1", 99, "click", 500))     # doesn't matter: tombstone
    assert [r for r, _ in d.dead] == ["expired", "expired", "expired"]
    d.tick(wm=15_000)
    assert "r1" not in d.states                # tombstone gone after tombstone_ms
    d.max_ts = 12_000
    d.feed(feature_log("r2", 0, [1]))          # arrives when the watermark is past its TTL
    assert d.dead[-1][0] == "expired" and d.states["r2"].expired


def test_unknown_item_and_conflicting_features() -> None:
    d = Driver(cfg())
    d.feed(feature_log("r1", 0, [10]))
    d.feed(action("r1", 77, "click", 100))
    d.feed(feature_log("r1", 0, [10]))          # identical duplicate: ignored
    d.feed(feature_log("r1", 5, [10, 11]))      # different: dead letter
    assert [r for r, _ in d.dead] == ["unknown_item", "conflicting_features"]


def test_state_bytes_round_trip_and_timer() -> None:
    j = Joiner(cfg(), SPEC)
    step = j.on_features(None, feature_log("r1", 1000, [1, 2, 3]), WATERMARK_MIN)
    step = j.on_action(step.state, action("r1", 2, "click", 1500), WATERMARK_MIN)
    step = j.on_action(step.state, action("r1", 3, "click", 2500), WATERMARK_MIN)
    assert step.timer == 2000  # the window closes first
    b = step.state.to_bytes()
    s2 = RequestState.from_bytes(b)
    assert s2.to_bytes() == b
    assert (s2.win, s2.late, s2.ts) == ({(2, "click")}, {(3, "click"): 2500}, 1000)
    assert j.next_timer(s2) == 2000
    step = j.on_timer(s2, 2000)
    assert [e["kind"] for e in step.examples] == ["window"] * 3 and step.timer == 2500


def test_state_read_back_decodes_its_feature_log_only_when_an_example_needs_it() -> None:
    j = Joiner(cfg(), SPEC)
    rec = feature_log("r1", 1000, [1, 2])
    s = RequestState.from_bytes(j.on_features(None, rec, WATERMARK_MIN).state.to_bytes())
    assert s.features == {"request_id": "r1", "ts_ms": 1000, "item_ids": [1, 2]}
    assert s.record() == rec and s.features == rec  # decoded once, kept
    # a state saved by the first format (no item ids beside the Avro body) still reads
    import io
    import pickle

    import fastavro

    from joiner.core import _FEATURE_SCHEMA

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _FEATURE_SCHEMA, rec)
    v1 = b"\x01" + pickle.dumps(("r1", buf.getvalue(), 1000, [], {(2, "click")}, {}, set(), False, False))
    old = RequestState.from_bytes(v1)
    assert old.features == rec and old.win == {(2, "click")}
    assert [e["labels"]["click"] for e in j.on_timer(old, 2000).examples] == [0, 1]
