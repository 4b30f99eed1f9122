"""Delta messages: encode/decode round trip, and replaying a trainer's syncs rebuilds its serving PS."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from serving import delta
from serving.ps import ServingPS
from serving.replica import Replica
from streamrec.config import load_config
from tests.conftest import movielens_with
from trainer.config import TrainerConfig
from trainer.loop import Trainer
from trainer.sources import MemorySource
from trainer.synthetic import synthetic_examples


def test_round_trip_splits_by_size_and_keeps_every_row():
    rng = np.random.default_rng(1)
    ids = rng.integers(-(1 << 62), 1 << 62, 1000)
    rows = rng.normal(size=(1000, 16)).astype(np.float32)
    msgs = delta.encode_rows(7, 6, ids, rows, chunk_rows=300)
    assert len(msgs) == 4 and all(len(m) < 300 * (8 + 64) + 200 for m in msgs)
    got = [delta.decode(m) for m in msgs]
    assert {d.kind for d in got} == {"rows"} and {d.version for d in got} == {7} and {d.slot for d in got} == {6}
    assert np.array_equal(np.concatenate([d.ids for d in got]), ids)
    assert np.array_equal(np.concatenate([d.rows for d in got]), rows)
    dense = delta.encode_dense(8, b"x" * 2500, {"dense_version": 3}, part_bytes=1000)
    parts = [delta.decode(m) for m in dense]
    assert [p.header["part"] for p in parts] == [0, 1, 2] and parts[0].header["meta"] == {"dense_version": 3}
    assert b"".join(p.payload for p in parts) == b"x" * 2500
    c = delta.decode(delta.encode_commit(8, {"ingest_ms": 5}))
    assert c.kind == "commit" and c.header["ingest_ms"] == 5
    with pytest.raises(ValueError, match="not a parameter delta"):
        delta.decode(b"\xc3\x01garbage")


class Recorder:
    """The publisher's methods, writing encoded deltas to a list instead of Kafka (the Kafka path is
    tested end to end in test_serving_service)."""

    needs_full_sync = False

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.version = 1

    def push_slot(self, slot, ids, rows):
        self.messages += delta.encode_rows(self.version, slot, ids, rows, 500)

    def delete_rows(self, slot, ids):
        self.messages += delta.encode_delete(self.version, slot, ids, 500)
        return len(ids)

    def mark_synced(self, event_ms, ingest_ms, oldest_ms=0):
        self.messages.append(delta.encode_commit(self.version, {"ingest_ms": ingest_ms, "event_ms": event_ms,
                                                                "oldest_ingest_ms": oldest_ms}))
        self.version += 1

    def push_dense(self, state, meta):
        buf = io.BytesIO()
        torch.save(state, buf)
        self.messages += delta.encode_dense(self.version, buf.getvalue(), meta, 4000)
        self.mark_synced(0, 0)

    def num_rows(self):
        return 0


def test_replaying_deltas_rebuilds_the_trainers_rows_deletes_and_weights(tmp_path):
    spec = movielens_with({"slots": {"item_id": {"ttl_s": 30}}})
    cfg = TrainerConfig(snapshot_dir=tmp_path / "s", metrics_csv=None, plot=None, sparse_sync_interval_s=0.01,
                        evict_interval_s=0.01, batch_size=64)
    rec = Recorder()
    t = Trainer(cfg, spec, serving=rec)
    recs = synthetic_examples(spec, 3000, users=50, items=300, seed=2, step_ms=200, keep_rate=0.5)
    t.run(MemorySource(recs))
    replica = Replica(load_config(None, []))
    for m in rec.messages:
        replica.apply(delta.decode(m))
    kinds = {delta.decode(m).kind for m in rec.messages}
    assert kinds == {"rows", "delete", "dense", "commit"}  # TTL evictions were published
    for name, tables in t.ps.store.tables.items():
        ids = np.concatenate([tb.items()[0] for tb in tables])
        rows, found = t.ps.rows(name, ids)
        number = spec.number(name)
        assert np.array_equal(replica.ps.lookup(number, ids, rows.shape[1]), rows), name
        assert replica.ps.tables[number].__len__() == len(ids), name  # evicted rows are gone here too
    assert replica.version == rec.version - 1
    probe = recs[-40:]
    assert np.allclose(replica.model.raw_scores(probe)["click"], t.score(probe), atol=1e-6)
    assert isinstance(replica.ps, ServingPS) and replica.ps.meta["keep_rates"] == t.ps.keep_rates()
