"""`stack up/down/status`: Kafka on free ports, topics created, durable across a restart, only its own pid stopped."""

from __future__ import annotations

from pathlib import Path

from deploy import stack
from deploy.procs import free_port, pid_alive, port_open, read_pid
from streamrec.config import load_config
from streamrec.kafka import consumer, count_messages, partitions_of, producer


def test_up_status_down_restart(tmp_path: Path, capsys) -> None:
    s = load_config(None, [f'stack.run_dir="{tmp_path}"'])
    assert s.kafka.bootstrap == ""  # nothing started here yet
    broker = stack.up(s)
    try:
        pid = read_pid(tmp_path / "kafka" / "broker.pid")
        port = broker.port
        assert pid and pid_alive(pid, "kafka.Kafka") and port_open(port)
        assert broker.startup_s is not None and broker.startup_s > 0
        # a later command finds the local broker without being told
        assert load_config(None, [f'stack.run_dir="{tmp_path}"']).kafka.bootstrap == f"127.0.0.1:{port}"
        stack.up(s)  # idempotent: same broker
        assert read_pid(tmp_path / "kafka" / "broker.pid") == pid
        c = consumer(s.kafka)
        assert len(partitions_of(c, "features")) == s.kafka.topics.partitions["features"] == 2
        assert len(partitions_of(c, "dead-letter")) == s.kafka.topics.partitions["dead_letter"] == 1
        c.close()
        p = producer(s.kafka)
        p.produce("features", b"kept", b"k")
        assert p.flush(10) == 0
        stack.status(s)
        assert "running" in capsys.readouterr().out
        stack.down(s)
        assert not pid_alive(pid, "kafka.Kafka") and not port_open(port)
        # the log dir is durable: the same broker comes back, on the same port, with the message
        assert stack.up(s).port == port
        assert count_messages(s.kafka, ["features", "actions"], idle_s=1.0) == {"features": 1, "actions": 0}
    finally:
        stack.down(s)
    assert not (tmp_path / "kafka" / "broker.pid").exists()


def test_a_kept_port_taken_meanwhile_moves_the_broker(tmp_path: Path) -> None:
    """The demo's broker keeps its port across runs; if another process took it meanwhile, up moves."""
    import json
    import socket

    s = load_config(None, [f'stack.run_dir="{tmp_path}"'])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        kept = tmp_path / "kafka" / "ports.json"
        kept.parent.mkdir(parents=True)
        kept.write_text(json.dumps({"port": taken, "controller_port": free_port()}))
        try:
            broker = stack.up(s)
            assert broker.port != taken and port_open(broker.port)
            assert json.loads(kept.read_text())["port"] == broker.port  # later commands find it there
            assert load_config(None, [f'stack.run_dir="{tmp_path}"']).kafka.bootstrap == broker.bootstrap
        finally:
            stack.down(s)
