"""Two trainer ranks publish deltas to one params topic; a serving replica following it holds the full model.

Also: a replica that bootstraps from the ranks' shards of an older snapshot and reads the deltas on
from there ends the same.

Real parts: `streamrec train --online --distributed --nproc 2` (torchrun, gloo) on a real Kafka
broker, and the replica's own delta loop (``serving.replica.Replica``) on the same topic. The
trainer's model is the union of the ranks' final snapshots (each holds the rows of the FIDs it
owns): the replica must hold exactly those rows, and score like the trainer's own scoring of that
state (re-sharded to one process and restored into a ``Trainer``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TopicPartition

from serving import delta
from serving.replica import Replica
from streamrec.config import load_config
from streamrec.kafka import consumer
from tests.conftest import MOVIELENS_SPEC
from tests.trainer.test_dist_inprocess import rows_of
from tests.trainer.test_distributed import ROOT, cli, produce, summary_of
from trainer.config import TrainerConfig
from trainer.distributed.reshard import old_shards, reshard
from trainer.loop import Trainer

RATINGS = 3000


def params_messages(settings, topic: str) -> list[delta.Delta]:
    c = consumer(settings.kafka, **{"enable.partition.eof": True})
    try:
        end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[delta.Delta] = []
        deadline = time.monotonic() + 60
        while len(out) < end and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                if not m.error():
                    out.append(delta.decode(m.value()))
        assert len(out) == end
        return out
    finally:
        c.close()


@pytest.mark.slow
def test_a_replica_following_two_ranks_deltas_holds_the_union_of_the_shards(settings, make_topics, tmp_path):
    from jobs.replay_examples import movielens_examples

    topics = make_topics(examples=2, params=1)
    examples = movielens_examples(MOVIELENS_SPEC, RATINGS, seed=3, speed=3600.0, window_ms=60_000, keep_rate=0.5)
    produce(settings.kafka, topics["examples"], examples, [i % 2 for i in range(len(examples))])
    out = tmp_path / "two"
    run = subprocess.run(
        cli(settings, topics["examples"], out, "--stop-when-idle", "3", "--distributed", "--nproc", "2",
            kafka__topics__params=f'"{topics["params"]}"', serving__publish='"online"',
            trainer__batch_size=32, trainer__sparse_sync_interval_s="0.05", trainer__dense_sync_interval_s="0.2",
            trainer__snapshot_every_examples=4000,
            trainer__distributed__max_restarts=0),
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = summary_of(run, tmp_path / "two.log")
    assert summary["world"] == 2 and summary["examples_read"] == len(examples)

    # both ranks published rows, under the same versions; dense weights came from rank 0 only
    msgs = params_messages(settings, topics["params"])
    commits = [m for m in msgs if m.kind == "commit"]
    versions = {r: [m.version for m in commits if m.header.get("rank") == r] for r in (0, 1)}
    assert len(versions[0]) > 3 and versions[0] == versions[1], versions
    assert any(m.kind == "dense" for m in msgs) and sum(m.kind == "rows" for m in msgs) > 2

    # a replica reads the topic from its start (no single-process snapshot to bootstrap from)
    def follow(snapshot_dir: Path) -> Replica:
        s = load_config(None, [f'kafka.bootstrap="{settings.kafka.bootstrap}"',
                               f'kafka.topics.params="{topics["params"]}"', f'serving.snapshot_dir="{snapshot_dir}"'])
        replica = Replica(s)
        replica.start()
        try:
            deadline = time.monotonic() + 60
            while not (replica.ready and replica.offset >= len(msgs)) and time.monotonic() < deadline:
                assert replica.error is None, replica.error
                time.sleep(0.1)
            assert replica.ready and replica.offset == len(msgs)
        finally:
            replica.stop()
        return replica

    def same_as_the_trainer(replica: Replica) -> None:
        for name in MOVIELENS_SPEC.model_slots:
            ids = np.fromiter(union[name], np.int64, len(union[name]))
            want = np.stack([union[name][i] for i in ids.tolist()])
            number = MOVIELENS_SPEC.number(name)
            assert len(replica.ps.tables[number]) == len(ids), name
            assert np.array_equal(replica.ps.lookup(number, ids, want.shape[1]), want), name
        assert np.allclose(replica.model.raw_scores(probe)["click"], scores, atol=1e-5)

    # the trainer's final model: the union of the two shards' rows (disjoint, both non-empty), and its
    # scores (the shards merged into one process, restored into the single-process trainer)
    world, seq, snaps = old_shards(out / "snaps")
    assert world == 2
    shards = [rows_of(p) for p in snaps]
    union = {}
    for name in MOVIELENS_SPEC.model_slots:
        parts = [sh.get(name, {}) for sh in shards]
        assert all(parts), name
        assert not set(parts[0]) & set(parts[1]), name
        union[name] = {**parts[0], **parts[1]}
    shutil.copytree(out / "snaps", tmp_path / "merged")
    (one,) = reshard(tmp_path / "merged", 1)
    t = Trainer(TrainerConfig(snapshot_dir=tmp_path / "merged", metrics_csv=None, plot=None), MOVIELENS_SPEC)
    t.restore(one)
    probe = examples[-64:]
    scores = t.score(probe)

    replica = follow(tmp_path / "no-snapshots")
    assert replica.bootstrapped_from is None
    same_as_the_trainer(replica)

    # the ranks' shards of the previous snapshot + the deltas since (read on from the smaller rank offset)
    for p in snaps:
        shutil.rmtree(p)
    older = [json.loads((p / "state.json").read_text())["params"]["offset"] for p in old_shards(out / "snaps")[2]]
    assert min(older) < len(msgs)  # deltas after it are needed
    replica = follow(out / "snaps")
    assert replica.bootstrapped_from and "shard-0-of-2" in replica.bootstrapped_from \
        and "shard-1-of-2" in replica.bootstrapped_from, replica.bootstrapped_from
    same_as_the_trainer(replica)
