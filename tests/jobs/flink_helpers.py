"""What the Flink tests share: a feed of input produced once, its output read back, a local run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.codec import default_codec
from schemas.spec import FeatureSpec
from streamrec.config import KafkaConfig, Settings, load_config
from streamrec.kafka import create_topics, drain

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
EOS = "eos-"
MAX_BYTES = 8192  # larger input messages are dead letters "oversize"


@dataclass
class Feed:
    bootstrap: str
    features: str
    actions: str
    offsets: Path
    events: int
    tmp: Path
    messages: list[tuple] = field(default_factory=list, repr=False)  # as produced, for copies

    def settings(self, tag: str, **extra: object) -> tuple[Settings, list[str]]:
        """A config with fresh output topics; also returned as ``--set`` overrides for a subprocess."""
        out = {"examples": f"{self.features}-{tag}-ex", "dead": f"{self.features}-{tag}-dl"}
        create_topics(KafkaConfig(bootstrap=self.bootstrap), {out["examples"]: PARTITIONS, out["dead"]: 1})
        ov = [
            f'kafka.bootstrap="{self.bootstrap}"',
            f'kafka.topics.features="{self.features}"',
            f'kafka.topics.actions="{self.actions}"',
            f'kafka.topics.examples="{out["examples"]}"',
            f'kafka.topics.dead_letter="{out["dead"]}"',
            f'joiner.state_dir="{self.tmp / tag / "joiner"}"',
            f'flink.checkpoint_dir="{self.tmp / tag / "checkpoints"}"',
            f'flink.run_dir="{self.tmp / tag / "flink"}"',
            f'flink.group_id="g-{tag}"',
            "flink.jvm_heap=\"512m\"",
            f"joiner.max_message_bytes={MAX_BYTES}",
            *(f"{k}={v}" for k, v in extra.items()),
        ]
        return load_config(None, ov), ov


def eos_messages(features: str, actions: str, last_ts: int, s: Settings) -> list[tuple]:
    """One feature log and one action per partition, far enough in event time to fire every timer."""
    j = s.joiner
    ts = last_ts + j.ttl_ms + j.tombstone_ms + max(j.action_wait, j.window_ms) + j.allowed_lateness_ms + 10
    codec = default_codec()
    out = []
    for p in range(PARTITIONS):
        rid = f"{EOS}{p}"
        f = {"request_id": rid, "user_id": 0, "ts_ms": ts, "source": "eos",
             "items": [{"item_id": 0, "position": 0, "sparse": {}, "dense": {}}]}
        a = {"request_id": rid, "item_id": 0, "action": "impression", "ts_ms": ts, "value": None}
        out.append((features, rid.encode(), codec.encode("FeatureLog", f), p, ts))
        out.append((actions, rid.encode(), codec.encode("ActionLog", a), p, ts))
    return out


def bad_messages(features: str, actions: str, ts: int, spec: FeatureSpec) -> list[tuple]:
    """Bad input for the codec and for the feature spec, plus input the spec drops but still joins:
    (topic, key, value, partition, Kafka timestamp), stamped as the producer contract says."""
    codec = default_codec()
    empty_rid = {"request_id": "", "item_id": 1, "action": "click", "ts_ms": 1, "value": None}

    def log(rid: str, user_sparse: dict) -> bytes:
        return codec.encode("FeatureLog", {
            "request_id": rid, "user_id": 1, "ts_ms": ts, "user_sparse": user_sparse, "user_dense": {},
            "items": [{"item_id": 5, "position": 0, "sparse": {"item_id": [spec.fid("item_id", 5)]}, "dense": {}}]})

    def act(rid: str, action: str, at: int) -> bytes:
        return codec.encode("ActionLog", {**empty_rid, "request_id": rid, "item_id": 5, "action": action, "ts_ms": at})

    return [
        (actions, b"bad-1", b"not avro at all", None, ts),
        (features, b"bad-2", codec.encode("ActionLog", {**empty_rid, "request_id": "x"}), None, ts),  # wrong_type
        (actions, b"bad-3", codec.encode("ActionLog", empty_rid), None, ts),  # missing_field
        (features, b"bad-4", b"\xc3\x01" + bytes(MAX_BYTES), None, ts),  # oversize
        (features, b"bad-5", log("bad-5", {"genre": [spec.fid("genre", "x")]}), None, ts),  # wrong_side
        (features, b"drop-1", log("drop-1", {"mood": [1], "age": [spec.fid("age", "3")]}), None, ts),  # no mood
        (actions, b"drop-1", act("drop-1", "share", ts), None, ts),  # an action not in the spec: dropped
        (actions, b"drop-1", act("drop-1", "click", ts + 1), None, ts + 1),  # a click: a positive
    ]


def contract_breaches(features: str, actions: str, ts: int) -> list[tuple]:
    """Valid logs, but keyed or stamped otherwise than they say (the producer contract)."""
    codec = default_codec()
    f = {"request_id": "cb-1", "user_id": 1, "ts_ms": ts, "source": "test",
         "items": [{"item_id": 1, "position": 0, "sparse": {}, "dense": {}}]}
    a = {"request_id": "cb-2", "item_id": 1, "action": "click", "ts_ms": ts, "value": None}
    return [(features, b"not-cb-1", codec.encode("FeatureLog", f), None, ts),  # key_mismatch
            (actions, b"cb-2", codec.encode("ActionLog", a), None, ts + 12_345)]  # timestamp_mismatch


@dataclass
class Output:
    examples: dict[str, dict]  # example_id -> record (eos-* left out)
    duplicates: int  # example messages whose id was read before
    dead: Counter  # (reason, payload) -> count, eos-* left out


def read_output(s: Settings) -> Output:
    """What a read_committed reader sees (``streamrec.kafka.consumer``)."""
    codec = default_codec()
    examples, seen, duplicates, raw = {}, set(), 0, {}
    for m in drain(s.kafka, [s.kafka.topics.examples], idle_s=1.5):
        rec = codec.decode(m.value(), expect="TrainingExample")[1]
        duplicates += rec["example_id"] in seen
        seen.add(rec["example_id"])
        if not rec["request_id"].startswith(EOS):
            old = examples.setdefault(rec["example_id"], rec)
            raw.setdefault(rec["example_id"], m.value())
            # the same bytes (a float may be NaN, unequal to itself), or the same record
            assert m.value() == raw[rec["example_id"]] or old == rec, f"two examples with one id: {old} {rec}"
    dead: Counter = Counter()
    for m in drain(s.kafka, [s.kafka.topics.dead_letter], idle_s=1.5):
        rec = codec.decode(m.value(), expect="DeadLetter")[1]
        if not (rec["key"] or b"").startswith(EOS.encode()):
            dead[(rec["reason"], rec["payload"])] += 1
    return Output(examples, duplicates, dead)


def diff(got: dict[str, dict], want: dict[str, dict]) -> str:
    """A short account of how two example sets differ (for assertion messages)."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    changed = [k for k in want if k in got and got[k] != want[k]]
    lines = [f"missing {len(missing)}, extra {len(extra)}, changed {len(changed)}"]
    lines += [f"  missing {want[k]}" for k in missing[:2]] + [f"  extra {got[k]}" for k in extra[:2]]
    for k in changed[:3]:
        lines.append(f"  {want[k]['request_id']}/{want[k]['item_id']}/{want[k]['kind']}: "
                     + str({f: (got[k][f], v) for f, v in want[k].items() if got[k][f] != v}))
    return "\n".join(lines)


def run_flink_local(feed: Feed, ov: list[str], log: Path, *extra: str, timeout: float = 300) -> float:
    """``python -m jobs.flink_join`` (a local mini cluster, thread mode) until the input's end."""
    cmd = [sys.executable, "-m", "jobs.flink_join", *(a for o in ov for a in ("--set", o)),
           "--stop-offsets", str(feed.offsets), *extra]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        r = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert r.returncode == 0, f"Flink job failed ({r.returncode}):\n{log.read_text()[-4000:]}"
    return time.monotonic() - t0
