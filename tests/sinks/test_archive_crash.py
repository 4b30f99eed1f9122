"""Crash and outage: kill -9 of the dumper mid-stream, HDFS stopped mid-write. Nothing lost or doubled."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from archive_helpers import SPEC, make_examples, normalize, produce

from sinks import manifest
from sinks.archive import Archiver
from sinks.fs import LocalFS
from sinks.reader import ArchiveReader
from sinks.table import to_records

ROOT = Path(__file__).resolve().parents[2]


def archived_ids(fs) -> tuple[Counter, dict]:
    recs = [r for b in ArchiveReader(fs, SPEC).batches(batch_rows=4096) for r in to_records(b)]
    return Counter(r["example_id"] for r in recs), {r["example_id"]: r for r in recs}


def stream_with_duplicates(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    recs = make_examples(n, step_ms=500, seed=seed)
    rng = random.Random(seed)
    stream = list(recs)
    for r in rng.sample(recs, n // 20):  # 5% sent again, a little later
        stream.insert(min(len(stream), recs.index(r) + rng.randrange(1, 2000)), r)
    return recs, stream


def produce_paced(settings, records: list[dict], seconds: float) -> threading.Thread:
    """Produce ``records`` in chunks spread over ``seconds``, in a thread (the stream goes on during kills)."""
    chunks = [records[i:i + 250] for i in range(0, len(records), 250)]

    def run() -> None:
        for chunk in chunks:
            produce(settings.kafka, settings.kafka.topics.examples, chunk)
            time.sleep(seconds / len(chunks))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def dumper_cmd(settings, *args: str, roll_age: float = 0.2) -> list[str]:
    a = settings.archive
    sets = [
        f'kafka.bootstrap="{settings.kafka.bootstrap}"',
        f'kafka.topics.examples="{settings.kafka.topics.examples}"',
        f'kafka.topics.dead_letter="{settings.kafka.topics.dead_letter}"',
        f'stack.run_dir="{settings.stack.run_dir}"',
        f'archive.target="{a.target}"', f'archive.root="{a.root}"',
        f'archive.hdfs_url="{a.hdfs_url}"', f'archive.hdfs_root="{a.hdfs_root}"',
        "archive.retry_initial_s=0.2", "archive.retry_max_s=1.0",
    ]
    cmd = [sys.executable, "-c", "from cli.main import main; main()"]
    for s in sets:
        cmd += ["--set", s]
    return [*cmd, "archive", "--roll-age", str(roll_age), *args]


@pytest.mark.slow
@pytest.mark.reliability
def test_kill9_during_stream_loses_and_duplicates_nothing(target, fast_settings, tmp_path, reliability):
    """kill -9 the `streamrec archive` process 6 times while examples stream in; then let it finish."""
    _, fs = target
    recs, stream = stream_with_duplicates(12_000, seed=21)
    parts = [stream[i::6] for i in range(6)]  # one slice of the stream produced during each run
    rng = random.Random(5)
    kills, seq_at_kill = 0, []
    log = open(tmp_path / "dumper.log", "ab")  # noqa: SIM115 - shared by all runs
    try:
        for part in parts:
            before = max(manifest.manifest_seqs(fs), default=-1)
            proc = subprocess.Popen(dumper_cmd(fast_settings), stdout=log, stderr=log, cwd=ROOT)
            producer = produce_paced(fast_settings, part, seconds=2.0)
            deadline = time.monotonic() + 30
            while max(manifest.manifest_seqs(fs), default=-1) <= before and time.monotonic() < deadline:
                assert proc.poll() is None, f"dumper exited early; see {tmp_path / 'dumper.log'}"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))  # land the kill anywhere in the commit cycle
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += 1
            seq_at_kill.append(max(manifest.manifest_seqs(fs)))
            producer.join(30)
        final = subprocess.run(dumper_cmd(fast_settings, "--stop-when-idle", "2"), stdout=log, stderr=log,
                               cwd=ROOT, timeout=120)
        assert final.returncode == 0, f"see {tmp_path / 'dumper.log'}"
    finally:
        log.close()

    # every run committed something before it was killed: the kills hit a live stream
    assert kills == 6 and all(a < b for a, b in zip(seq_at_kill, seq_at_kill[1:], strict=False))
    counts, got = archived_ids(fs)
    want = {r["example_id"]: normalize(r) for r in recs}
    lost = set(want) - set(got)
    doubled = [i for i, c in counts.items() if c > 1]
    reliability.record(f"archive kill -9 ({target[0]})", kills=kills, examples=len(want), lost=len(lost),
                       duplicates=len(doubled))
    assert not lost and not doubled, f"lost {len(lost)}, duplicated {len(doubled)}"
    assert got == want
    m = manifest.latest(fs)
    assert sum(m.offsets.values()) == len(stream)  # every message of the topic is covered
    assert m.totals["duplicates"] + m.totals["examples"] + m.totals["late"] == len(stream)


def test_sigterm_commits_what_was_read_and_exits(fast_settings, tmp_path):
    """`streamrec archive` without an idle limit: SIGTERM -> final commit, exit 0, all covered."""
    recs = make_examples(2_000, seed=41)
    produce(fast_settings.kafka, fast_settings.kafka.topics.examples, recs)
    with open(tmp_path / "dumper.log", "wb") as log:
        # roll age 60 s: nothing is committed before the signal
        proc = subprocess.Popen(dumper_cmd(fast_settings, roll_age=60), stdout=log, stderr=log, cwd=ROOT)
        time.sleep(4.0)
        fs = LocalFS(fast_settings.archive.root)
        assert manifest.latest(fs) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    m = manifest.latest(fs)
    assert m is not None and sum(m.offsets.values()) == 2000
    assert archived_ids(fs)[1] == {r["example_id"]: normalize(r) for r in recs}


@pytest.mark.slow
@pytest.mark.reliability
def test_hdfs_outage_mid_write_retries_and_loses_nothing(hdfs, fast_settings, caplog, reliability):
    """Stop NameNode + DataNode while the dumper writes: it reports, backs off, and catches up after."""
    a = fast_settings.archive
    a.target, a.hdfs_url, a.hdfs_root = "hdfs", hdfs.url, f"/outage/{os.getpid()}-{time.monotonic_ns()}"
    a.hdfs_timeout_s = 3
    recs = make_examples(3_000, step_ms=1_000, seed=31)
    arch = Archiver(fast_settings)
    caplog.set_level(logging.WARNING, logger="streamrec.archive")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(stats=arch.run(max_s=180)), daemon=True)

    produce(fast_settings.kafka, fast_settings.kafka.topics.examples, recs[:1000])
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while arch.stats.archived < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert arch.stats.archived == 1000
        hdfs.stop()  # the outage
        produce(fast_settings.kafka, fast_settings.kafka.topics.examples, recs[1000:2000])
        deadline = time.monotonic() + 30
        while arch.stats.target_errors < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert arch.stats.target_down and arch.stats.target_errors >= 3
        assert arch.stats.archived == 1000  # nothing claimed as archived while HDFS is down
    finally:
        hdfs.start()  # same storage dir and ports
    produce(fast_settings.kafka, fast_settings.kafka.topics.examples, recs[2000:])
    deadline = time.monotonic() + 90  # stopped, not idle-timed: stopping HDFS may take seconds
    while arch.stats.archived < len(recs) and time.monotonic() < deadline:
        time.sleep(0.1)
    arch.stop()
    runner.join(60)
    assert not runner.is_alive()
    st = result["stats"]
    assert st.outages >= 1 and st.outage_s > 0 and not st.target_down
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unavailable" in w and "retry" in w for w in warnings)
    assert any("back after" in w for w in warnings)
    # the back-off grows: the waits between retries of one outage increase
    waits = [float(m[1]) for w in warnings if (m := re.search(r"; retry \d+ in ([\d.]+)s, down", w))]
    assert len(waits) >= 3 and max(waits) > 2 * min(waits)

    counts, got = archived_ids(arch.fs)
    assert max(counts.values()) == 1
    want = {r["example_id"]: normalize(r) for r in recs}
    reliability.record("HDFS outage mid-write (NameNode + DataNode stopped)", outages=1, examples=len(want),
                       lost=len(set(want) - set(got)))
    assert got == want
