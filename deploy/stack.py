"""`streamrec stack up|down|status`: the local Kafka broker and the topics.

The broker keeps everything under ``<stack.run_dir>/kafka``: its log dir (durable across
restarts), its ports (picked free at the first `make up` unless ``stack.broker_port`` is set,
then kept) and its pid file. Commands find it there when ``kafka.bootstrap`` is left empty.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from deploy.broker import Broker
from deploy.procs import free_port, port_open
from streamrec.config import Settings, local_broker_dir
from streamrec.errors import ConfigError
from streamrec.kafka import count_messages, create_topics

console = Console()


def broker_of(s: Settings) -> Broker:
    return Broker(run_dir=local_broker_dir(s.stack), port=s.stack.broker_port)


def up(s: Settings) -> Broker:
    broker = broker_of(s)
    if broker.running():
        console.print(f"broker already running on {broker.bootstrap} (log {broker.log})")
    else:
        _move_if_taken(s, broker)
        broker.start()
        console.print(f"broker up in {broker.startup_s:.1f}s: Apache Kafka (KRaft) on {broker.bootstrap}, "
                      f"data {broker.run_dir / 'data'}, log {broker.log}")
    s.kafka.bootstrap = broker.bootstrap
    create_topics(s.kafka, s.kafka.topics.partition_counts())
    console.print("topics: " + ", ".join(f"{n}({p})" for n, p in s.kafka.topics.partition_counts().items()))
    return broker


def _move_if_taken(s: Settings, broker: Broker) -> None:
    """The kept client port may have been taken while the broker was down (another project's broker,
    a test): a port picked free moves to a new free port (clients find it in ports.json); a port the
    config fixed (``stack.broker_port``) is a clear error instead. The controller port stays: the
    KRaft quorum was formatted with it."""
    if not port_open(broker.port):
        return
    if s.stack.broker_port:
        raise ConfigError(f"stack.broker_port: port {broker.port} is taken by another process")
    old = broker.port
    broker.port = broker.ports["port"] = free_port()
    console.print(f"port {old} is taken by another process: the broker moves to {broker.port}")


def down(s: Settings) -> None:
    broker = broker_of(s)
    if broker.running():
        broker.stop()
        console.print(f"broker stopped ({broker.bootstrap}; data kept in {broker.run_dir / 'data'})")
    else:
        console.print("broker was not running")


def status(s: Settings) -> bool:
    """Print what runs and the topics' message counts; False if the broker does not run."""
    broker = broker_of(s)
    if not broker.running():
        console.print(f"broker: not running under {broker.run_dir} (make up)")
        return False
    s.kafka.bootstrap = broker.bootstrap
    console.print(f"broker: running, {broker.bootstrap}, data {Path(broker.run_dir) / 'data'}")
    print_counts(count_messages(s.kafka, s.kafka.topics.names(), idle_s=1.0))
    return True


def print_counts(counts: dict[str, int]) -> None:
    table = Table("topic", "messages", title="messages read back from the broker")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
