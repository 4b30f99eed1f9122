"""The embedded join runtime on real rocksdict: order independence, RocksDB fallback, TTL."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joiner.config import JoinerConfig
from joiner.engine import JoinEngine
from joiner.store import StateStore
from schemas.codec import default_codec
from tests.joiner.conftest import SPEC, action, feature_log

codec = default_codec()
F, A = "f", "a"


def make_engine(path: Path, cfg: JoinerConfig) -> JoinEngine:
    store = StateStore.open(cfg, path)
    eng = JoinEngine(cfg, SPEC, store, F, A)
    eng.restore([(F, 0), (A, 0)])
    return eng


def feed(eng: JoinEngine, recs: list[dict[str, Any]], checkpoint_every: int = 0) -> None:
    off = Counter()
    for n, rec in enumerate(recs):
        topic, name = (F, "FeatureLog") if "items" in rec else (A, "ActionLog")
        eng.process(topic, 0, off[topic], rec["request_id"].encode(), codec.encode(name, rec))
        off[topic] += 1
        eng.advance()
        if checkpoint_every and n % checkpoint_every == 0:
            eng.checkpoint()


def outputs(eng: JoinEngine) -> tuple[Counter, Counter]:
    ex, dead = eng.take_output()
    exs = Counter(json.dumps(codec.decode(v)[1], sort_keys=True) for _, v in ex)
    dls = Counter()
    for _, v in dead:
        r = codec.decode(v)[1]
        dls[(r["reason"], r["key"], r["payload"])] += 1
    return exs, dls


CFG = dict(window_ms=1000, allowed_lateness_ms=500, ttl_ms=10_000, tombstone_ms=3000,
           action_wait_ms=4000, negative_keep_rate=0.5, seed=11)


@st.composite
def scenario(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for r in range(draw(st.integers(1, 4))):
        rid = f"r{r}"
        f_ts = draw(st.integers(0, 6000))
        items = [100 + r * 10 + k for k in range(3)]
        if draw(st.booleans()) or r == 0:
            events.append(feature_log(rid, f_ts, items))
        for _ in range(draw(st.integers(0, 6))):
            item = draw(st.sampled_from(items + [999]))
            kind = draw(st.sampled_from(["impression", "click", "click", "like"]))
            a = action(rid, item, kind, f_ts + draw(st.integers(0, 12_000)))
            events.append(a)
            if draw(st.integers(0, 4)) == 0:
                events.append(dict(a))  # at-least-once duplicate
    return events


def arrival(events: list[dict[str, Any]], jitter: list[int], lateness: int) -> list[dict[str, Any]]:
    """Any order in which no event comes more than ``lateness`` after a later event time."""
    keyed = [(e["ts_ms"] + min(j, lateness), n, e) for n, (e, j) in enumerate(zip(events, jitter, strict=False))]
    return [e for _, _, e in sorted(keyed)]


def run(events: list[dict[str, Any]], cfg: JoinerConfig, checkpoint_every: int) -> tuple[Counter, Counter]:
    end = max(e["ts_ms"] for e in events) + cfg.window_ms + cfg.allowed_lateness_ms + 2
    with tempfile.TemporaryDirectory() as d:
        eng = make_engine(Path(d), cfg)
        feed(eng, [*events, feature_log("zz-end", end, [1])], checkpoint_every)
        eng.checkpoint()
        out = outputs(eng)
        eng.store.close()
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=scenario(), data=st.data())
def test_any_interleaving_within_lateness_gives_the_same_examples(events: list[dict[str, Any]],
                                                                  data: st.DataObject) -> None:
    cfg = JoinerConfig(**CFG, cache_bytes=1)  # a cache of one entry: state goes through RocksDB
    in_time = sorted(events, key=lambda e: e["ts_ms"])
    jitter = data.draw(st.lists(st.integers(0, 500), min_size=len(events), max_size=len(events)))
    shuffled = arrival(events, jitter, cfg.allowed_lateness_ms)
    want = run(in_time, cfg, checkpoint_every=0)
    got = run(shuffled, JoinerConfig(**CFG), checkpoint_every=data.draw(st.integers(1, 5)))
    assert got == want


def test_days_late_action_joins_from_rocksdb_then_expires(tmp_path: Path) -> None:
    day = 86_400_000
    cfg = JoinerConfig(window_ms=300_000, allowed_lateness_ms=60_000, ttl_ms=3 * day, tombstone_ms=day,
                       negative_keep_rate=1.0, cache_bytes=20_000)  # room for a handful of states
    eng = make_engine(tmp_path / "state", cfg)
    recs = [feature_log("old", 0, [1, 2])]
    # 300 other requests over two days push "old" out of the cache
    recs += [feature_log(f"n{i}", 1000 + i * 600_000, [5]) for i in range(300)]
    feed(eng, recs, checkpoint_every=50)
    eng.checkpoint()
    assert "old" not in eng.store.cache
    misses = eng.store.misses
    feed(eng, [action("old", 2, "click", 2 * day)])  # two days late, within the 3-day TTL
    assert eng.store.misses > misses  # came from RocksDB
    # advance the watermark past the click: it is the minimum over both topics' partitions
    feed(eng, [feature_log("tick", 2 * day + 120_000, [9]), action("tick", 9, "impression", 2 * day + 120_000)])
    ex, _ = outputs(eng)
    late = [json.loads(e) for e in ex if json.loads(e)["request_id"] == "old" and json.loads(e)["late"]]
    assert [(e["item_id"], e["kind"], e["labels"]) for e in late] == [(2, "late-click", {"click": 1})]
    assert late[0]["join_delay_ms"] == 2 * day and late[0]["sparse"]["item_id"]

    # past the TTL: the state is a tombstone and the next action is dead-lettered 'expired'
    feed(eng, [feature_log("tick2", 3 * day + 120_000, [9]), action("tick2", 9, "impression", 3 * day + 120_000)])
    feed(eng, [action("old", 1, "like", 3 * day + 130_000)])
    ex, dead = outputs(eng)
    reasons = [(r, k) for (r, k, _), n in dead.items()]
    assert ("expired", b"old") in reasons
    assert not any(json.loads(e)["request_id"] == "old" for e in ex)
    eng.checkpoint()
    assert len(eng.store.db[b"old"]) < 200  # only a small tombstone is left
    eng.store.close()


def test_state_and_offsets_survive_reopen(tmp_path: Path) -> None:
    cfg = JoinerConfig(**CFG)
    eng = make_engine(tmp_path / "s", cfg)
    feed(eng, [feature_log("r", 0, [1, 2]), action("r", 1, "click", 10)])
    eng.checkpoint()
    eng.store.close()
    eng2 = make_engine(tmp_path / "s", cfg)
    assert eng2.offsets == {(F, 0): 1, (A, 0): 1}
    entry = eng2.store.get("r")
    assert entry is not None and entry.state.win == {(1, "click")} and entry.timer == 1000
    eng2.store.close()


def test_drain_closes_every_window_and_fires_every_timer(tmp_path: Path) -> None:
    """End of input: every shown item gets its window outcome, waiting actions become dead letters,
    even when the timers sit in RocksDB and the sweep takes several calls."""
    cfg = JoinerConfig(**{**CFG, "negative_keep_rate": 1.0}, cache_bytes=1, sweep_limit=3)
    eng = make_engine(tmp_path / "s", cfg)
    recs = [feature_log(f"r{i}", 100 * i, [1, 2]) for i in range(10)]
    recs += [action("r9", 1, "click", 950), action("orphan", 5, "click", 990)]
    feed(eng, recs, checkpoint_every=2)  # timers go to RocksDB's index
    before, _ = outputs(eng)
    assert len(before) < 20  # the last windows are still open at the streaming watermark
    rounds = 0
    while eng.drain():
        rounds += 1
    ex, dead = outputs(eng)
    assert rounds > 1  # bounded sweep: more than one call
    got = [json.loads(e) for e in [*before, *ex]]
    assert sorted((e["request_id"], e["item_id"]) for e in got) == sorted(
        (f"r{i}", item) for i in range(10) for item in (1, 2))
    assert [e["labels"]["click"] for e in got if e["request_id"] == "r9" and e["item_id"] == 1] == [1]
    assert [(r, k) for (r, k, _) in dead] == [("no_features", b"orphan")]
    eng.checkpoint()
    assert b"orphan" not in eng.store.db  # nothing left waiting
    eng.store.close()
