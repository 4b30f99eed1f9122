"""Shared fixtures: one real Apache Kafka broker (KRaft) and one HDFS per test session, on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.broker import Broker
from deploy.hdfs import Hdfs
from streamrec.config import KafkaConfig, Settings, load_config
from streamrec.kafka import create_topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(run_dir=tmp_path_factory.mktemp("broker")) as b:
        yield b


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hdfs]:
    """A real single-node HDFS (Hadoop 3) on free loopback ports, stopped by its own pids at the end."""
    with Hdfs(tmp_path_factory.mktemp("hdfs")) as h:
        yield h


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: Broker) -> str:
    return broker.bootstrap


@pytest.fixture
def make_topics(kafka_bootstrap: str) -> Callable[..., dict[str, str]]:
    """Create uniquely named topics: ``make_topics(features=2, actions=2)`` -> {"features": "t-..-features", ...}."""

    def make(**partitions: int) -> dict[str, str]:
        tag = uuid.uuid4().hex[:8]
        names = {role: f"t{tag}-{role.replace('_', '-')}" for role in partitions}
        create_topics(KafkaConfig(bootstrap=kafka_bootstrap), {names[r]: n for r, n in partitions.items()})
        return names

    return make


@pytest.fixture
def settings(kafka_bootstrap: str, make_topics: Callable[..., dict[str, str]], tmp_path: Path) -> Settings:
    """A config on the session broker with fresh topics and state under ``tmp_path``."""
    t = make_topics(features=2, actions=2, examples=2, dead_letter=1)
    s = load_config(
        path=None,
        overrides=[
            f'kafka.bootstrap="{kafka_bootstrap}"',
            f'kafka.topics.features="{t["features"]}"',
            f'kafka.topics.actions="{t["actions"]}"',
            f'kafka.topics.examples="{t["examples"]}"',
            f'kafka.topics.dead_letter="{t["dead_letter"]}"',
            f'stack.run_dir="{tmp_path / "run"}"',
            f'joiner.state_dir="{tmp_path / "joiner"}"',
            f'archive.root="{tmp_path / "archive"}"',
        ],
    )
    return s


@pytest.fixture
def kafka_cfg(settings: Settings) -> KafkaConfig:
    return settings.kafka
