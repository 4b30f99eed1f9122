"""The pipeline through a SCRAM-secured Apache Kafka, as separate processes, and where the password goes.

One small MovieLens replay is produced over SASL_SSL; then, each as its own process started the way
a user would (``streamrec ... join|archive|train``, ``python -m jobs.flink_join``), the join, the
archive and the trainer run on the SASL_PLAINTEXT listener and the Flink job on SASL_SSL. The
password is given only in the environment (STREAMREC_KAFKA__SECURITY__PASSWORD). Meanwhile every
process's command line on the host is watched for it, and afterwards every file the run wrote
(logs, captured output, state, archive, Flink's logs, the broker's log and data) is searched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from secret_watch import CmdlineWatch, files_holding

from deploy.broker import Broker
from deploy.procs import free_port
from jobs.flink.feed import produce_recorded, write_offsets
from jobs.replay import encode_events
from replay.events import build_events
from schemas.codec import default_codec
from sinks.fs import LocalFS
from sinks.reader import ArchiveReader
from streamrec.config import KafkaConfig, load_config
from streamrec.kafka import KafkaAccessError, check_access, create_topics, drain
from tests.conftest import MOVIELENS_SPEC

ROOT = Path(__file__).resolve().parents[2]
STREAMREC = str(Path(sys.executable).parent / "streamrec")
PASSWORD_ENV = "STREAMREC_KAFKA__SECURITY__PASSWORD"
METRICS_HOST = "127.0.0.2"  # loopback, but not the default 127.0.0.1: proves metrics.host is used


def toml(sections: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                   for name, values in sections.items())


def security(broker: Broker, tls: bool) -> dict[str, Any]:
    """``[kafka.security]`` without the password (that one comes from the environment)."""
    sec = dict(broker.client_config("alice", tls=tls)["security"])
    del sec["password"]
    return sec


@dataclass
class Run:
    returncode: int
    seconds: float
    output: str
    scraped: dict[str, bool] = field(default_factory=dict)  # address -> answered while running


def run(cmd: list[str], log: Path, env: dict[str, str], metrics_port: int | None = None,
        timeout: float = 300) -> Run:
    """Run ``cmd`` to its end with output to ``log``; with ``metrics_port``, scrape its endpoint on
    METRICS_HOST and on 127.0.0.1 while it runs."""
    scraped = {METRICS_HOST: False, "127.0.0.1": False}
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                assert time.monotonic() - t0 < timeout, f"{cmd} did not end in {timeout}s"
                for host in scraped if metrics_port else ():
                    try:
                        with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=0.3) as r:
                            scraped[host] |= r.status == 200
                    except OSError:
                        pass
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
    return Run(proc.wait(), time.monotonic() - t0, log.read_text(errors="replace"), scraped)


@dataclass
class Pipeline:
    dir: Path
    kafka: KafkaConfig  # SASL_PLAINTEXT, for reading back here
    kafka_tls: KafkaConfig  # SASL_SSL
    runs: dict[str, Run]
    watch: CmdlineWatch
    archive_root: Path
    flink_examples: str


def example_ids(cfg: KafkaConfig, topic: str) -> list[str]:
    codec = default_codec()
    return [codec.decode(m.value(), expect="TrainingExample")[1]["example_id"] for m in drain(cfg, [topic])]


@pytest.fixture(scope="module")
def pipeline(secure_broker: Broker, secret: str, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    d = tmp_path_factory.mktemp("scram-pipeline")
    tag = uuid.uuid4().hex[:8]
    topics = {"features": f"s{tag}-features", "actions": f"s{tag}-actions", "examples": f"s{tag}-examples",
              "dead_letter": f"s{tag}-dead"}
    flink_out = {"examples": f"s{tag}-flink-examples", "dead_letter": f"s{tag}-flink-dead"}
    b = secure_broker
    kafka = KafkaConfig.model_validate({**b.client_config("alice"), "topics": topics})
    kafka_tls = KafkaConfig.model_validate({**b.client_config("alice", tls=True), "topics": topics})
    create_topics(kafka_tls, {**{t: 2 for t in topics.values()}, **{t: 2 for t in flink_out.values()}})

    # the input, produced here over SASL_SSL, with its end offsets (they bound the Flink job)
    base = load_config(None, ["replay.limit=400"])
    events = build_events(base.replay, "movielens")
    msgs = [(topics[e.role], e.key.encode(), v, None, e.log.ts_ms)
            for e, v in zip(events, encode_events(events, base.features), strict=True)]
    offsets = write_offsets(d / "offsets.json", produce_recorded(kafka_tls, msgs))

    common = {
        "stack": {"run_dir": str(d / "run")},
        "kafka": {"bootstrap": b.sasl_bootstrap, "connect_timeout_s": 20},
        "kafka.security": security(b, tls=False),
        "kafka.topics": topics,
        "metrics": {"host": METRICS_HOST},
        "joiner": {"state_dir": str(d / "joiner")},
        "archive": {"root": str(d / "archive"), "roll_age_s": 1.0},
        "trainer": {"snapshot_dir": str(d / "snapshots"), "metrics_csv": str(d / "auc.csv"),
                    "plot": str(d / "auc.png")},
    }
    cfg = d / "streamrec.toml"
    cfg.write_text(toml(common))
    cfg_tls = d / "flink.toml"
    cfg_tls.write_text(toml({
        **common, "kafka": {"bootstrap": b.ssl_bootstrap}, "kafka.security": security(b, tls=True),
        "kafka.topics": {**topics, **flink_out},
        "joiner": {"state_dir": str(d / "flink-joiner")},
        "flink": {"checkpoint_dir": str(d / "flink" / "checkpoints"), "run_dir": str(d / "flink"),
                  "jvm_heap": "512m", "group_id": f"g-{tag}"},
    }))
    env = {**os.environ, PASSWORD_ENV: secret}
    ports = {stage: free_port() for stage in ("join", "archive", "train")}
    runs: dict[str, Run] = {}
    with CmdlineWatch(secret, marker=str(d)) as watch:
        runs["join"] = run([STREAMREC, "--config", str(cfg), "join", "--stop-when-idle", "4", "--drain",
                            "--metrics-port", str(ports["join"])], d / "join.log", env, ports["join"])
        runs["archive"] = run([STREAMREC, "--config", str(cfg), "archive", "--stop-when-idle", "4",
                               "--metrics-port", str(ports["archive"])], d / "archive.log", env, ports["archive"])
        runs["train"] = run([STREAMREC, "--config", str(cfg), "--set", f"trainer.metrics_port={ports['train']}",
                             "train", "--online", "--stop-when-idle", "4"], d / "train.log", env, ports["train"])
        runs["flink"] = run([sys.executable, "-m", "jobs.flink_join", "--config", str(cfg_tls),
                             "--stop-offsets", str(offsets)], d / "flink.log", env)
    return Pipeline(d, kafka, kafka_tls, runs, watch, d / "archive", flink_out["examples"])


def test_join_archive_and_train_work_through_scram(pipeline: Pipeline) -> None:
    for stage, r in pipeline.runs.items():
        assert r.returncode == 0, f"{stage} failed:\n{r.output[-3000:]}"
    ids = example_ids(pipeline.kafka, pipeline.kafka.topics.examples)
    assert len(ids) > 200 and len(set(ids)) == len(ids)  # joined, exactly once
    assert sorted(ArchiveReader(LocalFS(pipeline.archive_root), MOVIELENS_SPEC).example_ids()) == sorted(ids)
    summary = json.loads(pipeline.runs["train"].output.strip().splitlines()[-1])
    assert summary["examples_read"] == len(ids)
    # each stage served its metrics on metrics.host, and only there
    for stage in ("join", "archive", "train"):
        assert pipeline.runs[stage].scraped == {METRICS_HOST: True, "127.0.0.1": False}, stage


def test_flink_sources_and_sinks_work_through_sasl_ssl(pipeline: Pipeline) -> None:
    r = pipeline.runs["flink"]
    assert r.returncode == 0, f"the Flink job failed:\n{r.output[-3000:]}"
    flink = example_ids(pipeline.kafka_tls, pipeline.flink_examples)
    embedded = example_ids(pipeline.kafka, pipeline.kafka.topics.examples)
    # the same input joined by both runtimes: Flink read both topics and wrote through SASL_SSL
    assert len(flink) > 200 and set(flink) == set(embedded)


def test_the_password_is_in_no_command_line_log_or_file(pipeline: Pipeline, secure_broker: Broker,
                                                         secret: str) -> None:
    w = pipeline.watch
    assert w.leaks == {}, f"the password was on a command line: {w.leaks}"
    for what in ("join", "archive", "train", "jobs.flink_join"):  # the watch saw every stage's process
        assert w.saw(what), f"no {what} process was seen: {list(w.seen.values())}"
    # there were logs to search: the stages' and Flink's, whose Kafka clients logged their settings
    assert "events/s=" in pipeline.runs["join"].output and "examples_read" in pipeline.runs["train"].output
    flink_log = "".join(p.read_text(errors="replace") for p in (pipeline.dir / "flink" / "log").glob("*.log"))
    assert "security.protocol = SASL_SSL" in flink_log and "sasl.jaas.config = [hidden]" in flink_log
    assert files_holding(pipeline.dir, secret) == []  # logs, output, config, state, archive, Flink's logs
    assert files_holding(secure_broker.run_dir, secret) == []  # the broker's log, config and data


def test_both_scram_mechanisms_and_a_wrong_protocol(secure_broker: Broker) -> None:
    cfg = secure_broker.client_config("alice")
    check_access(KafkaConfig.model_validate({**cfg, "security": {**cfg["security"],
                                                                 "sasl_mechanism": "SCRAM-SHA-256"}}))
    with pytest.raises(KafkaAccessError, match=r"no broker at .* answered within 3s.*kafka.security"):
        check_access(KafkaConfig(bootstrap=secure_broker.sasl_bootstrap), timeout=3)  # PLAINTEXT to SASL


STAGES = {
    "join": ["join", "--stop-when-idle", "30"],
    "archive": ["archive", "--stop-when-idle", "30"],
    "train": ["train", "--online", "--stop-when-idle", "30"],
    "replay": ["replay", "movielens", "--limit", "50"],
}


def bad_login_config(tmp: Path, broker: Broker, tls: bool = False, **security_extra: str) -> Path:
    cfg = tmp / "bad.toml"
    cfg.write_text(toml({"stack": {"run_dir": str(tmp / "run")},
                         "kafka": {"bootstrap": broker.ssl_bootstrap if tls else broker.sasl_bootstrap},
                         "kafka.security": {**security(broker, tls=tls), **security_extra},
                         "joiner": {"state_dir": str(tmp / "joiner")}, "archive": {"root": str(tmp / "archive")},
                         "trainer": {"snapshot_dir": str(tmp / "snapshots")}}))
    return cfg


def one_line_failure(r: Run) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, f"exit {r.returncode}, output:\n{r.output[-3000:]}"
    assert r.seconds < 30  # at start, not after retrying for ever
    return lines[0]


@pytest.mark.parametrize("stage", [*STAGES, "flink"])
def test_a_wrong_password_fails_at_start_in_one_line(stage: str, secure_broker: Broker, secret: str,
                                                     tmp_path: Path) -> None:
    cfg = bad_login_config(tmp_path, secure_broker)
    cmd = [sys.executable, "-m", "jobs.flink_join", "--config", str(cfg)] if stage == "flink" \
        else [STREAMREC, "--config", str(cfg), *STAGES[stage]]
    wrong = "wrong-" + secret[::-1]
    r = run(cmd, tmp_path / "out.log", {**os.environ, PASSWORD_ENV: wrong})
    line = one_line_failure(r)
    assert "kafka.security" in line and "refused the login" in line and "alice" in line, line
    assert wrong not in line and secret not in line


def test_an_untrusted_certificate_fails_at_start_in_one_line(secure_broker: Broker, secret: str,
                                                             tmp_path: Path) -> None:
    from deploy.tls import make_ca

    other_ca, _ = make_ca(tmp_path / "other-ca")
    cfg = bad_login_config(tmp_path, secure_broker, tls=True, ssl_ca_location=str(other_ca))
    r = run([STREAMREC, "--config", str(cfg), *STAGES["join"]], tmp_path / "out.log",
            {**os.environ, PASSWORD_ENV: secret})
    line = one_line_failure(r)
    assert "kafka.security" in line and "TLS" in line and "certificate verify failed" in line, line


def test_replay_logs_through_the_client_over_scram(secure_broker: Broker, secret: str, tmp_path: Path) -> None:
    """`streamrec replay` produces through ``streamrec.client``, which takes kafka.security like every
    other client (it once connected in PLAINTEXT whatever the config said)."""
    tag = uuid.uuid4().hex[:8]
    topics = {"features": f"r{tag}-features", "actions": f"r{tag}-actions"}
    create_topics(KafkaConfig(bootstrap=secure_broker.bootstrap), {topics["features"]: 2, topics["actions"]: 2})
    cfg = tmp_path / "replay.toml"
    cfg.write_text(toml({"stack": {"run_dir": str(tmp_path / "run")},
                         "kafka": {"bootstrap": secure_broker.sasl_bootstrap, "connect_timeout_s": 20},
                         "kafka.security": security(secure_broker, tls=False), "kafka.topics": topics}))
    r = run([STREAMREC, "--config", str(cfg), *STAGES["replay"]], tmp_path / "replay.log",
            {**os.environ, PASSWORD_ENV: secret})
    assert r.returncode == 0, r.output[-3000:]
    got = drain(KafkaConfig.model_validate(secure_broker.client_config("alice")), list(topics.values()), idle_s=1.0)
    assert sum(1 for _ in got) > 50  # 50 requests and their actions
