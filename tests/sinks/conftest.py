"""Fixtures of the archive tests: each test on a local dir and on the session's real HDFS, example data."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.hdfs import Hdfs
from sinks.fs import FileSystem, HdfsFS, LocalFS
from streamrec.config import Settings

sys.path.insert(0, str(Path(__file__).parent))  # archive_helpers: shared with the subprocess tests
from archive_helpers import produce  # noqa: E402


@pytest.fixture
def produce_examples(settings: Settings) -> Callable[[list[dict[str, Any]]], None]:
    return lambda records: produce(settings.kafka, settings.kafka.topics.examples, records)


@pytest.fixture
def local_fs(settings: Settings) -> FileSystem:
    return LocalFS(settings.archive.root)


@pytest.fixture(params=["local", "hdfs"])
def target(request: pytest.FixtureRequest, settings: Settings) -> tuple[str, FileSystem]:
    """Each archive test once on a local directory and once on the real HDFS."""
    if request.param == "local":
        return "local", LocalFS(settings.archive.root)
    h: Hdfs = request.getfixturevalue("hdfs")
    root = f"/t/{uuid.uuid4().hex[:8]}"
    settings.archive.target = "hdfs"
    settings.archive.hdfs_url = h.url
    settings.archive.hdfs_root = root
    return "hdfs", HdfsFS(h.url, root, user="streamrec", timeout=5)


@pytest.fixture
def fast_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Commit often and retry fast, so tests see many commits in seconds."""
    a = settings.archive
    a.roll_age_s = 0.3
    a.retry_initial_s = 0.2
    a.retry_max_s = 1.0
    a.allowed_lateness_ms = 600_000
    return settings
