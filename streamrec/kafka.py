"""Kafka client helpers shared by the runners, sinks and trainer (confluent-kafka).

Every client is built from a ``KafkaConfig`` by ``client_config``: the bootstrap servers and the
security block (``kafka.security``) reach the consumers, producers and admin clients alike.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.config import ConfigError, KafkaConfig
from streamrec.errors import MissingInput, Unreachable

# librdkafka's own log lines (connection refused, broker down, ...) go through Python logging, so
# --log-level and --log-format apply to them; without this they go raw to stderr
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def bootstrap_of(cfg: KafkaConfig) -> str:
    if not cfg.bootstrap:
        raise ConfigError("kafka.bootstrap is empty and no local broker was started here (`make up`, "
                          "or --set kafka.bootstrap=host:port)")
    return cfg.bootstrap


class KafkaAccessError(ConfigError):
    """The brokers refused this client (authentication, TLS) or none answered: one line naming the setting."""


class BrokerUnreachable(KafkaAccessError, Unreachable):
    """No broker answered: the address may be right and the cluster down (exit code 3, not 2)."""

    exit_code = Unreachable.exit_code


class MissingTopic(MissingInput):
    """A topic a stage reads does not exist (it is never created on read: a typo would go unnoticed)."""


def client_config(cfg: KafkaConfig, **extra: Any) -> dict[str, Any]:
    """librdkafka properties of any client: bootstrap servers, security, Python logging, then ``extra``."""
    return {"bootstrap.servers": bootstrap_of(cfg), **cfg.security.librdkafka(), "logger": LIBRDKAFKA_LOG,
            **extra}


def admin(cfg: KafkaConfig, **extra: Any) -> AdminClient:
    return AdminClient(client_config(cfg, **extra))


def check_access(cfg: KafkaConfig, timeout: float | None = None) -> None:
    """Fail at a stage's start, in one line, when the brokers refuse us or none answers.

    librdkafka retries a refused login or TLS handshake forever, without telling the caller, so a
    stage with a wrong password would hang. This asks for metadata with a client whose errors
    come to a callback (and whose own log lines are off: the error says it all); an
    authentication or TLS error fails at once, silence after ``kafka.connect_timeout_s``."""
    timeout = cfg.connect_timeout_s if timeout is None else timeout
    sec = cfg.security
    if sec.tls and sec.ssl_ca_location is not None and not Path(sec.ssl_ca_location).is_file():
        raise KafkaAccessError(f"kafka.security.ssl_ca_location: no such file {sec.ssl_ca_location}")
    errors: list[KafkaError] = []
    try:
        client = admin(cfg, error_cb=errors.append, log_level=0)
    except KafkaException as e:
        raise KafkaAccessError(f"kafka.security: the Kafka client rejects the settings: {e.args[0].str()}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.list_topics(timeout=0.5).brokers:
                return
        except KafkaException as e:
            errors.append(e.args[0])
        client.poll(0)  # serves error_cb
        for err in errors:
            if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
                raise KafkaAccessError(f"kafka.security: {cfg.bootstrap} refused the login ({sec.describe()}): "
                                       f"{err.str()}")
            if err.code() == KafkaError._SSL:
                raise KafkaAccessError(f"kafka.security: TLS with {cfg.bootstrap} failed ({sec.describe()}): "
                                       f"{err.str()}")
        if time.monotonic() > deadline:
            last = f": {errors[-1].str()}" if errors else ""
            raise BrokerUnreachable(f"kafka: no broker at {cfg.bootstrap} answered within {timeout:.0f}s{last} "
                                   f"(check kafka.bootstrap and kafka.security, now {sec.describe()})")


def require_topics(cfg: KafkaConfig, roles: Iterable[str], timeout: float | None = None) -> None:
    """Fail in one line naming the setting (``kafka.topics.<role>``) if a topic a stage reads is missing."""
    names = cfg.topics.by_role()
    md = admin(cfg, log_level=0).list_topics(timeout=cfg.connect_timeout_s if timeout is None else timeout)
    for role in roles:
        t = md.topics.get(names[role])
        if t is None or t.error is not None:
            raise MissingTopic(f"kafka.topics.{role}: topic {names[role]!r} does not exist on {cfg.bootstrap} "
                               "(`streamrec topics create`, or set kafka.topics." + role + ")")


def producer(cfg: KafkaConfig, **extra: Any) -> Producer:
    conf = {
        **client_config(cfg),
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "compression.type": "lz4",
        **cfg.producer,
        **extra,
    }
    return Producer(conf)


def consumer(cfg: KafkaConfig, group: str | None = None, **extra: Any) -> Consumer:
    conf = {
        **client_config(cfg),
        "group.id": group or f"streamrec-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # outputs are written in transactions (Flink's exactly-once sink, the joiner's option):
        # what an aborted one wrote is never read
        "isolation.level": "read_committed",
        **cfg.consumer,
        **extra,
    }
    return Consumer(conf)


def create_topics(
    cfg: KafkaConfig, partitions: dict[str, int], timeout: float = 15.0, exist_ok: bool = True,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics with the given partition counts, kept forever (retention -1) unless ``config``
    says otherwise; return once every partition has a leader (usable at once).

    Why no time retention: producers stamp each log's Kafka timestamp with its event time, and a
    replayed dataset's event times are years old; time-based retention would delete them at once.
    """
    client = admin(cfg)
    conf = config if config is not None else {"retention.ms": "-1", "retention.bytes": "-1"}
    rf = cfg.topics.replication_factor
    new = [NewTopic(name, num_partitions=n, replication_factor=rf, config=conf) for name, n in partitions.items()]
    futures = client.create_topics(new, operation_timeout=timeout)
    for fut in futures.values():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR:
                raise ConfigError(f"kafka.topics.replication_factor: {e.args[0].str()}") from None
            if not (exist_ok and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
    deadline = time.monotonic() + timeout
    for name in partitions:
        while True:
            t = client.list_topics(name, timeout=timeout).topics.get(name)
            if t is not None and t.error is None and t.partitions and all(
                    p.leader >= 0 for p in t.partitions.values()):
                break
            if time.monotonic() > deadline:
                raise KafkaException(f"topic {name} has no leader after {timeout}s")
            time.sleep(0.05)


def last_value(cfg: KafkaConfig, topic: str, key: bytes, partition: int = 0, timeout: float = 15.0) -> bytes | None:
    """The newest committed value of ``key`` in one partition, or None: read backwards from the
    end in growing windows (the newest record of a key is usually a few offsets from the end)."""
    c = consumer(cfg, **{"enable.partition.eof": True})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        window = 64
        end = high
        while end > low:
            start = max(low, end - window)
            c.assign([TopicPartition(topic, partition, start)])
            found = None
            deadline = time.monotonic() + timeout
            while True:
                m = c.poll(0.5)
                if m is None:
                    if time.monotonic() > deadline:
                        raise KafkaException(f"{topic}[{partition}]: no end of partition within {timeout}s")
                    continue
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(m.error())
                if m.offset() >= end:
                    break
                if m.key() == key:
                    found = m.value()
            if found is not None:
                return found
            end, window = start, window * 4
        return None
    finally:
        c.close()


def consumer_lag(c: Consumer, positions: dict[tuple[str, int], int], cached: bool = True,
                 timeout: float = 2.0) -> int:
    """Messages between each partition's ``positions`` (next offset to read) and its high
    watermark, summed. ``cached``: the high watermark the last fetch response carried (free, and
    current while the partition is being consumed); else asked of the broker (a round trip per
    partition, which may wait behind the consumer's long-polling fetch)."""
    total = 0
    for (topic, part), pos in positions.items():
        _, high = c.get_watermark_offsets(TopicPartition(topic, part), timeout=timeout, cached=cached)
        if high < 0:
            return -1  # not known yet
        total += max(0, high - pos)
    return total


def partitions_of(client: Consumer | Producer, topic: str, timeout: float = 10.0) -> list[int]:
    md = client.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise MissingTopic(f"topic {topic!r} does not exist"
                           + (f" ({t.error.str()})" if t is not None else ""))
    return sorted(t.partitions)


def assign_from_start(
    c: Consumer, topics: Iterable[str], offsets: dict[tuple[str, int], int] | None = None
) -> list[TopicPartition]:
    """Assign every partition of ``topics`` explicitly (no group join delay), from ``offsets`` or 0."""
    tps = []
    for topic in topics:
        for p in partitions_of(c, topic):
            tps.append(TopicPartition(topic, p, (offsets or {}).get((topic, p), 0)))
    c.assign(tps)
    return tps


def drain(
    cfg: KafkaConfig, topics: list[str], idle_s: float = 2.0, max_s: float = 120.0, batch: int = 10000
) -> Iterator[Message]:
    """Every message now in ``topics`` from offset 0: stops after ``idle_s`` without news."""
    c = consumer(cfg)
    try:
        assign_from_start(c, topics)
        deadline = time.monotonic() + max_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            msgs = c.consume(batch, timeout=0.2)
            got = False
            for m in msgs:
                if m.error() is None:
                    got = True
                    yield m
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(m.error())
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > idle_s:
                return
    finally:
        c.close()


def count_messages(cfg: KafkaConfig, topics: list[str], idle_s: float = 2.0) -> dict[str, int]:
    counts = dict.fromkeys(topics, 0)
    for m in drain(cfg, topics, idle_s=idle_s):
        counts[m.topic()] += 1
    return counts
