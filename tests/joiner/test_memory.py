"""Bounded memory: with a cache limit, RSS stays flat over a long synthetic replay (real rocksdict)."""

from __future__ import annotations

import gc
from pathlib import Path

import psutil
import pytest

from jobs.replay import encode_events
from joiner.config import JoinerConfig
from joiner.engine import JoinEngine
from joiner.store import StateStore
from replay.config import ReplayConfig
from replay.events import build_events
from tests.joiner.conftest import SPEC, Msg


@pytest.mark.slow
def test_rss_stays_bounded_with_a_cache_limit(tmp_path: Path) -> None:
    events = build_events(ReplayConfig(limit=12_000, seed=3), "synthetic")
    msgs = [("f" if e.role == "features" else "a", e.key.encode(), v)
            for e, v in zip(events, encode_events(events, SPEC), strict=True)]
    del events
    gc.collect()
    cache = 8 << 20
    # long TTL: every state stays in RocksDB for the whole replay; only the cache is bounded
    cfg = JoinerConfig(window_ms=2000, allowed_lateness_ms=500, cache_bytes=cache, rocksdb_write_buffer_mb=8,
                       negative_keep_rate=0.5)
    store = StateStore.open(cfg, tmp_path / "state")
    eng = JoinEngine(cfg, SPEC, store, "f", "a")
    eng.restore([("f", 0), ("a", 0)])
    proc = psutil.Process()
    rss = []
    marks = {len(msgs) * k // 8 for k in range(2, 9)}
    off = {"f": 0, "a": 0}
    batch = []
    for n, (topic, key, value) in enumerate(msgs, 1):
        batch.append(Msg(topic, 0, off[topic], key, value))
        off[topic] += 1
        if n % 2000 == 0:  # as the runner: a consumed batch, then the timers
            eng.process_batch(batch, None)
            batch = []
            eng.advance()
            eng.take_output()
        if n % 20_000 == 0 or n in marks:
            eng.process_batch(batch, None)
            batch = []
            eng.checkpoint()
            gc.freeze()  # as the runner does after each checkpoint
        if n in marks:
            rss.append(proc.memory_info().rss)
            assert store.cached_bytes <= cache
    states = sum(1 for _ in store.db.keys())  # noqa: SIM118 (rocksdict: iterating the Rdict itself fails in raw mode)
    evicted = store.evictions
    live = store.size_bytes()
    store.close()
    gc.unfreeze()
    growth = max(rss) - rss[0]
    print(f"\nRSS MB at 2/8..8/8: {[round(r / 2**20) for r in rss]}; {states} states, RocksDB ~{live / 2**20:.0f} MB")
    assert states > 10_000 and evicted > 5000  # far more state than the cache can hold ...
    assert growth < 48 << 20, f"RSS grew {growth / 2**20:.0f} MB"  # ... yet memory stays flat
