"""`stack up/down/status` on a free port: starts the broker, creates topics, stops only its own pid."""

from __future__ import annotations

from pathlib import Path

from deploy import stack
from deploy.procs import free_port, pid_alive, port_open, read_pid
from streamrec.config import load_config
from streamrec.kafka import consumer, partitions_of


def test_up_status_down(tmp_path: Path, capsys) -> None:
    port = free_port()
    s = load_config(None, [f'stack.run_dir="{tmp_path}"', f"stack.broker_port={port}",
                           f'kafka.bootstrap="127.0.0.1:{port}"'])
    stack.up(s)
    try:
        pid = read_pid(tmp_path / "broker.pid")
        assert pid and pid_alive(pid, "tansu") and port_open(port)
        stack.up(s)  # idempotent: same broker
        assert read_pid(tmp_path / "broker.pid") == pid
        c = consumer(s.kafka)
        assert len(partitions_of(c, "features")) == s.kafka.topics.partitions["features"] == 2
        assert len(partitions_of(c, "dead-letter")) == s.kafka.topics.partitions["dead_letter"] == 1
        c.close()
        stack.status(s)
        assert "running" in capsys.readouterr().out
    finally:
        stack.down(s)
    assert not pid_alive(pid, "tansu") and not port_open(port)
    assert not (tmp_path / "broker.pid").exists()
