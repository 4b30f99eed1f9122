"""A dataset with none of MovieLens's names goes client -> join -> archive -> train (batch, then
online) -> serving with only a spec file and a config naming it; a slot is added to the spec while
archive hours of the old spec exist, and batch training reads both. Real broker, real runners."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.join_runner import run_join
from schemas.spec import compatibility, load_spec
from serving.model_server import ModelServer
from sinks.archive import Archiver
from sinks.layout import HOUR_MS
from sinks.reader import open_archive
from streamrec.client import Client, FeatureLog, LogEncoder
from streamrec.config import Settings, load_config
from streamrec.kafka import count_messages
from tests.jobs.clicklog import CATEGORIES, SPEC_V1, SPEC_V2, VISITORS, Shop, click_log
from trainer.loop import Trainer
from trainer.sources import ArchiveSource, KafkaSource

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, an hour boundary
STEP_MS = 4_000  # one request every 4 s: 900 requests an hour


def settings_for(tmp: Path, spec_file: str, topics: dict[str, str], bootstrap: str) -> Settings:
    """What an operator writes: a config that names the spec file (and where things live)."""
    cfg = tmp / f"streamrec-{spec_file}.toml"
    cfg.write_text(f'[features]\nfile = "{spec_file}"\n')
    return load_config(cfg, [
        f'kafka.bootstrap="{bootstrap}"', *(f'kafka.topics.{k}="{v}"' for k, v in topics.items()),
        f'stack.run_dir="{tmp / "run"}"', f'joiner.state_dir="{tmp / "joiner"}"', f'archive.root="{tmp / "archive"}"',
        "archive.roll_age_s=1.0", "trainer.batch_size=128", f'trainer.snapshot_dir="{tmp / "snaps"}"',
        "trainer.snapshot_every_s=0", f'trainer.metrics_csv="{tmp / "auc.csv"}"', f'trainer.plot="{tmp / "auc.png"}"',
        "trainer.eval_window_ms=1800000", "trainer.eval_lateness_ms=0",
    ])


def send(s: Settings, logs) -> dict[str, int]:
    client = Client(s)
    for log in logs:
        client.send(log)
    assert client.flush(60) == 0
    m = client.metrics()
    assert m["failed"] == 0 and m["rejected"] == 0
    return m


@pytest.mark.slow
def test_a_shop_s_own_features_end_to_end(tmp_path: Path, make_topics, kafka_bootstrap: str) -> None:
    (tmp_path / "shop-v1.toml").write_text(SPEC_V1)
    (tmp_path / "shop-v2.toml").write_text(SPEC_V2)
    topics = make_topics(features=2, actions=2, examples=2, dead_letter=1)
    shop = Shop()

    # ---- month one: spec v1; two hours of traffic, joined and archived -----------------------------
    v1 = settings_for(tmp_path, "shop-v1.toml", topics, kafka_bootstrap)
    assert "visitor" in v1.features.slots and not {"user_id", "item_id", "genre"} & set(v1.features.slots)
    send(v1, click_log(shop, 0, 1800, T0, STEP_MS, colours=False, seed=1))
    run_join(v1, from_start=True, stop_when_idle=2.0, max_seconds=300)
    Archiver(v1).run(idle_s=2.0, max_s=120)
    old_hours = open_archive(v1).hours()
    assert old_hours == [T0 // HOUR_MS, T0 // HOUR_MS + 1]

    # ---- a slot is added: a compatible change ---------------------------------------------------------
    problems, notes = compatibility(load_spec(tmp_path / "shop-v1.toml"), load_spec(tmp_path / "shop-v2.toml"))
    assert problems == [] and any("'colour' (number 205) added" in n for n in notes)

    # ---- month two: spec v2 everywhere (joiner, archiver, trainer first; then the application) ---------
    v2 = settings_for(tmp_path, "shop-v2.toml", topics, kafka_bootstrap)
    send(v2, click_log(shop, 1800, 1800, T0 + 2 * HOUR_MS, STEP_MS, colours=True, seed=2))
    run_join(v2, stop_when_idle=2.0, max_seconds=300)
    Archiver(v2).run(idle_s=2.0, max_s=120)
    reader = open_archive(v2)
    fs = reader.fs
    old_file = reader.files(old_hours[0])[0]
    assert "sparse_colour" not in pq.read_schema(io.BytesIO(fs.read_bytes(old_file))).names  # written under v1
    by_hour = {h: reader.read_hour(h) for h in reader.hours()}
    assert len(by_hour) == 4
    for h, table in by_hour.items():  # the v1 hours read with a colour column of nulls, the v2 hours with colours
        colours = table.column("sparse_colour")
        assert colours.null_count == (table.num_rows if h in old_hours else 0), h
    archived = reader.count()

    # ---- batch training over every hour, then online on the examples topic ---------------------------
    trainer = Trainer(v2.trainer, v2.features)
    batch = trainer.run(ArchiveSource(reader))
    assert batch["examples_read"] == archived > 5_000
    assert trainer.ps.store.num_rows()["colour"] == 4  # every colour, from the v2 hours only
    trainer.snapshot()
    send(v2, click_log(shop, 3600, 900, T0 + 4 * HOUR_MS, STEP_MS, colours=True, seed=3))
    run_join(v2, stop_when_idle=2.0, max_seconds=300, drain=True)
    produced = count_messages(v2.kafka, [topics["examples"], topics["dead_letter"]], idle_s=1.5)
    assert produced[topics["dead_letter"]] == 0  # the client sent nothing the joiner dead-letters
    src = KafkaSource(v2.kafka, topics["examples"], "shop-trainer", "earliest")
    try:
        online = trainer.run(src, stop_when_idle_s=3.0)
    finally:
        src.close()
    assert online["duplicates"] == archived  # what batch training saw, the online run drops by example id
    assert online["examples_read"] == produced[topics["examples"]]
    summary = trainer.finish()
    print(f"\nshop: {summary['examples']} examples, progressive click AUC {summary['auc']:.4f}, "
          f"popularity baseline {summary['baseline_auc']:.4f}")
    assert summary["auc"] > summary["baseline_auc"] + 0.03

    # ---- serving scores a request built by the client, from the weights and the spec it shipped -------
    server = ModelServer(trainer.serving)
    assert server.spec.model_slots == v2.features.model_slots
    encoder = LogEncoder(server.spec)
    wins = Counter()
    for visitor in range(0, VISITORS, 50):
        seg = shop.segment[visitor]
        best, worst = np.argmax(shop.affinity[seg]), np.argmin(shop.affinity[seg])
        skus = [int(k) for c in (best, worst) for k in np.flatnonzero(shop.category == c)[:5]]
        log = FeatureLog(f"q{visitor}", visitor, T0 + 5 * HOUR_MS, shop.user(visitor), {"visitor_visits": 3.0})
        for sku in skus:
            log.add_item(sku, shop.item(sku, colours=True), {"sku_price": float(shop.price[sku])})
        scores = {d["item_id"]: d["click"] for d in server.score(encoder.record(log))}
        assert all(0.0 < p < 1.0 for p in scores.values()) and set(scores) == set(skus)
        good = np.mean([scores[k] for k in skus[:5]])
        bad = np.mean([scores[k] for k in skus[5:]])
        wins[bool(good > bad)] += 1
    assert wins[True] >= 0.8 * sum(wins.values()), wins  # the segment's favourite category ranks first
    assert CATEGORIES == 5
