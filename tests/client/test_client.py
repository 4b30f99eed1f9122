"""The Client on a real broker: key and timestamp set, delivery reported, bad input never sent; it installs
and imports without torch or Flink; the README's example runs as written."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from schemas.codec import default_codec
from streamrec.applog import encoder as encoder_module
from streamrec.client import ActionLog, Client, FeatureLog, LogEncoder, SpecError
from streamrec.config import load_config
from streamrec.kafka import drain

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pyflink", "numba", "numpy", "pyarrow", "rocksdict")


def movielens_log(rid: str, ts: int) -> FeatureLog:
    log = FeatureLog(rid, 42, ts, {"user_id": 42, "age": "3", "gender": "F"}, {"user_activity": 1.0})
    return log.add_item(7, {"item_id": 7, "genre": ["Drama", "War"]}, {"item_popularity": 2.0}).add_item(9)


def read(settings) -> list:
    t = settings.kafka.topics
    return sorted(drain(settings.kafka, [t.features, t.actions], idle_s=1.0), key=lambda m: m.timestamp()[1])


def test_logs_are_keyed_stamped_and_delivered(settings) -> None:
    settings.client.delivery_reports = "all"
    acked: list = []
    client = Client(settings)
    ts = 1_700_000_000_000
    logs = [movielens_log("req-a", ts), ActionLog("req-a", 7, "impression", ts + 10),
            ActionLog("req-a", 7, "click", ts + 2000, value=1.5)]
    for log in logs:
        client.send(log, on_delivery=lambda err, msg: acked.append((err, msg.topic())))
    with pytest.raises(SpecError) as e:
        client.send(ActionLog("req-a", 7, "purchase", ts + 3000))
    assert e.value.field == "action"
    assert client.flush(30) == 0
    m = client.metrics()
    assert (m["feature_logs"], m["actions"], m["delivered"], m["failed"], m["in_flight"], m["rejected"]) == \
        (1, 2, 3, 0, 0, 1)
    assert [err for err, _ in acked] == [None] * 3
    got = read(settings)
    enc = LogEncoder(settings.features)
    assert [m.key() for m in got] == [b"req-a"] * 3  # key = request_id
    assert [m.timestamp()[1] for m in got] == [ts, ts + 10, ts + 2000]  # Kafka timestamp = ts_ms
    assert [default_codec().decode(m.value())[1] for m in got] == [enc.record(g) for g in logs]
    assert got[0].topic() == settings.kafka.topics.features and got[1].topic() == settings.kafka.topics.actions


@pytest.mark.parametrize("path", ["C", "Python"])
@pytest.mark.parametrize("queue", [100_000, 7])  # 7: the local queue is full most of the time
def test_a_feeds_actions_are_keyed_stamped_and_counted(settings, path: str, queue: int) -> None:
    """The usual action is encoded and produced in one C call (``send_action``); unusual ones, and
    everything on the pure-Python path (``client.native = false``), take ``send``'s Python code; a
    full queue makes either wait and retry. Both give every message its key, timestamp and the
    encoder's bytes, and count them."""
    assert encoder_module._native is not None, "streamrec/applog/_native.c is not built: pip install -e ."
    settings.client.native = path == "C"
    settings.client.queue_max_messages = queue
    client = Client(settings)
    assert (client._send_action is None) == (path == "Python")
    ts = 1_700_000_000_000
    logs: list = [ActionLog("req-c", 7, "click", ts)]  # before its feature log: its request id is not known yet
    logs.append(movielens_log("req-c", ts + 1))
    logs += [ActionLog("req-c", 7 + k % 2 * 2, ["impression", "click", "like"][k % 3], ts + 2 + k,
                       None if k % 10 else 0.5) for k in range(1200)]  # past POLL_EVERY; every tenth with a value
    for log in logs:
        client.send(log)
    assert client.flush(30) == 0
    enc = LogEncoder(settings.features)
    m = client.metrics()
    assert (m["feature_logs"], m["actions"], m["delivered"], m["failed"]) == (1, len(logs) - 1, len(logs), 0)
    assert m["bytes"] == sum(len(enc.encode(g)) for g in logs) and (m["queue_full_waits"] > 0) == (queue < 100)
    got = read(settings)
    assert [(m.key(), m.timestamp()[1], m.value()) for m in got] == \
        [(b"req-c", g.ts_ms, enc.encode(g)) for g in logs]


def test_a_message_that_cannot_be_delivered_is_reported_not_lost_silently(settings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.kafka.bootstrap = f"127.0.0.1:{port}"
    settings.client.delivery_timeout_ms = 1500
    errors: list = []
    client = Client(settings, on_error=lambda err, msg: errors.append(err))
    mine: list = []
    client.send(ActionLog("req-b", 1, "click", 5), on_delivery=lambda err, msg: mine.append(err))
    assert client.flush(20) == 0
    m = client.metrics()
    assert m["failed"] == 1 and m["delivered"] == 0 and m["in_flight"] == 0
    assert len(errors) == 1 and errors[0] is not None and mine == errors  # to on_error and to its own callback


def test_the_client_imports_nothing_of_the_pipeline() -> None:
    """Importing the client (and reading a config) loads no torch, Flink, numba, numpy, pyarrow or RocksDB."""
    code = ("import json, sys\nimport streamrec.client\nstreamrec.client.Client  # the producer loads on first use\n"
            "from streamrec.config import load_config\nload_config()\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert {"confluent_kafka", "fastavro", "pydantic"} <= loaded


def test_the_client_install_needs_no_torch_or_flink() -> None:
    """``pip install 'streamrec[client]'`` installs the base and the client extra: none of the pipeline's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(deps: list[str]) -> set[str]:
        return {re.split(r"[=<>\[ ]", d)[0].lower() for d in deps}

    assert names(project["dependencies"] + extras["client"]) == {"confluent-kafka", "fastavro", "pydantic", "typer",
                                                                  "rich"}
    pipeline = names(extras["pipeline"])
    assert {"torch", "apache-flink", "numba", "numpy", "pyarrow"} <= pipeline


def readme_blocks() -> tuple[str, str]:
    """The README's client example: its config (toml) and its program (python)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Logging from an application", 1)[1].split("\n## ", 1)[0]
    return (re.search(r"```toml\n(.*?)```", section, re.S).group(1),
            re.search(r"```python\n(.*?)```", section, re.S).group(1))


def test_the_readme_example_runs(settings, tmp_path, monkeypatch, capsys) -> None:
    toml, program = readme_blocks()
    t = settings.kafka.topics
    toml = re.sub(r'bootstrap = ".*?"', f'bootstrap = "{settings.kafka.bootstrap}"', toml)
    toml += f'\n[kafka.topics]\nfeatures = "{t.features}"\nactions = "{t.actions}"\n'
    (tmp_path / "streamrec.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    exec(compile(program, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "action: 'purchase' is neither a label nor ignored" in out
    spec = load_config(tmp_path / "streamrec.toml").features
    assert "user_id" not in spec.slots  # the README's own spec, not MovieLens's
    got = read(settings)
    assert [m.key() for m in got] == [b"req-1"] * 4
    assert [default_codec().decode(m.value())[0] for m in got] == ["FeatureLog", "ActionLog", "ActionLog", "ActionLog"]
