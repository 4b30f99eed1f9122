"""A plain external Kafka client (Debian's kcat) produces to and consumes from the local broker."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from streamrec.config import KafkaConfig
from streamrec.kafka import drain, producer


def kcat(bootstrap: str, *args: str, stdin: str | None = None) -> str:
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed (apt-get install kcat; .ci/run does)"
    r = subprocess.run([exe, "-b", bootstrap, *args], input=stdin, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_kcat_produces_and_consumes(kafka_bootstrap: str, make_topics: Callable[..., dict[str, str]]) -> None:
    topic = make_topics(kcat=1)["kcat"]
    assert f"topic \"{topic}\" with 1 partitions" in kcat(kafka_bootstrap, "-L", "-t", topic)

    # kcat -> broker -> confluent-kafka
    kcat(kafka_bootstrap, "-P", "-t", topic, "-K", ":", stdin="r1:hello\nr2:world\n")
    cfg = KafkaConfig(bootstrap=kafka_bootstrap)
    got = [(m.key(), m.value()) for m in drain(cfg, [topic], idle_s=1.0)]
    assert got == [(b"r1", b"hello"), (b"r2", b"world")]

    # confluent-kafka -> broker -> kcat, keys, offsets and timestamps included
    p = producer(cfg)
    p.produce(topic, b"third", b"r3", timestamp=1_700_000_000_123)
    assert p.flush(10) == 0
    rows = [line.split("|") for line in
            kcat(kafka_bootstrap, "-C", "-t", topic, "-e", "-q", "-f", "%k|%s|%o|%T\\n").splitlines()]
    assert [r[:3] for r in rows] == [["r1", "hello", "0"], ["r2", "world", "1"], ["r3", "third", "2"]]
    assert rows[2][3] == "1700000000123"
