"""`streamrec topics create` on any bootstrap, with partitions and replicas from the config."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from streamrec import errors
from streamrec.config import KafkaConfig
from streamrec.kafka import admin
from tests.cli.test_failures import STREAMREC


def create(bootstrap: str, tmp: Path, *sets: str) -> subprocess.CompletedProcess:
    cmd = [STREAMREC, "--set", f'kafka.bootstrap="{bootstrap}"']
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run([*cmd, "topics", "create"], cwd=tmp, capture_output=True, text=True, timeout=60)


def test_topics_create_takes_partitions_and_replicas_from_the_config(kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {role: f"tc{tag}-{role}" for role in ("features", "actions", "examples", "dead_letter")}
    sets = [f'kafka.topics.{role}="{name}"' for role, name in names.items()]
    r = create(kafka_bootstrap, tmp_path, *sets,
               "kafka.topics.partitions={features = 3, actions = 3, examples = 2, dead_letter = 1}")
    assert r.returncode == 0, r.stderr
    md = admin(KafkaConfig(bootstrap=kafka_bootstrap)).list_topics(timeout=10).topics
    assert {role: len(md[name].partitions) for role, name in names.items()} == \
        {"features": 3, "actions": 3, "examples": 2, "dead_letter": 1}
    assert create(kafka_bootstrap, tmp_path, *sets).returncode == 0  # again: the topics are there, fine
    # three replicas on a one-broker cluster: refused, naming the setting
    other = [f'kafka.topics.{role}="tc{tag}-rf-{role}"' for role in names]
    r = create(kafka_bootstrap, tmp_path, *other, "kafka.topics.replication_factor=3")
    assert r.returncode == errors.CONFIG and "kafka.topics.replication_factor" in r.stderr, r.stderr
