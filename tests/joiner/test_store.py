"""The state store's layout on disk (real rocksdict): feature logs written once, states read back."""

from __future__ import annotations

from pathlib import Path

from joiner.config import JoinerConfig
from joiner.core import WATERMARK_MIN, Joiner, RequestState
from joiner.store import StateStore
from tests.joiner.conftest import SPEC, action, feature_log


def _state(j: Joiner) -> RequestState:
    step = j.on_features(None, feature_log("r1", 1000, [1, 2, 3]), WATERMARK_MIN)
    return j.on_action(step.state, action("r1", 2, "click", 1500), WATERMARK_MIN).state


def test_parts_round_trip_and_the_mutable_part_is_small() -> None:
    j = Joiner(JoinerConfig(window_ms=1000), SPEC)
    s = _state(j)
    small, fpart = s.to_parts()
    assert fpart is not None and len(small) < 120 < len(fpart)
    back = RequestState.from_parts(small, fpart)
    assert back.to_bytes() == s.to_bytes()
    assert RequestState.from_parts(s.to_bytes(), None).to_bytes() == s.to_bytes()  # older format still reads
    s.features, s.expired = None, True
    small, fpart = s.to_parts()
    assert fpart is None and RequestState.from_parts(small, None).expired


def test_the_feature_part_is_written_once_and_deleted_with_the_state(tmp_path: Path) -> None:
    j = Joiner(JoinerConfig(window_ms=1000), SPEC)
    store = StateStore(tmp_path, cache_bytes=1 << 20)
    s = _state(j)
    e = store.put("r1", s, 2000, None, 100)
    store.checkpoint({})
    k = b"r1"
    first = store._features.get(k)
    assert first is not None and e.fsaved
    step = j.on_timer(s, 2000)  # the window closes: the state changes, its feature log does not
    assert len(step.examples) == 3
    store.put("r1", step.state, step.timer, e)
    wb_size = len(store.db.get(k))
    store.checkpoint({})
    assert store._features.get(k) == first and len(store.db.get(k)) == wb_size < 120
    store.close()

    store = StateStore(tmp_path, cache_bytes=1 << 20)  # read back from RocksDB
    e = store.get("r1")
    assert e is not None and e.fsaved and e.state.window_done and e.state.to_bytes() == step.state.to_bytes()
    store.put("r1", None, None, e)
    store.checkpoint({})
    assert store.db.get(k) is None and store._features.get(k) is None
    store.close()


def test_a_state_saved_whole_by_an_older_version_is_read_and_migrated(tmp_path: Path) -> None:
    j = Joiner(JoinerConfig(window_ms=1000), SPEC)
    s = _state(j)
    store = StateStore(tmp_path, cache_bytes=1 << 20)
    store.db[b"r1"] = (2000).to_bytes(8, "big") + s.to_bytes()  # timer + the v2 state, as before
    e = store.get("r1")
    assert e is not None and not e.fsaved and e.state.win == {(2, "click")}
    store.put("r1", e.state, e.timer, e)
    store.checkpoint({})
    assert e.fsaved and store._features.get(b"r1") is not None and len(store.db.get(b"r1")) < 120
    store.close()
