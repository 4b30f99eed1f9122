"""The embedded join runner against the real broker and real rocksdict."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

from jobs.join_runner import JoinRunner, run_join
from joiner.config import JoinerConfig
from schemas.codec import default_codec
from streamrec.config import Settings
from streamrec.kafka import consumer, consumer_lag, drain, producer
from tests.conftest import MOVIELENS_SPEC as SPEC

codec = default_codec()
DAY = 86_400_000


def flog(rid: str, ts: int, items: list[int]) -> dict[str, Any]:
    return {"request_id": rid, "user_id": 1, "ts_ms": ts, "user_sparse": {"user_id": [SPEC.fid("user_id", 1)]},
            "user_dense": {}, "items": [{"item_id": i, "position": p, "sparse": {"item_id": [SPEC.fid("item_id", i)]},
                                         "dense": {}} for p, i in enumerate(items)], "source": "test"}


def act(rid: str, item: int, kind: str, ts: int) -> dict[str, Any]:
    return {"request_id": rid, "item_id": item, "action": kind, "ts_ms": ts, "value": None}


def send(s: Settings, msgs: list[tuple]) -> None:
    """(topic, key, value[, Kafka timestamp]): logs are stamped with their ts_ms, as the contract says."""
    p = producer(s.kafka)
    for topic, key, value, *ts in msgs:
        p.produce(topic, value, key, **({"timestamp": ts[0]} if ts else {}))
    assert p.flush(30) == 0


def enc(rec: dict[str, Any]) -> tuple[str, bytes, bytes]:
    return ("FeatureLog" if "items" in rec else "ActionLog"), rec["request_id"].encode(), \
        codec.encode("FeatureLog" if "items" in rec else "ActionLog", rec)


def good(s: Settings, recs: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes, int]]:
    t = s.kafka.topics
    out = []
    for rec in recs:
        name, k, v = enc(rec)
        out.append((t.features if name == "FeatureLog" else t.actions, k, v, rec["ts_ms"]))
    return out


def read(s: Settings, topic: str) -> list[dict[str, Any]]:
    return [codec.decode(m.value())[1] for m in drain(s.kafka, [topic], idle_s=1.0)]


def ticks(ts: int) -> list[dict[str, Any]]:
    """Events at ``ts`` on every partition of both topics (8 keys spread over 2 partitions), to move
    the watermark: it is the minimum over the input partitions."""
    return [r for n in range(8) for r in (flog(f"tick{ts}-{n}", ts, [1]), act(f"tick{ts}-{n}", 1, "impression", ts))]


def test_bad_input_goes_to_dead_letter_and_the_runner_keeps_going(settings: Settings) -> None:
    s = settings
    s.joiner = JoinerConfig(**{**s.joiner.model_dump(), "window_ms": 1000, "allowed_lateness_ms": 100,
                               "max_message_bytes": 20_000, "negative_keep_rate": 1.0,
                               "checkpoint_interval_ms": 200})
    t = s.kafka.topics
    bad_fp = b"\xc3\x01" + os.urandom(8) + b"\x02x"
    big = flog("big", 10, list(range(3000)))
    msgs = good(s, [flog("r1", 1, [1, 2]), act("r1", 1, "click", 5)])
    msgs += [
        (t.features, b"m", b"not avro at all"),
        (t.actions, b"u", bad_fp),
        (t.features, b"", codec.encode("FeatureLog", flog("", 3, [1]))),
        (t.features, b"big", codec.encode("FeatureLog", big)),
        (t.features, b"w", codec.encode("ActionLog", act("w", 1, "click", 3))),
        (t.actions, b"x", codec.encode("ActionLog", act("x", 1, "click", 3))[:-3]),
        (t.actions, b"r1", codec.encode("ActionLog", act("r1", 1, "share", 12))),  # not in the spec: dropped
    ]
    msgs += good(s, [flog("r2", 50, [7]), act("r2", 7, "like", 60), *ticks(5000)])
    send(s, msgs)
    s.joiner.metrics_port = 0  # a free port
    runner = JoinRunner(s, from_start=True)
    result: dict[str, Any] = {}
    th = threading.Thread(target=lambda: result.update(st=runner.run(stop_when_idle=1.5)))
    th.start()
    text, health = "", b""
    while th.is_alive() and 'reason="oversize"' not in text:  # scrape the Prometheus endpoint live
        if runner.metrics_port:
            url = f"http://127.0.0.1:{runner.metrics_port}/metrics"
            with contextlib.suppress(OSError):
                text = urllib.request.urlopen(url, timeout=2).read().decode()
                health = urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=2).read()
        time.sleep(0.05)
    th.join(60)
    st = result["st"]
    assert 'streamrec_join_dead_letters_total{reason="oversize"} 1.0' in text
    assert re.search(r"^streamrec_join_cache_misses_total [1-9]", text, re.M)  # one meaning per metric, _total
    wm = re.search(r"^streamrec_join_watermark_seconds (\S+)", text, re.M)
    assert wm and 0 < float(wm.group(1)) < 5.0  # seconds: the input's event times end at 5000 ms
    assert "streamrec_join_state" not in text and "_ms" not in text
    assert health == b"ok\n"
    assert "malformed=2" in runner.metrics.line() and "dropped_unknown[share=1]" in runner.metrics.line()
    dead = read(s, t.dead_letter)
    reasons = Counter(d["reason"] for d in dead)
    assert reasons["malformed"] == 2 and reasons["unknown_schema"] == 1
    assert reasons["missing_field"] == 1 and reasons["oversize"] == 1 and reasons["wrong_type"] == 1
    over = next(d for d in dead if d["reason"] == "oversize")
    assert over["source_topic"] == t.features and over["offset"] >= 0 and over["key"] == b"big"
    examples = {(e["request_id"], e["item_id"]): e for e in read(s, t.examples)}
    assert examples[("r1", 1)]["labels"]["click"] == 1 and examples[("r1", 2)]["labels"]["click"] == 0
    assert examples[("r2", 7)]["labels"]["like"] == 1  # came after the bad input
    assert st.dead_reasons == dict(reasons)


def test_days_late_action_from_rocksdb_then_expired_via_kafka(settings: Settings) -> None:
    s = settings
    s.joiner = JoinerConfig(**{**s.joiner.model_dump(), "window_ms": 300_000, "allowed_lateness_ms": 60_000,
                               "ttl_ms": 3 * DAY, "tombstone_ms": DAY, "negative_keep_rate": 1.0,
                               "cache_bytes": 30_000})  # a tiny cache: "old" leaves it
    t = s.kafka.topics
    recs = [flog("old", 1, [1, 2])]
    recs += [flog(f"n{i}", 1000 + i * 600_000, [5]) for i in range(300)]
    recs += [act("old", 2, "click", 2 * DAY), *ticks(2 * DAY + 200_000)]
    recs += [*ticks(3 * DAY + 200_000), act("old", 1, "like", 3 * DAY + 300_000), *ticks(3 * DAY + 500_000)]
    send(s, good(s, recs))
    run_join(s, from_start=True, stop_when_idle=1.5)
    old = [e for e in read(s, t.examples) if e["request_id"] == "old"]
    assert sorted((e["item_id"], e["kind"]) for e in old) == [(1, "window"), (2, "late-click"), (2, "window")]
    late = next(e for e in old if e["late"])
    assert late["labels"] == {"click": 1} and late["join_delay_ms"] == 2 * DAY - 1
    dead = [d for d in read(s, t.dead_letter) if d["key"] == b"old"]
    assert [d["reason"] for d in dead] == ["expired"]
    assert codec.decode(dead[0]["payload"])[1]["action"] == "like"


def test_consumer_lag_is_measured_against_the_brokers_high_watermark(settings: Settings) -> None:
    s = settings
    send(s, good(s, [flog("a", 1, [1, 2]), act("a", 1, "click", 5), *ticks(1000)]))
    runner = JoinRunner(s, from_start=True)
    runner.run(stop_when_idle=1.0)
    assert runner.lag == 0  # everything there is was consumed
    send(s, good(s, [flog("b", 2000, [3]), act("b", 3, "like", 2100), act("b", 3, "click", 2200)]))
    c = consumer(s.kafka)
    try:
        assert consumer_lag(c, runner.engine.offsets, cached=False) == 3  # exactly the messages sent since
    finally:
        c.close()


def test_the_producer_contract_is_checked(settings: Settings) -> None:
    """A log keyed otherwise than by its request_id, or stamped otherwise than with its ts_ms, is a
    dead letter with its reason (the Flink job does the same: tests/jobs/test_flink_join.py)."""
    s = settings
    t = s.kafka.topics
    f = flog("k", 100, [1])
    wrong_key = (t.features, b"not-k", codec.encode("FeatureLog", f), 100)
    wrong_ts = (t.actions, b"k", codec.encode("ActionLog", act("k", 1, "click", 150)), 99_999)
    send(s, [wrong_key, wrong_ts, *good(s, [flog("ok", 100, [1]), act("ok", 1, "click", 150), *ticks(1_000_000)])])
    run_join(s, from_start=True, stop_when_idle=1.5)
    dead = {d["reason"]: d for d in read(s, t.dead_letter)}
    assert set(dead) == {"key_mismatch", "timestamp_mismatch"}
    assert dead["key_mismatch"]["key"] == b"not-k" and "request_id 'k'" in dead["key_mismatch"]["detail"]
    assert "99999" in dead["timestamp_mismatch"]["detail"]
    assert [e["labels"]["click"] for e in read(s, t.examples) if e["request_id"] == "ok"] == [1]
