"""Inputs that used to crash the join (and so crash-loop the runner): each is now a result or a
dead letter, the same as fastavro would make of it, and the join goes on."""

from __future__ import annotations

import io
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest

from joiner.config import JoinerConfig
from joiner.engine import JoinEngine
from joiner.fastcodec import FastCodec
from joiner.store import StateStore
from schemas.codec import default_codec, load_schema
from tests.conftest import MOVIELENS_SPEC as SPEC
from tests.joiner.conftest import action, feature_log

codec = default_codec()
CFG = JoinerConfig(window_ms=1000, allowed_lateness_ms=500, ttl_ms=10_000, tombstone_ms=5000,
                   negative_keep_rate=1.0, seed=3)
V1 = load_schema(Path(__file__).resolve().parents[2] / "schemas/avro/history/FeatureLog.v1.avsc")


def engine() -> JoinEngine:
    e = JoinEngine(CFG, SPEC, StateStore.open(CFG, Path(tempfile.mkdtemp())), "f", "a")
    e.restore([("f", 0), ("a", 0)])
    return e


def run(msgs: list[tuple[str, bytes, bytes]]) -> tuple[list[dict[str, Any]], Counter]:
    """Feed messages, then close every window; the examples and dead letters by reason."""
    e = engine()
    off: Counter = Counter()
    for topic, key, value in msgs:
        e.process(topic, 0, off[topic], key, value)
        off[topic] += 1
        e.advance()
    while e.drain():
        pass
    ex, dead = e.take_output()
    return [codec.decode(v)[1] for _, v in ex], Counter(codec.decode(v)[1]["reason"] for _, v in dead)


def with_varint(value: bytes, at: int, varint: bytes) -> bytes:
    """``value`` with the one-byte varint at ``at`` replaced by ``varint``."""
    return value[:at] + varint + value[at + 1:]


def test_a_feature_log_of_the_older_schema_joins() -> None:
    rec = feature_log("r1", 0, [1, 2])
    old = codec.encode("FeatureLog", {k: v for k, v in rec.items() if k != "source"}, schema=V1)
    got, dead = run([("f", b"r1", old), ("a", b"r1", codec.encode("ActionLog", action("r1", 2, "click", 5)))])
    by_item = {e["item_id"]: e for e in got}
    assert not dead and set(by_item) == {1, 2}
    assert by_item[2]["labels"]["click"] == 1 and by_item[1]["labels"]["click"] == 0
    assert by_item[1]["sparse"] == {**rec["user_sparse"], **rec["items"][0]["sparse"]}


def test_a_feature_log_with_thousands_of_items_joins() -> None:
    n = 5000  # past the compiled writer's MAX_ITEMS: the dict writer takes it
    got, dead = run([("f", b"big", codec.encode("FeatureLog", feature_log("big", 0, list(range(n)))))])
    assert not dead and sorted(e["item_id"] for e in got) == list(range(n))


@pytest.mark.parametrize("varint", [b"\xfe" + b"\xff" * 9 + b"\x01", b"\x82" + b"\x80" * 9 + b"\x7f",
                                    b"\xff" * 10 + b"\x7f", b"\xfe" + b"\xff" * 8 + b"\x7f"])
def test_overlong_varints_read_as_fastavro_reads_them(varint: bytes) -> None:
    good = codec.encode("ActionLog", action("r3", 1, "click", 5))
    bad = with_varint(good, 10 + 3, varint)  # item_id: after the header and "r3"
    want = fastavro.schemaless_reader(io.BytesIO(bad[10:]), codec.current["ActionLog"].parsed)
    assert FastCodec().decode_action(bad) == want
    assert -(2**63) <= want["item_id"] < 2**63
    # the join keeps going: the action waits for features that never come, then is dead-lettered
    got, dead = run([("a", b"r3", bad)])
    assert got == [] and dead == Counter(no_features=1)


def test_an_exception_on_one_record_is_a_dead_letter_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    e = engine()

    def broken(*a: Any, **k: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(e.core, "on_action", broken)
    e.process("f", 0, 0, b"r", codec.encode("FeatureLog", feature_log("r", 0, [1])))
    e.process("a", 0, 0, b"r", codec.encode("ActionLog", action("r", 1, "click", 5)))
    monkeypatch.undo()
    e.process("a", 0, 1, b"r", codec.encode("ActionLog", action("r", 1, "like", 6)))  # the join goes on
    while e.drain():
        pass
    ex, dead = e.take_output()
    [d] = [codec.decode(v)[1] for _, v in dead]
    assert d["reason"] == "internal_error" and "ZeroDivisionError: a bug" in d["detail"]
    assert codec.decode(d["payload"])[1]["action"] == "click" and (d["source_topic"], d["offset"]) == ("a", 0)
    [example] = [codec.decode(v)[1] for _, v in ex]
    assert example["labels"]["like"] == 1


def test_a_failing_timer_dead_letters_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    e = engine()
    e.process("f", 0, 0, b"r", codec.encode("FeatureLog", feature_log("r", 0, [1])))
    monkeypatch.setattr(e.core, "on_timer", lambda *a: 1 / 0)
    while e.drain():
        pass
    _, dead = e.take_output()
    [d] = [codec.decode(v)[1] for _, v in dead]
    assert d["reason"] == "internal_error" and "at its timer" in d["detail"]
    assert codec.decode(d["payload"])[1]["request_id"] == "r"  # the feature log is kept
    e.checkpoint()
    assert e.store.get("r") is None  # and the state is gone: it cannot fail again after a restart
