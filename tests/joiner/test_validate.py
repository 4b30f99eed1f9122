"""The joiner's validation against the feature spec, on both paths of the embedded runtime (the compiled
check of the bytes and the decoded record) and in the in-memory join: same verdicts, reasons naming the field."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from joiner.config import JoinerConfig
from joiner.engine import JoinEngine
from joiner.memory import MemoryJoin
from joiner.store import StateStore
from joiner.validate import Validator
from schemas.codec import default_codec
from tests.conftest import movielens_with
from tests.joiner.conftest import SPEC, action, feature_log

codec = default_codec()
CFG = JoinerConfig(window_ms=1000, allowed_lateness_ms=0, negative_keep_rate=1.0)


def run(tmp: Path, spec: Any, recs: list[dict[str, Any]], splice: bool = True) -> tuple[list[dict], list[dict], Any]:
    """Every record through a fresh engine, then the end of input: (examples, dead letters, engine)."""
    eng = JoinEngine(CFG, spec, StateStore.open(CFG, tmp), "f", "a", splice=splice)
    eng.restore([("f", 0), ("a", 0)])
    off = Counter()
    for r in recs:
        topic, name = ("f", "FeatureLog") if "items" in r else ("a", "ActionLog")
        eng.process(topic, 0, off[topic], r["request_id"].encode(), codec.encode(name, r))
        off[topic] += 1
    while eng.drain():
        pass
    ex, dead = eng.take_output()
    eng.store.close()
    return [codec.decode(v)[1] for _, v in ex], [codec.decode(v)[1] for _, v in dead], eng


def with_user(**sparse: list[int]) -> dict[str, Any]:
    f = feature_log("r1", 0, [10, 11])
    f["user_sparse"].update(sparse)
    return f


CASES = [  # (how the log breaks the spec, reason, field named in the detail)
    (lambda f: f["user_sparse"].update(genre=[SPEC.fid("genre", "x")]), "wrong_side", "user_sparse.genre"),
    (lambda f: f["items"][1]["sparse"].update(age=[SPEC.fid("age", "3")]), "wrong_side", "items[1].sparse.age"),
    (lambda f: f["user_sparse"].update(age=[SPEC.fid("zip", "3")]), "bad_fid", "user_sparse.age[0]"),
    (lambda f: f["items"][0]["sparse"].update(item_id=[123]), "bad_fid", "items[0].sparse.item_id[0]"),
    (lambda f: f["items"][0]["dense"].update(item_popularity=float("inf")), "bad_value",
     "items[0].dense.item_popularity"),
    (lambda f: f["user_dense"].update(item_popularity=1.0), "wrong_side", "user_dense.item_popularity"),
    (lambda f: f.update(request_id=""), "missing_field", "FeatureLog.request_id"),
]


@pytest.mark.parametrize("splice", [True, False])
@pytest.mark.parametrize("break_it,reason,field", CASES)
def test_a_log_that_breaks_the_spec_is_a_dead_letter_naming_the_field(tmp_path, break_it, reason, field, splice):
    bad = feature_log("r1", 0, [10, 11])
    break_it(bad)
    ex, dead, _ = run(tmp_path, SPEC, [bad, feature_log("r2", 5, [12])], splice)
    assert [d["reason"] for d in dead] == [reason]
    assert field in dead[0]["detail"] and dead[0]["payload"] == codec.encode("FeatureLog", bad)
    assert {e["request_id"] for e in ex} == {"r2"}  # the good one joined
    mem = MemoryJoin(CFG, SPEC)
    mem.add_features(bad)
    assert dict(mem.dead_reasons) == {reason: 1}  # the in-memory join (the demo's reference) agrees


@pytest.mark.parametrize("splice", [True, False])
def test_unknown_and_retired_features_are_dropped_and_counted_by_default(tmp_path, splice):
    f = with_user(mood=[1, 2])  # unknown
    f["items"][1]["sparse"]["position"] = [SPEC.fid("position", 1)]  # retired
    f["items"][0]["dense"]["price"] = 3.0
    ex, dead, eng = run(tmp_path, SPEC, [f, action("r1", 10, "share", 5), action("r1", 10, "click", 6)], splice)
    assert dead == []
    assert eng.dropped == Counter({"mood": 1, "position": 1, "price": 1, "share": 1})
    assert eng.counts["dropped_unknown"] == 4
    e10 = next(e for e in ex if e["item_id"] == 10)
    assert e10["labels"] == {"click": 1, "like": 0}  # "share" is not a label of the spec
    assert "mood" not in e10["sparse"] and "position" not in e10["sparse"] and "price" not in e10["dense"]
    assert e10["sparse"]["age"] == f["user_sparse"]["age"]  # the rest as logged


def test_unknown_features_are_dead_letters_when_the_spec_says_so(tmp_path):
    strict = movielens_with({"unknown": "dead_letter"})
    f = with_user(mood=[1])
    ex, dead, _ = run(tmp_path, strict, [f, action("r1", 10, "share", 5), feature_log("r2", 5, [12])])
    assert sorted((d["reason"], d["detail"].split(":")[0]) for d in dead) == [
        ("unknown_action", "ActionLog.action"), ("unknown_slot", "user_sparse.mood")]
    assert {e["request_id"] for e in ex} == {"r2"}
    # a retired slot is known: dropped even so
    old = feature_log("r3", 0, [10, 11])
    old["items"][0]["sparse"]["position"] = [SPEC.fid("position", 0)]
    ex, dead, _ = run(tmp_path / "b", strict, [old])
    assert dead == [] and len(ex) == 2 and all("position" not in e["sparse"] for e in ex)


def test_the_compiled_check_never_passes_what_the_validator_refuses(tmp_path):
    """Every case above on the bytes: the fast path sends each to the validator (no wrong verdict)."""
    eng = JoinEngine(CFG, SPEC, StateStore.open(CFG, tmp_path), "f", "a")
    validator = Validator(SPEC)
    logs = [feature_log("ok", 0, [1, 2])]
    for break_it, _, _ in CASES[:-1]:
        f = feature_log("r", 0, [1, 2])
        break_it(f)
        logs.append(f)
    logs.append(with_user(mood=[1]))
    for f in logs:
        data = codec.encode("FeatureLog", f)
        body = data[10:]
        spans, _ = eng.writer.scan(body)
        verdict = validator.features(f)
        assert eng.span_check(body, spans) == (verdict.reason == "" and not verdict.dropped), f
    eng.store.close()


def test_the_one_walk_scan_equals_the_scan_then_the_check(tmp_path):
    """``SpanCheck.scan`` (the engine's hot path: splice spans and spec rules in one compiled walk)
    against ``SpliceWriter.scan`` then ``SpanCheck.__call__``: the same bodies go the fast path,
    with the very same spans, on the replay's logs, every broken case above, a slot on both
    sides, non-ASCII names, and thousands of bit flips, cuts and junk tails of them."""
    import random

    import numpy as np

    from jobs.replay import encode_events
    from joiner.splice import H_OVERLAP
    from replay.config import ReplayConfig
    from replay.events import build_events

    eng = JoinEngine(CFG, SPEC, StateStore.open(CFG, tmp_path), "f", "a")
    events = build_events(ReplayConfig(limit=200), "movielens")
    goods = [v for e, v in zip(events, encode_events(events, SPEC), strict=True) if e.role == "features"]
    logs = [feature_log("ok", 0, [1, 2]), with_user(mood=[1]), feature_log("é", 0, [3])]
    for break_it, _, _ in CASES[:-1]:
        f = feature_log("r", 0, [1, 2])
        break_it(f)
        logs.append(f)
    both = feature_log("b", 0, [1, 2])
    both["items"][0]["sparse"]["age"] = both["user_sparse"]["age"]  # one slot on both sides
    logs.append(both)
    seeds = goods[:40] + [codec.encode("FeatureLog", f) for f in logs]
    rng = random.Random(11)
    bodies = [s[10:] for s in seeds]
    for n in range(4000):
        b = bytearray(seeds[n % len(seeds)][10:])
        for _ in range(rng.randint(0, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if n % 3 == 0:
            b = b[:rng.randrange(len(b))]
        if n % 7 == 0:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        bodies.append(bytes(b))
    fast = 0
    for body in bodies:
        try:
            spans, k = eng.writer.scan(body)
            want = spans[:k].copy() if not spans[H_OVERLAP] and eng.span_check(body, spans[:k]) else None
        except ValueError:
            want = None
        try:
            spans, k = eng.span_check.scan(body)
            got = spans[:k].copy() if k else None
        except ValueError:
            got = None
        assert (got is None) == (want is None), body
        if want is not None:
            assert np.array_equal(got, want), body
            fast += 1
    assert 40 < fast < len(bodies) - 1000  # both paths taken, many times
    eng.store.close()
