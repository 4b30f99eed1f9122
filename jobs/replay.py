"""`streamrec replay`: send a replay's feature and action logs to Kafka, paced and with progress.

Both topics are keyed by request_id, so a request's feature log and its actions land in the
same partition number and a keyed joiner sees them on one task. Messages are generated,
encoded and sent as a stream: sending starts at once and memory stays flat.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from replay import FEATURES, ReplayEvent, iter_events
from schemas.codec import default_codec
from streamrec.config import Settings
from streamrec.kafka import check_access, count_messages, producer

console = Console(stderr=True)
SCHEMA_OF_ROLE = {FEATURES: "FeatureLog", "actions": "ActionLog"}
# (topic, key, value[, Kafka timestamp ms]): the replay stamps each log with its event time
# (ts_ms), as a logging producer would, so consumers may use Kafka timestamps as event time
Outgoing = tuple[str, bytes, bytes] | tuple[str, bytes, bytes, int]


@dataclass
class ReplaySummary:
    sent: Counter = field(default_factory=Counter)  # topic -> messages
    requests: int = 0
    shown_items: int = 0
    actions: Counter = field(default_factory=Counter)  # action type -> messages
    bytes: int = 0
    seconds: float = 0.0

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


def replay_producer(s: Settings, report_all: bool = False) -> Producer:
    """Delivery reports for failures only (a callback per message would halve throughput),
    unless every message's offset is wanted. A refused login fails here, in one line."""
    check_access(s.kafka)
    return producer(s.kafka, **{"delivery.report.only.error": not report_all})


def encode_events(events: Iterable[ReplayEvent]) -> list[bytes]:
    codec = default_codec()
    return [codec.encode(SCHEMA_OF_ROLE[e.role], e.record) for e in events]


def produce_stream(p: Producer, messages: Iterable[Outgoing], rate: float = 0.0,
                   tick: Callable[[int], None] | None = None,
                   ends: dict[str, dict[int, int]] | None = None) -> int:
    """Produce in order; blocks until every message is acknowledged (delivery errors raise).

    With ``ends`` (and a producer from ``replay_producer(report_all=True)``), records each
    partition's end offset (last + 1), so a bounded reader stops exactly at what was sent.
    """
    errors: list[str] = []

    def on_delivery(err, msg) -> None:  # noqa: ANN001 (librdkafka callback)
        if err is not None:
            errors.append(str(err))
        elif ends is not None:
            parts = ends.setdefault(msg.topic(), {})
            parts[msg.partition()] = max(parts.get(msg.partition(), 0), msg.offset() + 1)

    p.poll(0)
    limiter = RateLimiter(rate)
    n = 0
    for topic, key, value, *ts in messages:
        when = ts[0] if ts else 0  # 0: librdkafka stamps the current time
        while True:
            try:
                p.produce(topic, value, key=key, on_delivery=on_delivery, timestamp=when)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 2000 == 0:
            p.poll(0)
            limiter.wait(n)
            if tick:
                tick(n)
    remaining = p.flush(60)
    if errors or remaining:
        raise KafkaException(f"{len(errors)} delivery errors ({errors[:3]}), {remaining} not flushed")
    return n


def _outgoing(s: Settings, events: Iterator[ReplayEvent], summary: ReplaySummary,
              on_request: Callable[[], None],
              observe: Callable[[ReplayEvent], None] | None = None) -> Iterator[Outgoing]:
    codec = default_codec()
    topics = {FEATURES: s.kafka.topics.features, "actions": s.kafka.topics.actions}
    for e in events:
        value = codec.encode(SCHEMA_OF_ROLE[e.role], e.record)
        if observe is not None:
            observe(e)
        topic = topics[e.role]
        summary.sent[topic] += 1
        summary.bytes += len(value)
        if e.role == FEATURES:
            summary.requests += 1
            summary.shown_items += len(e.record["items"])
            on_request()
        else:
            summary.actions[e.record["action"]] += 1
        yield topic, e.key.encode(), value, e.record["ts_ms"]


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
    p = replay_producer(s, report_all=ends is not None)  # before the progress bar: a refused login is one line
    with Progress(*cols, console=console, disable=quiet) as progress:
        task = progress.add_task(f"replay {source}", total=s.replay.limit or 100_000)
        events = iter_events(s.replay, source)
        produce_stream(p, _outgoing(s, events, summary, lambda: progress.advance(task), observe),
                       s.replay.rate, ends=ends)
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
    console.print(t)
