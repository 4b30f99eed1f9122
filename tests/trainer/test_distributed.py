"""Two trainer ranks under torchrun on a real Apache Kafka topic, against one process.

`streamrec train --online --distributed --nproc 2` starts torchrun (c10d rendezvous on a free
loopback port); each rank reads its own partitions of the examples topic, owns a shard of every
slot's table and exchanges rows and gradients with the other over gloo.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import TopicPartition

from jobs.replay_examples import movielens_examples
from schemas.codec import default_codec
from streamrec import kafka
from streamrec.kafka import consumer, producer
from tests.conftest import MOVIELENS_SPEC
from trainer import snapshot

ROOT = Path(__file__).resolve().parents[2]
RATINGS = 4000


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return movielens_examples(MOVIELENS_SPEC, RATINGS, seed=7, speed=3600.0, window_ms=60_000, keep_rate=0.5)


def produce(kafka_cfg, topic: str, records: list[dict], partitions: list[int] | None = None) -> dict[str, int]:
    """Write the examples keyed by request id (to the given partitions, else by key); return the
    end offset of each partition."""
    codec = default_codec()
    p = producer(kafka_cfg)
    for i, r in enumerate(records):
        where = {} if partitions is None else {"partition": partitions[i]}
        p.produce(topic, codec.encode("TrainingExample", r), key=r["request_id"], **where)
        p.poll(0)
    assert p.flush(30) == 0
    c = consumer(kafka_cfg)
    try:
        n = len(kafka.partitions_of(c, topic))
        return {f"{topic}:{k}": c.get_watermark_offsets(TopicPartition(topic, k), timeout=10)[1] for k in range(n)}
    finally:
        c.close()


def as_read_by_two_ranks(records: list[dict], batch: int) -> tuple[list[dict], list[int]]:
    """The examples split over two partitions (alternating runs of ``batch``, so both partitions
    advance through event time together), and the order in which two ranks reading ``batch`` at a
    time from one partition each train them: the stream one process must read to see the same order.

    Progressive AUC depends on the order of the stream, which Kafka fixes only within a partition;
    one consumer of several partitions reads each partition's backlog in large fetches, an order
    far from the ranks'. Compared on the same order, the two trainers must agree."""
    part = [(i // batch) % 2 for i in range(len(records))]
    lanes = [[r for r, p in zip(records, part, strict=True) if p == k] for k in (0, 1)]
    merged = []
    for i in range(0, max(len(lane) for lane in lanes), batch):
        merged += lanes[0][i:i + batch] + lanes[1][i:i + batch]
    return merged, part


def cli(settings, topic: str, out: Path, *args: str, **sets: object) -> list[str]:
    base = {
        "kafka.bootstrap": f'"{settings.kafka.bootstrap}"', "kafka.topics.examples": f'"{topic}"',
        "trainer.snapshot_dir": f'"{out / "snaps"}"', "trainer.metrics_csv": f'"{out / "metrics.csv"}"',
        "trainer.plot": f'"{out / "auc.png"}"', "trainer.consumer_group": f'"{out.name}"',
        "trainer.dense_lr": "0.003", "trainer.snapshot_every_s": "0", "trainer.eval_window_ms": "60000",
        "trainer.eval_lateness_ms": "120000", **{k.replace("__", "."): v for k, v in sets.items()},
    }
    cmd = [sys.executable, "-m", "cli.main"]
    for k, v in base.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd + ["train", "--online", *args]


def summary_of(out: subprocess.CompletedProcess, log: Path) -> dict:
    log.write_text(out.stderr)
    errors = [line for line in out.stderr.splitlines() if "Error" in line]
    assert out.returncode == 0, f"{log}: {errors[-10:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_ranks_match_one_process_and_read_every_partition_once(settings, make_topics, examples, tmp_path):
    topics = make_topics(examples=2, reference=1)
    topic = topics["examples"]
    merged, part = as_read_by_two_ranks(examples, 32)
    ends = produce(settings.kafka, topic, examples, part)
    produce(settings.kafka, topics["reference"], merged, [0] * len(merged))
    n = len(examples)
    assert sum(ends.values()) == n
    # one process, one worker (synchronous), 64 examples a step; two ranks, 32 + 32 a step
    one = summary_of(subprocess.run(
        cli(settings, topics["reference"], tmp_path / "one", "--stop-when-idle", "3", trainer__workers=1,
            trainer__batch_size=64), cwd=ROOT, capture_output=True, text=True, timeout=600), tmp_path / "one.log")
    two = summary_of(subprocess.run(
        cli(settings, topic, tmp_path / "two", "--stop-when-idle", "3", "--distributed", "--nproc", "2",
            trainer__batch_size=32, trainer__distributed__max_restarts=0), cwd=ROOT, capture_output=True, text=True,
        timeout=600), tmp_path / "two.log")
    print(f"\n{n} examples: progressive AUC one process {one['auc']:.4f}, two ranks {two['auc']:.4f} "
          f"(popularity {two['baseline_auc']:.4f}); rows per shard {two['rows_per_shard']}")
    assert two["world"] == 2 and one["examples"] == two["examples"] == n
    assert abs(one["auc"] - two["auc"]) < 0.005
    assert two["auc"] > two["baseline_auc"] + 0.02
    # every partition read by exactly one rank, from its first to its last offset, none skipped
    by_rank = [r["read_by_partition"] for r in two["ranks"]]
    assert all(r for r in by_rank), by_rank  # both ranks had partitions
    assert not set(by_rank[0]) & set(by_rank[1])
    assert {**by_rank[0], **by_rank[1]} == ends
    assert {**two["ranks"][0]["positions"][f"kafka:{topic}"], **two["ranks"][1]["positions"][f"kafka:{topic}"]} == ends
    assert two["examples_read"] == n and two["duplicates"] == 0
    # the same FIDs got rows, now split over two shards, evenly
    assert sum(two["rows_per_shard"]) == one["rows"]
    assert two["shard_balance"] <= 0.10
    assert [p.name for p in sorted((tmp_path / "two" / "snaps").iterdir())] == ["shard-0-of-2", "shard-1-of-2"]


def rank_pid(top: subprocess.Popen, rank: int) -> int | None:
    """The pid of the worker process of ``rank`` under the torchrun that ``top`` started."""
    try:
        for p in psutil.Process(top.pid).children(recursive=True):
            try:
                env = p.environ()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            if env.get("RANK") == str(rank) and env.get("TORCHELASTIC_RESTART_COUNT") == "0":
                return p.pid
    except psutil.NoSuchProcess:
        return None
    return None


@pytest.mark.slow
@pytest.mark.reliability
def test_kill9_of_one_rank_restarts_from_the_last_snapshot(settings, make_topics, examples, tmp_path, reliability):
    topic = make_topics(examples=4)["examples"]
    ends = produce(settings.kafka, topic, examples)
    n = len(examples)
    out = tmp_path / "job"
    snaps = out / "snaps"
    cmd = cli(settings, topic, out, "--stop-when-idle", "5", "--distributed", "--nproc", "2",
              trainer__batch_size=16, trainer__snapshot_every_examples=2000, trainer__distributed__max_restarts=1)
    with open(tmp_path / "job.log", "w") as log:
        top = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            last = snapshot.latest(snaps / "shard-1-of-2")
            if last is not None and json.loads((last / "state.json").read_text())["examples"] >= 4000:
                break
            assert top.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail("no snapshot of 4000 examples within 180 s")
        victim = rank_pid(top, 1)
        assert victim is not None, "rank 1 not found under torchrun"
        os.kill(victim, signal.SIGKILL)
        stdout, _ = top.communicate(timeout=600)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(10)
    log_text = (tmp_path / "job.log").read_text()
    assert top.returncode == 0, log_text[-4000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    resumed = summary["resumed_from"]
    assert resumed is not None and 0 < resumed["examples"] < n, "the restart did not resume from a snapshot"
    assert "shard-0-of-2" in resumed["snapshot"]
    reliability.record("distributed trainer: kill -9 of rank 1, torchrun elastic restart", kills=1, examples=n,
                       lost=n - summary["examples_read"], duplicates=summary["duplicates"])
    # every example trained once in the final state: the snapshot's + those replayed after it
    assert summary["examples"] == summary["examples_read"] == n and summary["duplicates"] == 0
    assert {**summary["ranks"][0]["positions"][f"kafka:{topic}"],
            **summary["ranks"][1]["positions"][f"kafka:{topic}"]} == ends
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    starts = [int(r["window_start_ms"]) for r in rows]
    assert starts == sorted(set(starts))  # the curve continues: no window twice
    assert sum(int(r["examples"]) for r in rows) == n
    assert float(rows[-1]["cum_auc"]) > float(rows[-1]["cum_baseline_auc"])
