"""The folders' rules, checked on what importing a stage really loads (in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded(*modules: str) -> set[str]:
    code = "import json, sys\n" + "".join(f"import {m}\n" for m in modules) + "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout)}


@pytest.mark.parametrize("modules,forbidden", [
    (["trainer.loop", "trainer.run", "trainer.sources", "trainer.synthetic"], {"joiner", "pyflink"}),
    (["trainer.experiments.run"], {"joiner", "pyflink", "confluent_kafka"}),
    (["joiner.engine", "joiner.memory", "joiner.validate"], {"confluent_kafka", "pyflink", "trainer", "torch"}),
    (["serving.model_server", "serving.ps", "serving.delta"], {"joiner", "pyflink", "confluent_kafka"}),
    # a replica reads the trainer's snapshots and deltas, never the join or the archive (their config
    # sections load with the one config object; their code, state stores and engines do not)
    (["serving.app", "serving.replica", "serving.run"], {"pyflink", "rocksdict", "pyarrow", "hdfs"}),
    # the simulator is an application: it talks to the stages over HTTP and Kafka, never runs their code
    (["simulate.run", "simulate.users", "simulate.report"], {"pyflink", "rocksdict", "pyarrow", "hdfs"}),
])
def test_a_stage_does_not_load_what_it_must_not_use(modules: list[str], forbidden: set[str]) -> None:
    assert not loaded(*modules) & forbidden


def test_nothing_imports_the_cli() -> None:
    """The CLI is the top of the house: every stage and shared helper loads without it (and without typer)."""
    stages = ["streamrec.config", "streamrec.kafka", "streamrec.metrics", "streamrec.logs", "streamrec.client",
              "schemas.spec", "replay.events", "joiner.engine", "jobs.join_runner", "jobs.replay", "jobs.demo",
              "sinks.archive", "sinks.reader", "trainer.run", "serving.model_server", "deploy.stack", "deploy.flink",
              "deploy.hdfs"]
    assert not loaded(*stages) & {"cli", "typer"}
