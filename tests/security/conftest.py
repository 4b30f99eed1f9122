"""A secured Apache Kafka (SCRAM on SASL_PLAINTEXT and SASL_SSL) and the secret the tests look for."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.broker import Broker

sys.path.insert(0, str(Path(__file__).parent))  # secret_watch


@pytest.fixture(scope="session")
def secret() -> str:
    """alice's password: random, so finding it anywhere means it leaked from this run."""
    return "pw-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory, secret: str) -> Iterator[Broker]:
    with Broker(run_dir=tmp_path_factory.mktemp("secure-broker"), scram_users={"alice": secret}, tls=True) as b:
        yield b
