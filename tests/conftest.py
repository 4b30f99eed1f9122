"""Shared fixtures: one real Apache Kafka broker (KRaft) and one HDFS per test session, a Pushgateway per test,
on free loopback ports."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.broker import Broker
from deploy.hdfs import Hdfs
from deploy.pushgateway import Pushgateway
from examples.movielens import SPEC_FILE
from schemas.spec import FeatureSpec, load_spec, merge
from streamrec.config import KafkaConfig, Settings, load_config
from streamrec.kafka import create_topics

MOVIELENS_SPEC = load_spec(SPEC_FILE)  # the demo's spec; tests use it for MovieLens-shaped data


def movielens_with(changes: dict, keep: list[str] | None = None) -> FeatureSpec:
    """The MovieLens spec with ``changes`` merged in (``{"slots": {"item_id": {"dim": 8}}}``), and
    only the slots in ``keep`` in use if given (the others retired, crosses of them too)."""
    data = merge(MOVIELENS_SPEC.model_dump(exclude={"file"}), changes)
    if keep is not None:
        for name in data["slots"]:
            data["slots"][name]["retired"] = name not in keep
        for c in data["crosses"].values():
            c["retired"] = not set(c["of"]) <= set(keep)
    return FeatureSpec.model_validate(data)


@pytest.fixture
def movielens_spec() -> FeatureSpec:
    """A fresh copy of the MovieLens spec (a test may change it)."""
    return MOVIELENS_SPEC.model_copy(deep=True)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(run_dir=tmp_path_factory.mktemp("broker")) as b:
        yield b


# ---- the reliability suite's report (`make reliability`) -------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", default=None,
                     help="write what the reliability tests measured to this JSON file (make reliability)")


class ReliabilityLog:
    """Rows that reliability tests record: what they broke and what came out (kills, lost, duplicates ...)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def record(self, what: str, **fields: object) -> None:
        self.rows.append({"what": what, **fields})


@pytest.fixture(scope="session")
def reliability(request: pytest.FixtureRequest) -> Iterator[ReliabilityLog]:
    log = ReliabilityLog()
    yield log
    path = request.config.getoption("--reliability-report")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(log.rows, indent=1, default=str) + "\n")


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hdfs]:
    """A real single-node HDFS (Hadoop 3) on free loopback ports, stopped by its own pids at the end."""
    with Hdfs(tmp_path_factory.mktemp("hdfs")) as h:
        yield h


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    """A real Prometheus Pushgateway on a free loopback port: where Flink pushes its metrics in tests,
    since Flink's pull reporter would bind every interface."""
    with Pushgateway(tmp_path / "pushgateway") as gw:
        yield gw


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
