"""Sustained load: the embedded joiner at 80 % of its measured maximum rate, RSS and RocksDB flat.

First the maximum: the joiner keeps up with SYNTHETIC traffic sent as fast as the client can,
beside it on the same cores. Then a replay is paced at 80 % of that while the joiner (its own
process) keeps up, for ``STREAMREC_SUSTAIN_S`` seconds (30 here; `make reliability` runs 600).
Generating the replay is slower than joining it, so the load is generated once and sent in laps
(``replay.events.looped``). Event time moves ~1000x faster than the wall clock and the TTLs are
minutes of it, so state comes and goes: after a warm-up, the process's RSS and RocksDB's size
must stay flat, and the consumer lag bounded.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from jobs.replay import ReplaySummary, send_events
from replay.events import build_events, looped
from streamrec.client import Client
from streamrec.config import Settings, load_config
from streamrec.kafka import create_topics

ROOT = Path(__file__).resolve().parents[2]
SUSTAIN_S = float(os.environ.get("STREAMREC_SUSTAIN_S", "30"))
# minutes of event time: with the replay's 1000x compression, state lives seconds of wall time
JOIN = {"joiner.window_ms": 60_000, "joiner.allowed_lateness_ms": 10_000, "joiner.ttl_ms": 300_000,
        "joiner.tombstone_ms": 60_000, "joiner.action_wait_ms": 300_000, "joiner.cache_bytes": 64 << 20,
        "joiner.log_interval_s": 1.0, "joiner.checkpoint_interval_ms": 1000}


def settings(bootstrap: str, tmp: Path, tag: str) -> tuple[Settings, list[str]]:
    ov = [f'kafka.bootstrap="{bootstrap}"', f'kafka.topics.features="{tag}-f"', f'kafka.topics.actions="{tag}-a"',
          f'kafka.topics.examples="{tag}-ex"', f'kafka.topics.dead_letter="{tag}-dl"',
          f'joiner.state_dir="{tmp / tag}"', f'joiner.group_id="{tag}"', *(f"{k}={v}" for k, v in JOIN.items())]
    s = load_config(None, ov)
    create_topics(s.kafka, s.kafka.topics.partition_counts())
    return s, ov


def joiner(ov: list[str], log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs.join_runner", *extra, *(a for o in ov for a in ("--set", o))]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def wait_for(p: subprocess.Popen, log: Path, pattern: bytes) -> re.Match:
    """The joiner's log line matching ``pattern``, once it is up (within a minute)."""
    deadline = time.monotonic() + 60
    while (found := re.search(pattern, log.read_bytes())) is None:
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    return found


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return float(re.search(rf"^{name} (\S+)", text, re.M).group(1))


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(SUSTAIN_S + 600)  # the maximum phase, warm-up and shutdown beside the load
def test_sustained_load_keeps_memory_and_rocksdb_flat(kafka_bootstrap: str, tmp_path: Path, reliability) -> None:
    # the maximum, as the machine gives it: the joiner keeping up with a sender at full speed beside it (on
    # 2 cores the sender's CPU is the joiner's; a backlog drained alone overstates what it sustains then)
    s, ov = settings(kafka_bootstrap, tmp_path, "max")
    s.replay.limit = 10_000
    pool = build_events(s.replay, "synthetic")  # generated once, sent in laps: sending keeps up, generating not
    p = joiner(ov, tmp_path / "max.log", "--stop-when-idle", "2")
    wait_for(p, tmp_path / "max.log", rb"events/s=")
    flat_out = ReplaySummary()
    t = time.monotonic()
    send_events(Client(s), looped(pool, 3), flat_out)
    assert p.wait(300) == 0, (tmp_path / "max.log").read_text()[-2000:]
    seconds = time.monotonic() - t - 2.0  # minus the idle wait (its shutdown stays in: a lower maximum)
    done = re.search(r"RunStats\(events=(\d+)", (tmp_path / "max.log").read_text())
    assert int(done.group(1)) == flat_out.messages
    max_rate = flat_out.messages / seconds
    rate = 0.8 * max_rate

    # 80 % of it, sustained
    s, ov = settings(kafka_bootstrap, tmp_path, "sustain")
    summary = ReplaySummary()

    def load() -> None:
        t = time.monotonic()
        send_events(Client(s), looped(pool, math.ceil(rate * SUSTAIN_S / len(pool))), summary, rate)
        summary.seconds = time.monotonic() - t

    replay = threading.Thread(target=load)
    # idle = 30 s: generating the replay's input may take a while before the first message
    p = joiner([*ov, "joiner.metrics_port=0"], tmp_path / "sustain.log", "--stop-when-idle", "30")
    port = int(wait_for(p, tmp_path / "sustain.log", rb"metrics on http://127.0.0.1:(\d+)").group(1))
    proc = psutil.Process(p.pid)
    replay.start()
    samples = []  # (seconds since start, rss bytes, rocksdb bytes, lag)
    t0 = time.monotonic()
    while replay.is_alive():
        time.sleep(2.0)
        with contextlib.suppress(OSError, AttributeError):
            samples.append((time.monotonic() - t0, proc.memory_info().rss,
                            metric(port, "streamrec_join_rocksdb_bytes"),
                            metric(port, "streamrec_join_consumer_lag_messages")))
    took = time.monotonic() - t0
    log = (tmp_path / "sustain.log").read_text
    assert p.poll() is None, "the joiner stopped before the load did:\n" + log()[-2000:]
    assert p.wait(150) == 0, (tmp_path / "sustain.log").read_text()[-2000:]
    warm = [x for x in samples if x[0] >= took * 0.25]
    assert len(warm) >= 3, f"{len(samples)} samples of the joiner's metrics in {took:.0f}s"
    start, end = warm[0], warm[-1]
    # RocksDB's size is a sawtooth (flushes, then compactions): flat = the peak of the second half
    # of the run is not above the peak of the first
    half = len(warm) // 2
    db_first, db_second = max(x[2] for x in warm[:half]), max(x[2] for x in warm[half:])
    mb = 1 << 20
    achieved = summary.messages / summary.seconds
    reliability.record("sustained load (embedded joiner)", seconds=round(took), max_rate=round(max_rate),
                       target_rate=round(rate), achieved_rate=round(achieved),
                       rss_start_mb=round(start[1] / mb), rss_end_mb=round(end[1] / mb),
                       rocksdb_start_mb=round(start[2] / mb, 1), rocksdb_end_mb=round(end[2] / mb, 1),
                       rocksdb_peak_first_half_mb=round(db_first / mb, 1),
                       rocksdb_peak_second_half_mb=round(db_second / mb, 1),
                       max_lag=max(x[3] for x in warm))
    print(f"\nsustained {took:.0f}s at {achieved:,.0f}/s (target {rate:,.0f}/s, max {max_rate:,.0f}/s): "
          f"RSS {start[1] / mb:.0f} -> {end[1] / mb:.0f} MB, RocksDB {start[2] / mb:.1f} -> {end[2] / mb:.1f} MB "
          f"(peaks {db_first / mb:.1f}, {db_second / mb:.1f}), "
          f"max lag {max(x[3] for x in warm):,.0f}")
    assert end[1] <= start[1] * 1.25 + 32 * mb  # RSS flat
    assert db_second <= db_first * 1.25 + 16 * mb  # RocksDB flat
    assert achieved >= 0.85 * rate  # the load was what it says
    assert max(x[3] for x in warm) < rate * 10  # it kept up: never 10 s behind
