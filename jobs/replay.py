"""`streamrec replay`: send a replay's feature and action logs to Kafka, paced and with progress.

Both topics are keyed by request_id, so a request's feature log and its actions land in the
same partition number and a keyed joiner sees them on one task.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from replay import FEATURES, ReplayEvent, build_events
from schemas.codec import default_codec
from streamrec.config import Settings
from streamrec.kafka import count_messages, producer

console = Console(stderr=True)
SCHEMA_OF_ROLE = {FEATURES: "FeatureLog", "actions": "ActionLog"}


@dataclass
class ReplaySummary:
    sent: Counter = field(default_factory=Counter)  # topic -> messages
    actions: Counter = field(default_factory=Counter)  # action type -> messages
    bytes: int = 0
    build_s: float = 0.0
    send_s: float = 0.0

    @property
    def messages(self) -> int:
        return sum(self.sent.values())


class RateLimiter:
    """Caps messages/s; 0 means unlimited. Sleeps in small slices so pacing stays smooth."""

    def __init__(self, rate: float):
        self.rate = rate
        self.start = time.monotonic()

    def wait(self, done: int) -> None:
        if self.rate <= 0:
            return
        ahead = done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def encode_events(events: list[ReplayEvent]) -> list[bytes]:
    codec = default_codec()
    return [codec.encode(SCHEMA_OF_ROLE[e.role], e.record) for e in events]


def produce_all(p: Producer, topics: dict[str, str], events: list[ReplayEvent], payloads: list[bytes],
                rate: float = 0.0, progress: Progress | None = None) -> None:
    """Produce in send order; blocks until every message is acknowledged (errors raise)."""
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:  # noqa: ANN001 (librdkafka callback)
        if err is not None:
            errors.append(str(err))

    limiter = RateLimiter(rate)
    task = progress.add_task("sending", total=len(events)) if progress else None
    for n, (e, payload) in enumerate(zip(events, payloads, strict=True)):
        while True:
            try:
                p.produce(topics[e.role], payload, key=e.key.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if n % 5000 == 0:
            p.poll(0)
            limiter.wait(n)
            if progress:
                progress.update(task, completed=n)
    remaining = p.flush(60)
    if progress:
        progress.update(task, completed=len(events))
    if errors or remaining:
        raise KafkaException(f"{len(errors)} delivery errors ({errors[:3]}), {remaining} not flushed")


def run_replay(s: Settings, source: str, quiet: bool = False, read_back: bool = True) -> ReplaySummary:
    summary = ReplaySummary()
    t0 = time.monotonic()
    with console.status(f"building the {source} replay (seed {s.replay.seed})...", spinner="dots"):
        events = build_events(s.replay, source)
        payloads = encode_events(events)
    summary.build_s = time.monotonic() - t0
    topics = {FEATURES: s.kafka.topics.features, "actions": s.kafka.topics.actions}
    p = producer(s.kafka)
    t1 = time.monotonic()
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console, disable=quiet) as progress:
        produce_all(p, topics, events, payloads, s.replay.rate, progress)
    summary.send_s = time.monotonic() - t1
    for e, payload in zip(events, payloads, strict=True):
        summary.sent[topics[e.role]] += 1
        summary.bytes += len(payload)
        if e.role != FEATURES:
            summary.actions[e.record["action"]] += 1
    if not quiet:
        print_summary(source, summary)
    if read_back:
        from deploy.stack import print_counts

        counts = count_messages(s.kafka, [topics[FEATURES], topics["actions"]], idle_s=1.0)
        print_counts(counts)
    return summary


def print_summary(source: str, s: ReplaySummary) -> None:
    t = Table("", "value", title=f"replay {source}: summary", show_header=False)
    for topic, n in s.sent.items():
        t.add_row(f"messages to {topic}", f"{n:,}")
    for action, n in sorted(s.actions.items()):
        t.add_row(f"  {action}", f"{n:,}")
    t.add_row("bytes", f"{s.bytes:,}")
    t.add_row("build + encode", f"{s.build_s:.1f} s")
    rate = s.messages / s.send_s if s.send_s else 0.0
    t.add_row("send", f"{s.send_s:.1f} s ({rate:,.0f} msg/s)")
    console.print(t)
