"""`streamrec stack up|down|status`: the local broker and topics, tracked by pid file under the run dir."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deploy.broker import Broker
from deploy.procs import pid_alive, port_open, read_pid, stop_pid
from streamrec.config import Settings
from streamrec.kafka import count_messages, create_topics

console = Console()


def _pid_file(s: Settings) -> Path:
    return Path(s.stack.run_dir) / "broker.pid"


def up(s: Settings) -> None:
    pid_file = _pid_file(s)
    pid = read_pid(pid_file)
    port = s.stack.broker_port
    if pid and pid_alive(pid, "tansu"):
        console.print(f"broker already running (pid {pid}) on 127.0.0.1:{port}")
    else:
        if port_open(port):
            raise SystemExit(f"127.0.0.1:{port} is taken by another process; set stack.broker_port")
        broker = Broker(run_dir=Path(s.stack.run_dir), port=port).start()
        pid_file.write_text(json.dumps(broker.proc.pid) + "\n")
        console.print(f"broker up: pid {broker.proc.pid}, 127.0.0.1:{port}, log {broker.log}")
    s.kafka.bootstrap = f"127.0.0.1:{port}"
    create_topics(s.kafka.bootstrap, s.kafka.topics.partition_counts())
    console.print("topics: " + ", ".join(f"{n}({p})" for n, p in s.kafka.topics.partition_counts().items()))


def down(s: Settings) -> None:
    pid_file = _pid_file(s)
    pid = read_pid(pid_file)
    if pid and stop_pid(pid, "tansu"):
        console.print(f"broker stopped (pid {pid})")
    else:
        console.print("broker was not running")
    pid_file.unlink(missing_ok=True)


def status(s: Settings) -> None:
    pid = read_pid(_pid_file(s))
    if not (pid and pid_alive(pid, "tansu")):
        console.print("broker: not running (make up)")
        return
    s.kafka.bootstrap = f"127.0.0.1:{s.stack.broker_port}"
    console.print(f"broker: running, pid {pid}, {s.kafka.bootstrap}")
    print_counts(count_messages(s.kafka, s.kafka.topics.names(), idle_s=1.0))


def print_counts(counts: dict[str, int]) -> None:
    table = Table("topic", "messages", title="messages read back from the broker")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
