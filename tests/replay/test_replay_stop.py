"""SIGTERM stops a replay cleanly: it stops sending, flushes what it sent (all acknowledged), exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition

from streamrec.kafka import consumer, count_messages
from tests.cli.test_failures import STREAMREC


def sent_so_far(c, topic: str) -> int:  # noqa: ANN001 - a confluent_kafka Consumer
    """Messages in the topic's two partitions (0 while a fresh topic's leaders are still moving)."""
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, n), timeout=5)[1] for n in (0, 1))
    except KafkaException:
        return 0


def test_sigterm_stops_a_replay_with_every_sent_message_acknowledged(settings, tmp_path: Path) -> None:
    t = settings.kafka.topics
    cmd = [STREAMREC, "--set", f'kafka.bootstrap="{settings.kafka.bootstrap}"', "--set",
           f'kafka.topics.features="{t.features}"', "--set", f'kafka.topics.actions="{t.actions}"',
           "replay", "synthetic", "--limit", "100000", "--rate", "3000"]  # minutes of traffic at this rate
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    c = consumer(settings.kafka)
    deadline = time.monotonic() + 90
    while sent_so_far(c, t.features) < 1000:
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]  # mid-stream
        time.sleep(0.2)
    c.close()
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and time.monotonic() - t0 < 10, err[-3000:]
    assert "stopped" in err and "by a signal" in err, err[-3000:]
    sent = {m[0]: int(m[1].replace(",", "")) for m in re.findall(r"messages to (\S+)\s+│\s+([\d,]+)", err)}
    assert set(sent) == {t.features, t.actions} and 0 < sent[t.features] < 100_000, err[-3000:]
    assert count_messages(settings.kafka, [t.features, t.actions]) == sent  # nothing lost, nothing extra
