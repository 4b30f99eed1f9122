"""`train --batch` over the archive, then `--online` on the examples topic, continuing the same state."""

from __future__ import annotations

import pytest

from schemas.codec import default_codec
from sinks import layout
from sinks.fs import LocalFS
from sinks.table import archive_schema, to_table
from streamrec.kafka import producer
from tests.conftest import movielens_with
from trainer import snapshot
from trainer.run import train
from trainer.sources import parse_range
from trainer.synthetic import synthetic_examples

SPEC = movielens_with({}, keep=["user_id", "item_id", "age", "genre"])


def write_archive(root, records) -> list[int]:
    import io

    import pyarrow.parquet as pq

    fs = LocalFS(root)
    hours = sorted({layout.hour_of(r["ts_ms"]) for r in records})
    for h in hours:
        part = [r for r in records if layout.hour_of(r["ts_ms"]) == h]
        buf = io.BytesIO()
        pq.write_table(to_table(part, archive_schema(SPEC)), buf)
        fs.write_bytes(layout.data_file(h, 1, late=False), buf.getvalue())
    return hours


def configure(settings, tmp_path):
    settings.features = SPEC
    t = settings.trainer
    t.batch_size = 64
    t.snapshot_dir = tmp_path / "snaps"
    t.snapshot_every_s = 0
    t.metrics_csv = tmp_path / "m.csv"
    t.plot = tmp_path / "auc.png"
    t.eval_window_ms = 600_000
    t.eval_lateness_ms = 0
    return settings


@pytest.mark.slow
def test_batch_then_online_continues_and_drops_duplicates(settings, kafka_cfg, tmp_path):
    s = configure(settings, tmp_path)
    recs = synthetic_examples(SPEC, 6000, users=200, items=100, seed=4, step_ms=1500, keep_rate=0.5)
    archived, online = recs[:3000], recs[2500:]  # 500 examples in both: online drops them by id
    hours = write_archive(s.archive.root, archived)
    assert len(hours) >= 2
    first = layout.hour_label(hours[0])
    end = layout.hour_label(hours[-1] + 1)
    out = train(s, batch=f"{first}..{end}", progress=False)
    assert out["examples_read"] == len(archived) and out["resumed_from"] is None
    snap = snapshot.latest(s.trainer.snapshot_dir)
    assert snap is not None

    codec = default_codec()
    p = producer(kafka_cfg)
    for r in online:
        p.produce(s.kafka.topics.examples, codec.encode("TrainingExample", r), key=r["request_id"])
    assert p.flush(30) == 0
    out2 = train(s, online=True, stop_when_idle_s=2.0, progress=False)
    assert out2["resumed_from"]["snapshot"] == str(snap)
    assert out2["resumed_from"]["positions"]["archive"] == {"hour": hours[-1] + 1, "row": 0}
    assert out2["duplicates"] == 500
    assert out2["examples_read"] == len(recs) == out2["examples"]
    assert out2["auc"] > 0.7 and (tmp_path / "auc.png").exists()


def test_batch_range_parsing():
    assert parse_range("2026-11-24T00..2026-11-24T06") == ("2026-11-24T00", "2026-11-24T06")
    assert parse_range("..2026-11-24") == (None, "2026-11-24")
    with pytest.raises(ValueError, match="FROM..TO"):
        parse_range("2026-11-24")


def test_online_source_skips_undecodable_messages_and_drops_duplicates(settings, kafka_cfg, tmp_path):
    from trainer.loop import Trainer
    from trainer.sources import KafkaSource

    s = configure(settings, tmp_path)
    recs = synthetic_examples(SPEC, 400, users=20, items=10, seed=12)
    codec = default_codec()
    topic = s.kafka.topics.examples
    p = producer(kafka_cfg)
    for r in recs[:200]:
        p.produce(topic, codec.encode("TrainingExample", r), key=r["request_id"])
    p.produce(topic, b"not avro at all", key=b"x")
    for r in recs[150:]:  # 50 sent twice (at-least-once producer)
        p.produce(topic, codec.encode("TrainingExample", r), key=r["request_id"])
    assert p.flush(30) == 0
    src = KafkaSource(s.kafka, topic, "t-online", "earliest")
    t = Trainer(s.trainer, s.features)
    try:
        out = t.run(src, stop_when_idle_s=1.5)
    finally:
        src.close()
    assert src.undecodable == 1
    assert out["examples_read"] == len(recs) and out["duplicates"] == 50
    assert sum(src.position().values()) == len(recs) + 50 + 1  # every message consumed, offsets exact


def test_a_snapshot_restores_only_under_the_spec_it_was_trained_with(tmp_path):
    from trainer.config import TrainerConfig
    from trainer.loop import Trainer
    from trainer.sources import MemorySource

    cfg = TrainerConfig(batch_size=64, snapshot_dir=tmp_path / "snaps", snapshot_every_s=0, metrics_csv=None,
                        plot=None)
    t = Trainer(cfg, SPEC)
    t.run(MemorySource(synthetic_examples(SPEC, 500, seed=1)))
    snap = t.snapshot()
    assert Trainer(cfg, SPEC).restore() == snap  # same spec: fine
    tuned = movielens_with({"slots": {"item_id": {"filter_threshold": 3}}}, keep=["user_id", "item_id", "age", "genre"])
    assert Trainer(cfg, tuned).restore() == snap  # a filter change leaves the model's shape alone
    wider = movielens_with({}, keep=["user_id", "item_id", "age", "genre", "year"])  # a slot more
    with pytest.raises(ValueError, match=r"trained under another feature spec \(slots: snapshot"):
        Trainer(cfg, wider).restore()
