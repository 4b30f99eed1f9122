"""10,000 hostile messages through both runtimes, interleaved with valid traffic.

The corpus (``replay.poison``: byte flips, truncations, every schema version, wrong record
types, huge arrays and maps, extreme ids, overlong varints, bad UTF-8, repeated map keys,
missing values, broken key and timestamp contracts) goes to the same topics as a MovieLens
replay. Neither runtime crashes; each rejects exactly the messages the reference reader
(fastavro and the join's checks) rejects, each with that reason and the message as payload,
none as ``internal_error``; and the valid traffic joins exactly as it does alone.
"""

from __future__ import annotations

import uuid
import zlib
from collections import Counter
from dataclasses import dataclass

import pytest

from jobs.flink.feed import produce_recorded, write_offsets
from jobs.join_runner import run_join
from jobs.replay import encode_events
from joiner.engine import DEAD_PAYLOAD_MAX
from replay.events import build_events
from replay.poison import Poison, corpus, expected
from schemas.spec import FeatureSpec
from streamrec.config import KafkaConfig, load_config
from streamrec.kafka import create_topics
from tests.conftest import MOVIELENS_SPEC
from tests.jobs.flink_helpers import (
    EOS,
    MAX_BYTES,
    PARTITIONS,
    Feed,
    Output,
    diff,
    eos_messages,
    read_output,
    run_flink_local,
)

POISON = 10_000
# what the join itself dead-letters later (the rest is said of a message as it comes in)
JOIN_REASONS = {"no_features", "expired", "unknown_item", "conflicting_features"}
RECORD = {"features": "FeatureLog", "actions": "ActionLog"}


@dataclass
class Poisoned:
    feed: Feed  # valid traffic + poison
    clean: Feed  # the same valid traffic alone
    poison: list[Poison]
    spec: FeatureSpec


def make_feed(bootstrap: str, tmp, name: str, msgs: list[tuple], n_events: int) -> Feed:  # noqa: ANN001
    tag = uuid.uuid4().hex[:8]
    topics = {"features": f"{name}{tag}-features", "actions": f"{name}{tag}-actions"}
    create_topics(KafkaConfig(bootstrap=bootstrap), {t: PARTITIONS for t in topics.values()})
    offsets = produce_recorded(load_config(None, [f'kafka.bootstrap="{bootstrap}"']).kafka,
                               [(topics[role], *rest) for role, *rest in msgs])
    return Feed(bootstrap, topics["features"], topics["actions"],
                write_offsets(tmp / f"{name}-offsets.json", offsets), n_events, tmp)


def partition_of(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS  # the same in both topics: a request's logs meet


@pytest.fixture(scope="module")
def poisoned(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Poisoned:
    """Valid traffic in explicit partitions; after each valid message some poison, in the same
    partition, stamped with the latest time that partition of that topic has seen (the poison
    the join accepts moves no watermark, so the valid traffic must join exactly as alone)."""
    tmp = tmp_path_factory.mktemp("poison")
    s = load_config(None, [f'kafka.bootstrap="{kafka_bootstrap}"', "replay.limit=1500"])
    events = build_events(s.replay, "movielens")
    valid = [(e.role, e.key.encode(), v, partition_of(e.key.encode()), e.log.ts_ms)
             for e, v in zip(events, encode_events(events, s.features), strict=True)]
    head = len(valid) // 50  # every partition of both topics has data before the poison starts
    step = (len(valid) - head) / POISON
    latest: dict[tuple[str, int], int] = {}
    where = {"part": 0}
    poison_iter = corpus(s.features, POISON, lambda i, role: latest[(role, where["part"])],
                         max_message_bytes=MAX_BYTES)
    poison: list[Poison] = []
    mixed: list[tuple] = []
    for i, v in enumerate(valid):
        mixed.append(v)
        latest[(v[0], v[3])] = max(latest.get((v[0], v[3]), v[4]), v[4])
        if i < head:
            continue
        where["part"] = v[3]
        for _ in range(int((i - head + 1) / step) - len(poison)):
            p = next(poison_iter)
            poison.append(p)
            mixed.append((p.role, p.key, p.value, v[3], p.ts))
    assert len(poison) >= POISON - 1 and len(latest) == 2 * PARTITIONS
    eos = [(("features" if t.endswith("features") else "actions"), *rest)
           for t, *rest in eos_messages("features", "actions", max(m[4] for m in valid), s)]
    feed = make_feed(kafka_bootstrap, tmp, "p", mixed + eos, len(events))
    clean = make_feed(kafka_bootstrap, tmp, "c", valid + eos, len(events))
    return Poisoned(feed, clean, poison, s.features)


def want_dead(poison: list[Poison], spec: FeatureSpec) -> Counter:
    out: Counter = Counter()
    for p in poison:
        reason = expected(p, spec, RECORD, MAX_BYTES)
        if reason is not None:
            out[(reason, (p.value or b"")[:DEAD_PAYLOAD_MAX])] += 1
    return out


def check(out: Output, clean: Output, poison: list[Poison], spec: FeatureSpec) -> Counter:
    valid = {k: e for k, e in out.examples.items() if not e["request_id"].startswith("fz-")}
    assert valid == clean.examples, diff(valid, clean.examples)
    got = Counter({k: n for k, n in out.dead.items() if k[0] not in JOIN_REASONS})
    want = want_dead(poison, spec)
    reasons = Counter(r for r, _ in want.elements())
    assert sum(reasons.values()) > POISON // 2 and len(reasons) >= 6, reasons
    assert got == want, f"got {Counter(r for r, _ in got.elements())}, want {reasons}"
    assert not any(r == "internal_error" for r, _ in got)
    return Counter(r for r, _ in got.elements())


@pytest.fixture(scope="module")
def clean_output(poisoned: Poisoned) -> Output:
    s, _ = poisoned.clean.settings("clean")
    run_join(s, from_start=True, stop_when_idle=2.0, max_seconds=240)
    return read_output(s)


@pytest.mark.reliability
def test_the_embedded_runner_survives_the_corpus(poisoned: Poisoned, clean_output: Output, reliability) -> None:
    s, _ = poisoned.feed.settings("embedded")
    stats = run_join(s, from_start=True, stop_when_idle=2.0, max_seconds=240)
    assert stats.events >= POISON + poisoned.feed.events  # it went on to the end
    reasons = check(read_output(s), clean_output, poisoned.poison, poisoned.spec)
    reliability.record("hostile input: embedded runner", inputs=len(poisoned.poison), crashes=0,
                       dead_letters=dict(reasons))


@pytest.mark.reliability
def test_the_flink_job_survives_the_corpus(poisoned: Poisoned, clean_output: Output, reliability) -> None:
    s, ov = poisoned.feed.settings("flink", **{"flink.restart_attempts": 0})  # a crash would fail the job
    run_flink_local(poisoned.feed, ov, poisoned.feed.tmp / "flink-poison.log")
    reasons = check(read_output(s), clean_output, poisoned.poison, poisoned.spec)
    reliability.record("hostile input: Flink job", inputs=len(poisoned.poison), crashes=0, dead_letters=dict(reasons))


def test_the_corpus_is_what_it_says() -> None:
    poison = list(corpus(MOVIELENS_SPEC, 2000, lambda i, role: 1_000_000 + i, max_message_bytes=MAX_BYTES))
    kinds = Counter(p.kind.split("+")[0] for p in poison)
    assert len(kinds) >= 15 and all(p.key is None or p.key.startswith(b"fz-") or p.kind.startswith("key_mismatch")
                                    for p in poison)
    assert any(p.kind.endswith("+oversize") for p in poison) and any(p.value is None for p in poison)
    assert EOS not in {p.key for p in poison}
