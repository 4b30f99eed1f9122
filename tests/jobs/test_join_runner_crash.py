"""Crash safety of the embedded runner: kill -9 at random points during a replay, then compare.

exactly-once (the default): a ``read_committed`` reader sees every example once, also when the
crash falls between a transaction's commit and its RocksDB WriteBatch. at-least-once: every
duplicate is a byte-identical copy.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.flink.feed import produce_recorded
from jobs.join_runner import CRASH_AFTER_COMMIT_ENV, CRASH_EXIT, run_join
from jobs.replay import encode_events, run_replay
from replay.events import build_events
from schemas.codec import default_codec
from streamrec.config import Settings
from streamrec.kafka import drain

ROOT = Path(__file__).resolve().parents[2]
codec = default_codec()


def preload(s: Settings, limit: int) -> int:
    s.replay.limit = limit
    return run_replay(s, "movielens", quiet=True, read_back=False).messages


def preload_disordered(s: Settings, limit: int, seed: int = 3) -> int:
    """A MovieLens replay sent out of order by up to 5x the allowed lateness (Kafka timestamps
    still the event times): windows close before some of their actions come."""
    s.replay.limit = limit
    events = build_events(s.replay, "movielens")
    rng = random.Random(seed)
    jitter = 5 * s.joiner.allowed_lateness_ms
    order = sorted(range(len(events)), key=lambda i: events[i].log.ts_ms + rng.randint(0, jitter))
    topic = {"features": s.kafka.topics.features, "actions": s.kafka.topics.actions}
    values = encode_events(events, s.features)
    produce_recorded(s.kafka, [(topic[events[i].role], events[i].key.encode(), values[i], None,
                                events[i].log.ts_ms) for i in order])
    return len(events)


def examples(s: Settings, topic: str) -> tuple[dict[str, dict], int]:
    """Examples by id as a read_committed reader sees them, and how many messages that took.
    A duplicate must be a byte-identical copy."""
    by_id: dict[str, dict] = {}
    raw_by_id: dict[str, bytes] = {}
    raw = 0
    for m in drain(s.kafka, [topic], idle_s=1.5):
        rec = codec.decode(m.value())[1]
        raw += 1
        assert raw_by_id.setdefault(rec["example_id"], m.value()) == m.value(), "a duplicate differs"
        by_id[rec["example_id"]] = rec
    return by_id, raw


def runner_cmd(s: Settings, examples_topic: str, state_dir: Path, delivery: str = "exactly-once",
               checkpoint_ms: int = 250, round_size: int = 2500) -> list[str]:
    t = s.kafka.topics
    sets = {"joiner.delivery": delivery, "joiner.group_id": f"g-{state_dir.name}",
        "kafka.bootstrap": s.kafka.bootstrap, "kafka.topics.features": t.features,
        "kafka.topics.actions": t.actions, "kafka.topics.examples": examples_topic,
        "kafka.topics.dead_letter": t.dead_letter, "joiner.state_dir": str(state_dir),
        "joiner.checkpoint_interval_ms": checkpoint_ms, "joiner.round_size": round_size,
        "joiner.consume_batch": 500, "joiner.log_interval_s": 0.3,
        "joiner.cache_bytes": 4 << 20,
    }
    cmd = [sys.executable, "-m", "jobs.join_runner", "--stop-when-idle", "2"]
    for k, v in sets.items():
        cmd += ["--set", f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}"]
    return cmd


def clean_run(s: Settings, make_topics: Callable[..., dict[str, str]], tmp_path: Path,
              n_events: int) -> dict[str, dict]:
    """The same input joined in-process without a crash, into its own examples topic."""
    clean = s.model_copy(deep=True)
    clean.kafka.topics.examples = make_topics(examples=2)["examples"]
    clean.joiner.state_dir = tmp_path / "clean-state"
    clean.joiner.group_id = "g-clean"
    clean.joiner.cache_bytes = 4 << 20
    st = run_join(clean, from_start=True, stop_when_idle=1.5)
    assert st.events == n_events
    want, raw = examples(s, clean.kafka.topics.examples)
    assert raw == len(want) > 1000
    return want


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.parametrize("delivery", ["exactly-once", "at-least-once"])
def test_kill_9_at_random_points_loses_nothing(settings: Settings, make_topics: Callable[..., dict[str, str]],
                                              tmp_path: Path, delivery: str, reliability) -> None:
    """With disorder beyond the allowed lateness: rounds make every run join alike."""
    s = settings
    n_events = preload_disordered(s, limit=8000)
    want = clean_run(s, make_topics, tmp_path, n_events)
    assert any(k.startswith("late-") for k in Counter(e["kind"] for e in want.values()))

    # the crashing run: a subprocess killed with SIGKILL at random points, restarted each time
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    state = tmp_path / "crash-state"
    crash_topic = s.kafka.topics.examples
    cmd = runner_cmd(s, crash_topic, state, delivery)
    kills = 0
    logs = []
    while kills < 5:
        logs.append(tmp_path / f"runner-{kills}.log")
        with open(logs[-1], "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            # kill while it works: after its first progress line, at a random point
            deadline = time.monotonic() + 30
            while b"events/s=" not in logs[-1].read_bytes() and proc.poll() is None:
                assert time.monotonic() < deadline, "runner made no progress"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.2))
            if proc.poll() is not None:
                pytest.fail(f"runner finished before it could be killed: {logs[-1].read_text()[-2000:]}")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    logs.append(tmp_path / "runner-final.log")
    with open(logs[-1], "wb") as out:
        final = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=120)
    assert final.returncode == 0, logs[-1].read_text()[-3000:]

    got, raw = examples(s, crash_topic)  # duplicates byte-identical (asserted while reading)
    dupes = raw - len(got)
    print(f"\ncrash test ({delivery}): {kills} kills, {len(got)} distinct examples, {raw} raw, {dupes} duplicates "
          f"({dupes / max(1, raw):.1%}); clean run {len(want)}")
    reliability.record(f"joiner kill -9 ({delivery}; disorder 5x the lateness)", kills=kills, examples=len(want),
                       lost=len(set(want) - set(got)), duplicates=dupes, identical=True,
                       equals_clean_run=got == want)
    assert set(got) == set(want), f"lost {len(set(want) - set(got))}, extra {len(set(got) - set(want))}"
    assert got == want
    if delivery == "exactly-once":
        assert dupes == 0
    kinds = Counter(e["kind"] for e in got.values())
    assert kinds["window"] > 0


@pytest.mark.reliability
def test_crash_between_commit_and_writebatch_is_caught_up(
        settings: Settings, make_topics: Callable[..., dict[str, str]], tmp_path: Path, reliability) -> None:
    """The narrow window of exactly-once: Kafka has the output and the offsets, RocksDB does not."""
    s = settings
    n_events = preload(s, limit=6000)
    want = clean_run(s, make_topics, tmp_path, n_events)
    # commits every 20 ms, small rounds: each crash below falls after a commit of new input
    cmd = runner_cmd(s, s.kafka.topics.examples, tmp_path / "state", checkpoint_ms=20, round_size=200)
    for n, crash_after in enumerate((2, 4, 3)):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120,
                           env={**os.environ, CRASH_AFTER_COMMIT_ENV: str(crash_after)})
        assert r.returncode == CRASH_EXIT, r.stderr.decode()[-3000:]
        if n:  # every restart after such a crash replayed the committed span without output
            assert b"catching up with the last committed transaction" in r.stderr, r.stderr.decode()[-3000:]
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    assert b"catching up with the last committed transaction" in final.stderr
    got, raw = examples(s, s.kafka.topics.examples)
    reliability.record("joiner crash between commit and WriteBatch (exactly-once)", kills=3, examples=len(want),
                       lost=len(set(want) - set(got)), duplicates=raw - len(got), equals_clean_run=got == want)
    assert got == want
    assert raw == len(got)  # not one example twice


def test_sigterm_stops_cleanly_and_a_restart_duplicates_nothing(
        settings: Settings, make_topics: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    s = settings
    n_events = preload(s, limit=6000)
    cmd = runner_cmd(s, s.kafka.topics.examples, tmp_path / "state")
    logf = tmp_path / "runner.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"events/s=" not in logf.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, logf.read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, logf.read_text()[-2000:]
    first = logf.read_text()
    done = [line for line in first.splitlines() if "done: RunStats(events=" in line]
    assert done, first[-2000:]
    stopped_at = int(done[0].split("RunStats(events=")[1].split(",")[0])
    assert 0 < stopped_at <= n_events  # it stopped on the signal (usually in the middle: printed below)
    print(f"\nSIGTERM after {stopped_at} of {n_events} events")
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120)
    assert final.returncode == 0
    got, raw = examples(s, s.kafka.topics.examples)
    assert raw == len(got) > 0  # a clean stop checkpoints after flushing: nothing is produced twice
