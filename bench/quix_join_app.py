"""The same join on Quix Streams (the Python peer with rocksdict state): the bench's baseline.

Runs in the bench-only venv ``.vendor/quix-venv`` (quixstreams cannot share the project venv).
It drives the very same ``joiner.core`` rules per key inside a Quix stateful ``apply`` on
``features.concat(actions)`` (key = request_id), with Quix's RocksDB state (no changelog
topics, like our runner) and the processing guarantee the bench asks for (GUARANTEE:
exactly-once = Kafka transactions, or at-least-once). Differences, all in Quix's favour: Quix
has no per-key event-time timers, so a window closes only when a later event of the same key
sees the watermark past it (fewer examples encoded), and no dead-letter topic is written.
Environment: BROKER, FEATURES, ACTIONS, EXAMPLES, GROUP, STATE_DIR, JOINER_CFG (json), SPEC (the
feature spec, json), INPUT, GUARANTEE.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quixstreams import Application, State  # noqa: E402
from quixstreams.state.rocksdb import RocksDBOptions  # noqa: E402

from joiner.config import JoinerConfig  # noqa: E402
from joiner.core import WATERMARK_MIN, Joiner, check_action, check_features  # noqa: E402
from joiner.fastcodec import FastCodec  # noqa: E402
from schemas.spec import FeatureSpec  # noqa: E402

cfg = JoinerConfig.model_validate_json(os.environ["JOINER_CFG"])
joiner = Joiner(cfg, FeatureSpec.model_validate_json(os.environ["SPEC"]))
fast = FastCodec()
FEATURE_FP = fast.fingerprint("FeatureLog")
EXPECT = int(os.environ["INPUT"])
seen = {"n": 0, "max_ts": WATERMARK_MIN, "bad": 0}


def on_processed(topic: str, partition: int, offset: int) -> None:
    seen["n"] += 1
    n = seen["n"]
    if n == 1 or n == EXPECT:
        print(f"PROBE n={n} wall={time.time():.3f} cpu={time.process_time():.3f}", flush=True)
    if n == EXPECT:
        app.stop()


def join(value: bytes, state: State) -> list[bytes]:
    is_features = value[2:10] == FEATURE_FP
    try:
        rec = fast.decode(value, "FeatureLog" if is_features else "ActionLog")
    except Exception:
        seen["bad"] += 1
        return []
    if (check_features(rec) if is_features else check_action(rec)) is not None:
        seen["bad"] += 1
        return []
    if rec["ts_ms"] > seen["max_ts"]:
        seen["max_ts"] = rec["ts_ms"]
    wm = seen["max_ts"] - cfg.allowed_lateness_ms - 1
    old = state.get("s")
    step = joiner.on_features(old, rec, wm) if is_features else joiner.on_action(old, rec, wm)
    if step.state is None:
        if old is not None:
            state.delete("s")
    elif step.changed or old is None:
        state.set("s", step.state)
    return [fast.encode("TrainingExample", ex) for ex in step.examples]


app = Application(
    broker_address=os.environ["BROKER"],
    consumer_group=os.environ["GROUP"],
    auto_offset_reset="earliest",
    processing_guarantee=os.environ.get("GUARANTEE", "exactly-once"),
    state_dir=os.environ["STATE_DIR"],
    use_changelog_topics=False,
    max_partition_buffer_size=100_000,
    commit_interval=1.0,
    rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
    on_message_processed=on_processed,
    consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    loglevel="WARNING",
)
features = app.topic(os.environ["FEATURES"], value_deserializer="bytes", key_deserializer="bytes")
actions = app.topic(os.environ["ACTIONS"], value_deserializer="bytes", key_deserializer="bytes")
examples = app.topic(os.environ["EXAMPLES"], value_serializer="bytes", key_serializer="bytes")
sdf = app.dataframe(features).concat(app.dataframe(actions))
sdf = sdf.apply(join, stateful=True, expand=True)
sdf.to_topic(examples)

if __name__ == "__main__":
    app.run()
    print(f"QUIX done n={seen['n']} bad={seen['bad']}", flush=True)
