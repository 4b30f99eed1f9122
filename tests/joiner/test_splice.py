"""The spliced examples (joiner/splice.py) decode to exactly the dict path's records."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from jobs.replay import encode_events
from joiner.config import JoinerConfig
from joiner.core import DictWriter, RequestState, shown_ids
from joiner.engine import JoinEngine
from joiner.splice import SpliceWriter
from joiner.store import StateStore
from replay import build_events
from replay.config import ReplayConfig
from schemas.codec import DecodeError, default_codec
from schemas.fid import fid
from tests.joiner.conftest import action, feature_log

codec = default_codec()


def run(tmp: Path, msgs: list[tuple[str, bytes, bytes]], splice: bool) -> tuple[list[dict], Counter]:
    cfg = JoinerConfig(window_ms=2000, allowed_lateness_ms=20_000, negative_keep_rate=0.5)
    eng = JoinEngine(cfg, StateStore.open(cfg, tmp), "f", "a", splice=splice)
    eng.restore([("f", 0), ("a", 0)])
    off = Counter()
    for topic, key, value in msgs:
        eng.process(topic, 0, off[topic], key, value)
        off[topic] += 1
        if off[topic] % 500 == 0:
            eng.advance()
    eng.advance()
    ex, dead = eng.take_output()
    eng.store.close()
    return [codec.decode(v)[1] for _, v in ex], Counter(codec.decode(v)[1]["reason"] for _, v in dead)


def msgs_of(recs: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    out = []
    for r in recs:
        name = "FeatureLog" if "items" in r else "ActionLog"
        out.append(("f" if name == "FeatureLog" else "a", r["request_id"].encode(), codec.encode(name, r)))
    return out


def test_splice_equals_dict_path_on_the_movielens_replay(tmp_path: Path) -> None:
    events = build_events(ReplayConfig(limit=1500), "movielens")
    msgs = [("f" if e.role == "features" else "a", e.key.encode(), v)
            for e, v in zip(events, encode_events(events), strict=True)]
    got, dead_s = run(tmp_path / "s", msgs, splice=True)
    want, dead_d = run(tmp_path / "d", msgs, splice=False)
    assert len(got) > 1000
    assert got == want  # same records in the same order
    assert dead_s == dead_d


def test_splice_handles_overlapping_slots_empty_maps_and_late_examples(tmp_path: Path) -> None:
    overlap = feature_log("o", 0, [1, 2])
    overlap["items"][0]["sparse"]["age"] = [fid("age", 99)]  # a user slot name on an item: FIDs concatenate
    empty = feature_log("e", 0, [3])
    empty["user_sparse"], empty["user_dense"], empty["items"][0]["sparse"], empty["items"][0]["dense"] = {}, {}, {}, {}
    recs = [overlap, empty, action("o", 1, "click", 10), action("e", 3, "like", 4000),
            feature_log("end", 30_000, [1]), action("end", 1, "impression", 30_000)]
    got, _ = run(tmp_path / "s", msgs_of(recs), splice=True)
    want, _ = run(tmp_path / "d", msgs_of(recs), splice=False)
    assert got == want
    o1 = next(e for e in got if e["request_id"] == "o" and e["item_id"] == 1)
    assert o1["sparse"]["age"] == [fid("age", 30), fid("age", 99)]
    assert any(e["request_id"] == "e" and e["kind"] == "late-like" for e in got)


def test_corrupt_feature_logs_get_the_codecs_verdict(tmp_path: Path) -> None:
    """Bit flips, cuts and junk: the scanner never crashes and never accepts what the codec rejects."""
    rng = random.Random(5)
    cfg = JoinerConfig(negative_keep_rate=1.0)
    eng = JoinEngine(cfg, StateStore.open(cfg, tmp_path / "s"), "f", "a")
    writer: SpliceWriter = eng.writer
    good = codec.encode("FeatureLog", feature_log("r-ü", 0, [1, 2, 3]))
    for n in range(3000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(10, len(b))] = rng.randrange(256)
        if n % 3 == 0:
            b = b[:rng.randrange(10, len(b))]
        if n % 7 == 0:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        data = bytes(b)
        try:
            want = codec.decode(data, expect="FeatureLog")[1]
        except DecodeError as e:
            want = e.reason
        try:
            got = eng._features(data)
        except DecodeError as e:
            got = e.reason
        if isinstance(want, str):
            assert got == want, (n, data)
        else:
            assert isinstance(got, dict) and got["request_id"] == want["request_id"]
            assert shown_ids(got) == [i["item_id"] for i in want["items"]]
            if eng._last_spans is not None:  # accepted by the scanner: the splice equals the dict path
                s = RequestState(want["request_id"])
                s.features, s.ts, s.fbytes = want, want["ts_ms"], data[10:]
                args = (want["items"][0]["item_id"], "window", {"click": 1}, 1.0, False, 5)
                spliced = codec.decode(writer.example(s, *args))[1]
                s.fbytes, s._splice = None, None
                assert spliced == DictWriter().example(s, *args)
    eng.store.close()


def test_corrupt_action_logs_get_the_codecs_verdict() -> None:
    from joiner.fastcodec import FastCodec

    fast = FastCodec()
    rng = random.Random(9)
    goods = [codec.encode("ActionLog", action(f"req-{i}", i * 1000, "click", 10**12 + i)) for i in range(5)]
    goods.append(codec.encode("ActionLog", {**action("é", 3, "like", 5), "value": 2.5}))
    for n in range(5000):
        b = bytearray(goods[n % len(goods)])
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(10, len(b))] = rng.randrange(256)
        if n % 4 == 0:
            b = b[:rng.randrange(10, len(b))]
        data = bytes(b)
        try:
            want: object = codec.decode(data, expect="ActionLog")[1]
        except DecodeError as e:
            want = e.reason
        try:
            got: object = fast.decode_action(data)
        except DecodeError as e:
            got = e.reason
        assert got == want, (n, data)


def test_splice_equals_dict_path_for_negative_and_huge_ids(tmp_path: Path) -> None:
    """The compiled writer prints ids in decimal for the hashes and zig-zags them for Avro."""
    items = [-5, -(2**63), 2**63 - 1, 0, 10**12, 7]
    recs = [feature_log(f"q{i}", 1000 * i, items) for i in range(30)]
    recs += [action("q3", -5, "click", 3100), action("q4", 2**63 - 1, "like", 4200),
             feature_log("end", 60_000, [1]), action("end", 1, "impression", 60_000)]
    got, _ = run(tmp_path / "s", msgs_of(recs), splice=True)
    want, _ = run(tmp_path / "d", msgs_of(recs), splice=False)
    assert got == want
    kept = Counter(e["item_id"] for e in got if e["kind"] == "window")
    assert set(kept) >= {-5, 2**63 - 1} and 0 < kept[-(2**63)] < 30  # sampled, not all or none
