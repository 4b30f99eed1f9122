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
from joiner.validate import Validator
from replay.config import ReplayConfig
from replay.events import build_events
from schemas.codec import DecodeError, default_codec
from tests.joiner.conftest import SPEC, action, feature_log

codec = default_codec()


def run(tmp: Path, msgs: list[tuple[str, bytes, bytes]], splice: bool) -> tuple[list[dict], Counter]:
    cfg = JoinerConfig(window_ms=2000, allowed_lateness_ms=20_000, negative_keep_rate=0.5)
    eng = JoinEngine(cfg, SPEC, StateStore.open(cfg, tmp), "f", "a", splice=splice)
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
            for e, v in zip(events, encode_events(events, SPEC), strict=True)]
    got, dead_s = run(tmp_path / "s", msgs, splice=True)
    want, dead_d = run(tmp_path / "d", msgs, splice=False)
    assert len(got) > 1000
    assert got == want  # same records in the same order
    assert dead_s == dead_d


def test_splice_handles_empty_maps_and_late_examples_and_rejects_what_the_dict_path_rejects(tmp_path: Path) -> None:
    wrong_side = feature_log("o", 0, [1, 2])
    wrong_side["items"][0]["sparse"]["age"] = [SPEC.fid("age", 99)]  # a user slot on an item: not joinable
    empty = feature_log("e", 0, [3])
    empty["user_sparse"], empty["user_dense"], empty["items"][0]["sparse"], empty["items"][0]["dense"] = {}, {}, {}, {}
    recs = [wrong_side, empty, action("o", 1, "click", 10), action("e", 3, "like", 4000),
            feature_log("end", 30_000, [1]), action("end", 1, "impression", 30_000)]
    got, dead = run(tmp_path / "s", msgs_of(recs), splice=True)
    want, dead_d = run(tmp_path / "d", msgs_of(recs), splice=False)
    assert got == want and dead == dead_d
    assert dead["wrong_side"] == 1 and not any(e["request_id"] == "o" for e in got)
    late = next(e for e in got if e["request_id"] == "e" and e["kind"] == "late-like")
    assert late["sparse"] == {} and late["dense"] == {}


def test_corrupt_feature_logs_get_the_codecs_verdict(tmp_path: Path) -> None:
    """Bit flips, cuts and junk: the scanner never crashes, and the engine's verdict is the codec's
    then the spec's (``Validator`` on the decoded record): same reason, or the same record joined."""
    rng = random.Random(5)
    cfg = JoinerConfig(negative_keep_rate=1.0)
    eng = JoinEngine(cfg, SPEC, StateStore.open(cfg, tmp_path / "s"), "f", "a")
    writer: SpliceWriter = eng.writer
    good = codec.encode("FeatureLog", feature_log("r-ü", 0, [1, 2, 3]))
    validator = Validator(SPEC)
    checked = 0
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
            verdict = validator.features(codec.decode(data, expect="FeatureLog")[1])
            want = verdict.reason or verdict.record
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
            body = eng._last[0]  # what the state keeps: the joined record's body (without dropped features)
            assert codec.decode(good[:10] + body, expect="FeatureLog")[1] == want
            s = RequestState(want["request_id"])
            s.features, s.ts, s.fbytes = want, want["ts_ms"], body
            args = (want["items"][0]["item_id"], "window", {"click": 1}, 1.0, False, 5)
            spliced = codec.decode(writer.example(s, *args))[1]
            s.fbytes, s._splice = None, None
            assert spliced == DictWriter().example(s, *args)  # the splice equals the dict path
            checked += 1
    assert checked > 100
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


def test_scanner_refuses_every_cut_of_a_feature_log_and_spans_that_do_not_fit(tmp_path: Path) -> None:
    """The scanners check bounds by hand (no numba ``boundscheck``): every prefix of a real body is
    refused (never read past, never taken for a whole one), a too small span buffer is refused,
    and the compiled spec check refuses spans that do not belong to the body."""
    import numpy as np

    from joiner.splice import H_END, H_N, _scan

    cfg = JoinerConfig()
    eng = JoinEngine(cfg, SPEC, StateStore.open(cfg, tmp_path), "f", "a")
    events = build_events(ReplayConfig(limit=20), "movielens")
    bodies = [v[10:] for e, v in zip(events, encode_events(events, SPEC), strict=True) if e.role == "features"]
    for body in bodies[:5]:
        spans, k = eng.writer.scan(body)
        full = spans[:k].copy()
        assert eng.span_check(body, full)
        for cut in range(len(body)):
            try:
                eng.writer.scan(body[:cut])
            except ValueError:
                continue
            raise AssertionError(f"a {cut}-byte prefix of a {len(body)}-byte body passed as a feature log")
        assert _scan(body, np.zeros(H_END + 1, np.int64)) == -1  # no room for the items: refused
        short = full.copy()
        short[H_N] += 1  # one item more than the spans hold
        assert not eng.span_check(body, short)
    eng.store.close()
