"""`streamrec replay`: send a replay's feature and action logs to Kafka, paced and with progress.

The replay is an application like any other: it logs through ``streamrec.applog``, which turns
its raw values into FIDs as the feature spec says, keys both topics by request_id (so a
request's feature log and its actions land in the same partition number, and a keyed joiner
sees them on one task) and stamps each message with its event time. Messages are generated,
encoded and sent as a stream: sending starts at once and memory stays flat.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from replay.events import FEATURES, ReplayEvent, iter_events
from schemas.spec import FeatureSpec
from streamrec.applog import Client, LogEncoder
from streamrec.config import Settings
from streamrec.kafka import check_access, count_messages, require_topics
from streamrec.signals import stop_on_signals

console = Console(stderr=True)


@dataclass
class ReplaySummary:
    sent: Counter = field(default_factory=Counter)  # topic -> messages
    requests: int = 0
    shown_items: int = 0
    actions: Counter = field(default_factory=Counter)  # action type -> messages
    bytes: int = 0
    seconds: float = 0.0
    stopped: bool = False  # by SIGTERM / Ctrl-C: what was sent before is acknowledged, the rest never sent

    @property
    def messages(self) -> int:
        return sum(self.sent.values())


class RateLimiter:
    """Caps messages/s; 0 means unlimited."""

    def __init__(self, rate: float):
        self.rate = rate
        self.start = time.monotonic()

    def wait(self, done: int) -> None:
        if self.rate <= 0:
            return
        ahead = done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def encode_events(events: Any, spec: FeatureSpec) -> list[bytes]:
    """The messages of ``events`` as the client encodes them (for tests and benchmarks that produce them)."""
    enc = LogEncoder(spec)
    return [enc.encode(e.log) for e in events]


def send_events(client: Client, events: Any, summary: ReplaySummary, rate: float = 0.0,
                tick: Callable[[], None] | None = None, ends: dict[str, dict[int, int]] | None = None,
                observe: Callable[[ReplayEvent], None] | None = None, stop: threading.Event | None = None) -> None:
    """Send every event through the client, in order; blocks until all are acknowledged (failures raise).

    ``ends``: filled with each partition's end offset (last + 1), so a bounded reader stops
    exactly at what was sent; ``observe`` sees every event sent, in send order; ``tick`` is
    called per request; ``stop``, once set, ends the sending (what was sent is still flushed)."""
    def end_of(err: Any, msg: Any) -> None:
        if err is None:
            parts = ends.setdefault(msg.topic(), {})
            parts[msg.partition()] = max(parts.get(msg.partition(), 0), msg.offset() + 1)

    on_delivery = None if ends is None else end_of
    limiter = RateLimiter(rate)
    for n, e in enumerate(events, 1):
        if stop is not None and stop.is_set():
            break
        if observe is not None:
            observe(e)
        client.send(e.log, on_delivery)
        summary.sent[client.topics[type(e.log)]] += 1
        if e.role == FEATURES:
            summary.requests += 1
            summary.shown_items += len(e.log.items)
            if tick:
                tick()
        else:
            summary.actions[e.log.action] += 1
        if n % 2000 == 0:
            summary.bytes = client.metrics()["bytes"]
            limiter.wait(n)
    left = client.flush(60)
    m = client.metrics()
    summary.bytes = m["bytes"]
    if m["failed"] or left:
        raise KafkaException(f"{m['failed']} delivery failures, {left} messages not flushed")


def run_replay(s: Settings, source: str, quiet: bool = False, read_back: bool = True,
               summary: ReplaySummary | None = None,
               ends: dict[str, dict[int, int]] | None = None,
               observe: Callable[[ReplayEvent], None] | None = None) -> ReplaySummary:
    """Send the whole replay; ``summary`` (if given) is filled as messages go, for live progress;
    ``ends`` (if given) receives every partition's end offset; ``observe`` (if given) sees every
    event sent, in send order (the demo joins them in memory for its expected outcome)."""
    summary = summary if summary is not None else ReplaySummary()
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("requests"), TimeRemainingColumn())
    t0 = time.monotonic()
    check_access(s.kafka)  # before the progress bar: a refused login is one line
    require_topics(s.kafka, ["features", "actions"])  # else the broker may auto-create them, mis-partitioned
    with Progress(*cols, console=console, disable=quiet) as progress:
        task = progress.add_task(f"replay {source}", total=s.replay.limit or 100_000)
        client_settings = s
        if ends is not None:  # end offsets come from every message's acknowledgement
            client_settings = s.model_copy(deep=True)
            client_settings.client.delivery_reports = "all"
        stop = threading.Event()
        with stop_on_signals(stop.set):
            send_events(Client(client_settings), iter_events(s.replay, source), summary, s.replay.rate,
                        lambda: progress.advance(task), ends, observe, stop)
        summary.stopped = stop.is_set()
    summary.seconds = time.monotonic() - t0
    if not quiet:
        print_summary(source, summary)
    if read_back:
        from deploy.stack import print_counts

        t = s.kafka.topics
        print_counts(count_messages(s.kafka, [t.features, t.actions], idle_s=1.0))
    return summary


def print_summary(source: str, s: ReplaySummary) -> None:
    t = Table("", "value", title=f"replay {source}: sent", show_header=False, min_width=48)
    for topic, n in s.sent.items():
        t.add_row(f"messages to {topic}", f"{n:,}")
    for action, n in sorted(s.actions.items()):
        t.add_row(f"  {action}", f"{n:,}")
    t.add_row("bytes", f"{s.bytes:,}")
    rate = s.messages / s.seconds if s.seconds else 0.0
    t.add_row("time (generate + encode + send)", f"{s.seconds:.1f} s ({rate:,.0f} msg/s)")
    if s.stopped:
        t.add_row("stopped", "by a signal, before the end of the dataset")
    console.print(t)
