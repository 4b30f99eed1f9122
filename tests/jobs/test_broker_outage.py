"""kill -9 the broker in the middle of a replay, with the embedded joiner running, then restart it.

The broker's log dir is durable and it comes back on the same port: the replay's producer and
the joiner reconnect by themselves, and the joiner's output equals a clean run's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy.broker import Broker
from jobs.join_runner import run_join
from jobs.replay import run_replay
from schemas.codec import default_codec
from streamrec.config import Settings, load_config
from streamrec.kafka import create_topics, drain

ROOT = Path(__file__).resolve().parents[2]


def read_examples(s: Settings, topic: str) -> tuple[dict[str, bytes], int]:
    codec = default_codec()
    by_id: dict[str, bytes] = {}
    raw = 0
    for m in drain(s.kafka, [topic], idle_s=2.0):
        raw += 1
        by_id.setdefault(codec.decode(m.value())[1]["example_id"], m.value())
    return by_id, raw


@pytest.mark.slow
@pytest.mark.reliability
def test_broker_kill_9_and_restart_mid_replay(tmp_path: Path, reliability) -> None:
    with Broker(tmp_path / "broker") as broker:
        s = load_config(None, [f'kafka.bootstrap="{broker.bootstrap}"', f'joiner.state_dir="{tmp_path / "joiner"}"',
                               "replay.limit=6000", "replay.rate=8000"])
        create_topics(s.kafka, {**s.kafka.topics.partition_counts(), "clean-examples": 2})
        sets = [f'kafka.bootstrap="{broker.bootstrap}"', f'joiner.state_dir="{tmp_path / "joiner"}"',
                "joiner.checkpoint_interval_ms=200", "joiner.log_interval_s=0.5",
                # longer than the outage: a partition waiting for the producer's retries keeps holding the
                # watermark back, else the others' progress would make its actions late (the default, 2 s,
                # favours freshness)
                "joiner.idle_partition_ms=60000"]
        log = tmp_path / "joiner.log"
        with open(log, "wb") as out:
            cmd = [sys.executable, "-m", "jobs.join_runner", "--stop-when-idle", "20"]
            joiner = subprocess.Popen([*cmd, *(a for x in sets for a in ("--set", x))],
                                      cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        sent: dict = {}
        replay = threading.Thread(target=lambda: sent.setdefault(
            "summary", run_replay(s, "movielens", quiet=True, read_back=False)))
        try:
            deadline = time.monotonic() + 60
            while b"events/s=" not in log.read_bytes():  # the joiner is up before the replay starts
                assert joiner.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            replay.start()
            while b"events=0 " in log.read_bytes().splitlines()[-1]:
                assert joiner.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(1.0)  # mid-replay
            assert replay.is_alive(), "the replay ended before the outage"
            broker.kill()
            time.sleep(2.0)
            broker.start()
            replay.join(180)
            assert not replay.is_alive() and "summary" in sent, "the replay did not finish after the restart"
            assert joiner.wait(240) == 0, log.read_text()[-3000:]
        finally:
            if joiner.poll() is None:
                joiner.kill()
        got, raw = read_examples(s, s.kafka.topics.examples)

        clean = s.model_copy(deep=True)
        clean.kafka.topics.examples = "clean-examples"
        clean.joiner.state_dir = tmp_path / "clean"
        clean.joiner.group_id = "clean"
        st = run_join(clean, from_start=True, stop_when_idle=2.0)
        # all of it; a little more if the replay's producer re-sent what the killed broker had not flushed to
        # disk (kill -9 loses the page cache's tail): the live run read those same messages
        assert sent["summary"].messages <= st.events <= sent["summary"].messages * 1.01
        want, _ = read_examples(s, "clean-examples")

    print(f"\nbroker outage: {len(got)} examples, {raw - len(got)} duplicates; clean run {len(want)}")
    assert len(want) > 1000
    reliability.record("broker kill -9 + restart mid-replay (joiner running)", kills=1, examples=len(want),
                       lost=len(set(want) - set(got)), duplicates=raw - len(got), equals_clean_run=got == want)
    assert set(got) == set(want), f"lost {len(set(want) - set(got))}, extra {len(set(got) - set(want))}"
    assert got == want  # byte for byte
