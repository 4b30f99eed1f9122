"""The scoring fast paths equal the plain ones (differential): FIDs without Avro, bags without
per-item records; and the encoder's FID record rejects what ``feature_log`` rejects, naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from serving.model_server import ModelServer
from streamrec.client import FeatureLog, LogEncoder, SpecError
from tests.conftest import MOVIELENS_SPEC
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.sources import MemorySource
from trainer.synthetic import synthetic_examples

SPEC = MOVIELENS_SPEC


def logs(n: int, seed: int) -> list[FeatureLog]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        u = int(rng.integers(50))
        log = FeatureLog(f"r{k}", u, 1_700_000_000_000 + k, {"user_id": u, "age": str(u % 7), "gender": "MF"[u % 2]},
                         {"user_activity": float(u)} if k % 2 else {})
        for i in rng.choice(80, int(rng.integers(1, 12)), replace=False).tolist():
            sparse = {"item_id": i, "genre": [f"g{i % 5}", f"g{i % 3}"][: 1 + i % 2]}
            if i % 4:
                sparse["year"] = str(1990 + i % 9)
            log.add_item(i, sparse, {"item_popularity": float(i)} if i % 3 else {})
        out.append(log)
    return out


def test_fid_record_equals_the_encoded_one():
    enc = LogEncoder(SPEC)
    for log in logs(40, 1):
        assert enc.fids(log) == enc.record(log)


@pytest.mark.parametrize("change,field", [
    (lambda g: g.user.update(colour="red"), "user.colour"),
    (lambda g: g.items[1].sparse.update(age="3"), "items[1].sparse.age"),
    (lambda g: g.items[0].sparse.update(item_id="seven"), "items[0].sparse.item_id"),
    (lambda g: g.items[0].dense.update(item_popularity=float("nan")), "items[0].dense.item_popularity"),
    (lambda g: g.items[1].dense.update(price=1.0), "items[1].dense.price"),
    (lambda g: g.items.clear(), "items"),
])
def test_fid_record_rejects_what_feature_log_rejects(change, field):
    enc = LogEncoder(SPEC)
    log = logs(1, 2)[0]
    while len(log.items) < 2:
        log.add_item(1000 + len(log.items), {"item_id": 1000 + len(log.items)})
    change(log)
    with pytest.raises(SpecError) as a:
        enc.feature_log(log)
    with pytest.raises(SpecError) as b:
        enc.fids(log)
    assert a.value.field == b.value.field == field


def test_bags_of_whole_requests_score_like_records_per_item(tmp_path):
    cfg = TrainerConfig(snapshot_dir=tmp_path / "s", metrics_csv=None, plot=None, batch_size=64)
    t = Trainer(cfg, SPEC)
    t.run(MemorySource(synthetic_examples(SPEC, 1500, users=50, items=80, seed=2, keep_rate=0.5)))
    server = ModelServer(t.serving)
    enc = LogEncoder(SPEC)
    records = [enc.fids(log) for log in logs(25, 3)]
    fast = server.raw_scores_logs(records)
    plain = server.raw_scores([e for r in records for e in ModelServer.examples_of(r)])
    assert set(fast) == {"click", "like"}
    for head in fast:
        assert np.allclose(fast[head], plain[head], atol=1e-6, rtol=0)
