"""kill -9 the online trainer mid-stream, restore: it resumes from the snapshot's offsets, trains
on every example exactly once overall, and the AUC curve continues (real broker, real process)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.codec import default_codec
from streamrec.kafka import producer
from tests.conftest import movielens_with
from trainer import snapshot
from trainer.synthetic import synthetic_examples

ROOT = Path(__file__).resolve().parents[2]
N_SOURCE = 12_000
KEEP = ["user_id", "item_id", "age", "genre"]
SPEC = movielens_with({}, keep=KEEP)


def produce(kafka_cfg, topic: str, records: list[dict]) -> None:
    codec = default_codec()
    p = producer(kafka_cfg)
    for r in records:
        p.produce(topic, codec.encode("TrainingExample", r), key=r["request_id"])
        p.poll(0)
    assert p.flush(30) == 0


def cli(settings, tmp_path: Path, *args: str) -> list[str]:
    sets = {
        "kafka.bootstrap": f'"{settings.kafka.bootstrap}"',
        "kafka.topics.examples": f'"{settings.kafka.topics.examples}"',
        "trainer.snapshot_dir": f'"{tmp_path / "snaps"}"',
        "trainer.metrics_csv": f'"{tmp_path / "metrics.csv"}"',
        "trainer.plot": f'"{tmp_path / "auc.png"}"',
        **{f"features.slots.{n}.retired": "true" for n in SPEC.slots if n not in KEEP},
        "trainer.batch_size": "8",
        "trainer.workers": "2",
        "trainer.snapshot_every_s": "0",
        "trainer.snapshot_every_examples": "1500",
        "trainer.eval_window_ms": "60000",
        "trainer.eval_lateness_ms": "0",
    }
    cmd = [sys.executable, "-c", "from cli.main import main; main()"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd + ["train", *args]


@pytest.mark.slow
@pytest.mark.reliability
def test_kill9_then_restore_resumes_from_snapshot_offsets(settings, kafka_cfg, tmp_path, reliability):
    records = synthetic_examples(SPEC, N_SOURCE, users=300, items=200, seed=9, step_ms=200, keep_rate=0.5)
    produce(kafka_cfg, settings.kafka.topics.examples, records)
    n = len(records)
    snaps = tmp_path / "snaps"
    with open(tmp_path / "run1.log", "w") as log1:
        p1 = subprocess.Popen(cli(settings, tmp_path, "--online", "--stop-when-idle", "60"), cwd=ROOT,
                              stdout=log1, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            last = snapshot.latest(snaps)
            if last is not None and json.loads((last / "state.json").read_text())["examples"] >= 3000:
                break
            assert p1.poll() is None, (tmp_path / "run1.log").read_text()
            time.sleep(0.05)
        else:
            pytest.fail("no snapshot within 120 s")
        time.sleep(0.3)  # let it train past the snapshot, then crash hard
        assert p1.poll() is None, "the trainer finished before it could be killed mid-stream"
        os.kill(p1.pid, signal.SIGKILL)
        p1.wait(10)
    finally:
        if p1.poll() is None:
            p1.kill()
            p1.wait(10)
    last = snapshot.latest(snaps)
    state = json.loads((last / "state.json").read_text())
    assert 0 < state["examples"] < n
    offsets = state["positions"][f"kafka:{settings.kafka.topics.examples}"]
    assert sum(offsets.values()) == state["examples"]  # no duplicates in the topic: one offset per example

    out = subprocess.run(cli(settings, tmp_path, "--online", "--restore", "--stop-when-idle", "3"), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"]["positions"] == state["positions"]
    assert summary["resumed_from"]["snapshot"] == str(last)
    # every example trained exactly once across the crash: snapshot's count + the replayed rest
    reliability.record("trainer kill -9, restore from snapshot", kills=1, examples=n,
                       lost=n - summary["examples_read"], duplicates=summary["duplicates"])
    assert summary["examples_read"] == n and summary["duplicates"] == 0
    assert summary["examples"] == n  # every example was scored once by the progressive evaluator
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    starts = [int(r["window_start_ms"]) for r in rows]
    assert starts == sorted(set(starts))  # the curve continues: no window twice, none reopened
    assert sum(int(r["examples"]) for r in rows) == n
    span_windows = (records[-1]["ts_ms"] // 60000) - (records[0]["ts_ms"] // 60000) + 1
    assert len(rows) == span_windows
    assert float(rows[-1]["cum_auc"]) > 0.6
