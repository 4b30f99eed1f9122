"""``Client``: what an application (the recommender that serves the feed) logs through.

``send(log)`` checks and encodes the log against the feature spec (``LogEncoder``; a bad log
raises ``SpecError`` naming the field and is never sent), keys the message by its
``request_id`` and stamps its Kafka timestamp with its ``ts_ms`` (the join relies on both), and
hands it to librdkafka, which batches (``linger_ms``) and retries (idempotent: a retry neither
duplicates nor reorders) in the background. Delivery reports come back on ``poll()`` /
``flush()`` (and every few hundred sends): failures to the client's ``on_error`` and to the
message's own ``on_delivery``; with ``client.delivery_reports = "all"`` every acknowledgement
too (a Python call per message: the fast default reports failures only). ``metrics()`` counts
what was sent, rejected, delivered and failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.spec import SpecError
from streamrec.applog.encoder import LogEncoder
from streamrec.applog.logs import ActionLog, FeatureLog
from streamrec.config import Settings, load_config

POLL_EVERY = 512  # sends between two polls that serve delivery reports
DeliveryCallback = Callable[[KafkaError | None, Message], None]


@dataclass
class ClientMetrics:
    feature_logs: int = 0  # messages handed to the producer
    actions: int = 0
    bytes: int = 0
    rejected: int = 0  # logs refused by the spec (SpecError), never sent
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # gave up after retries (delivery_timeout_ms)
    in_flight: int = 0  # handed to the producer, not yet acknowledged or failed
    queue_full_waits: int = 0  # send() found the local queue full and waited
    retries: int = 0  # librdkafka's request retries (from its statistics)


class Client:
    """Produces feature and action logs under the config's feature spec (see the module docstring).

    ``Client.from_config("streamrec.toml")`` or ``Client(settings)``; extra librdkafka settings
    override ``kafka.producer`` and the ``[client]`` section. Use it from one thread (metrics
    are plain counters), and ``flush()`` or ``close()`` before exit: a message still queued
    then is lost.
    """

    def __init__(self, settings: Settings, on_error: Callable[[KafkaError, Message], None] | None = None,
                 **producer_conf: Any):
        if not settings.kafka.bootstrap:
            raise ValueError("kafka.bootstrap is empty: set it in the config or with --set kafka.bootstrap=host:port")
        c = settings.client
        self.spec = settings.features
        self.encoder = LogEncoder(self.spec, settings.joiner.max_message_bytes, c.fid_cache_size, c.request_cache_size,
                                  c.native)
        self.topics = {FeatureLog: settings.kafka.topics.features, ActionLog: settings.kafka.topics.actions}
        self._features_topic, self._actions_topic = settings.kafka.topics.features, settings.kafka.topics.actions
        self.on_error = on_error
        self.all_reports = c.delivery_reports == "all"
        self.block_timeout_s = c.block_timeout_s
        self._m = ClientMetrics()
        # feature logs, actions, bytes, sends since the last poll: the hot path's counters
        self._counts = [0, 0, 0, 0]
        self._action, self._feature = self.encoder.action_message, self.encoder.feature_message  # send's hot path
        native = self.encoder.native
        self._send_action = None if native is None else native.send_action  # encodes and produces in C
        self._heads, self._action_names = self.encoder.heads, self.encoder.actions  # filled and cleared in place
        conf = {
            "bootstrap.servers": settings.kafka.bootstrap,
            **settings.kafka.security.librdkafka(),  # kafka.security reaches applications' clients too
            "linger.ms": c.linger_ms,
            "batch.num.messages": c.batch_messages,
            "queue.buffering.max.messages": c.queue_max_messages,
            "compression.type": c.compression,
            "enable.idempotence": c.idempotence,
            "delivery.timeout.ms": c.delivery_timeout_ms,
            "retry.backoff.ms": c.retry_backoff_ms,
            "delivery.report.only.error": not self.all_reports,
            "on_delivery": self._delivered,
            "logger": logging.getLogger("librdkafka"),  # librdkafka's lines through the application's logging
            **({"statistics.interval.ms": c.stats_interval_ms, "stats_cb": self._stats} if c.stats_interval_ms else {}),
            **settings.kafka.producer,
            **producer_conf,
        }
        self._producer = Producer(conf)
        self._produce = self._producer.produce

    @classmethod
    def from_config(cls, path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = (),
                    **kw: Any) -> Client:
        """A client on ``path`` (default ./streamrec.toml if present) with ``--set``-style overrides."""
        return cls(load_config(path, overrides), **kw)

    # ---- sending --------------------------------------------------------------------------
    def send(self, log: FeatureLog | ActionLog, on_delivery: DeliveryCallback | None = None) -> None:
        """Check, encode and queue one log; raises ``SpecError`` (nothing sent) if it breaks the spec.

        ``on_delivery(err, msg)`` is called from ``poll``/``flush``/a later ``send`` if the message
        failed for good, and, with ``client.delivery_reports = "all"``, once it is acknowledged."""
        counts = self._counts
        if on_delivery is None and self._send_action is not None and type(log) is ActionLog:
            try:  # the usual action, in one C call; None: anything else, which the path below takes
                size = self._send_action(log, self._heads, self._action_names, self._produce,
                                         self._actions_topic)
            except BufferError:  # the local queue is full: nothing was queued
                size = None
            if size is not None:
                counts[1] += 1
                counts[2] += size
                counts[3] += 1
                if counts[3] >= POLL_EVERY:
                    counts[3] = 0
                    self._producer.poll(0)
                return
        try:
            if type(log) is ActionLog:  # actions outnumber feature logs: tested first
                key, data = self._action(log)
                topic = self._actions_topic
                counts[1] += 1
            elif type(log) is FeatureLog:
                key, data = self._feature(log)
                topic = self._features_topic
                counts[0] += 1
            else:
                raise TypeError(f"not a FeatureLog or ActionLog: {type(log).__name__}")
        except SpecError:
            self._m.rejected += 1
            raise
        counts[2] += len(data)
        cb = None if on_delivery is None else self._both(on_delivery)
        try:
            # positional (topic, value, key, partition, callback, on_delivery (its alias), timestamp):
            # keywords cost the C call's argument parsing a third of a microsecond per message
            self._produce(topic, data, key, -1, cb, None, log.ts_ms)
        except BufferError:
            self._wait_and_produce(topic, data, key, on_delivery, log.ts_ms)
        counts[3] += 1
        if counts[3] >= POLL_EVERY:
            counts[3] = 0
            self._producer.poll(0)

    def send_encoded(self, data: bytes, request_id: str, ts_ms: int,
                     on_delivery: DeliveryCallback | None = None) -> None:
        """Queue a FeatureLog already encoded under this client's spec (``encoder`` or the codec).

        For the model server, which encodes a request once to learn the FIDs it scores with and
        logs those very bytes (or the codec's encoding of the same record): what it scored is
        what the joiner joins. The key and timestamp contract is the same as ``send``'s."""
        if type(request_id) is not str or not request_id:
            raise SpecError("request_id", f"missing: got {request_id!r}")
        counts = self._counts
        counts[0] += 1
        counts[2] += len(data)
        key = request_id.encode()
        topic = self._features_topic
        try:
            self._produce(topic, data, key, -1, None if on_delivery is None else self._both(on_delivery), None, ts_ms)
        except BufferError:
            self._wait_and_produce(topic, data, key, on_delivery, ts_ms)
        counts[3] += 1
        if counts[3] >= POLL_EVERY:
            counts[3] = 0
            self._producer.poll(0)

    def _wait_and_produce(self, topic: str, data: bytes, key: bytes, on_delivery: DeliveryCallback | None,
                          ts: int) -> None:
        """The local queue is full: serve delivery reports (which frees room) until it takes the message."""
        self._m.queue_full_waits += 1
        cb = self._delivered if on_delivery is None else self._both(on_delivery)
        deadline = time.monotonic() + self.block_timeout_s
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(topic, data, key, on_delivery=cb, timestamp=ts)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise BufferError(f"the producer's queue stayed full for {self.block_timeout_s}s "
                                      "(client.block_timeout_s): is the broker reachable?") from None

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait until every queued message is delivered or failed (or ``timeout``); returns how many
        are still queued (0: all done; failures are in ``metrics()["failed"]`` and went to ``on_error``)."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 60.0) -> int:
        return self.flush(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reports ---------------------------------------------------------------------------
    def metrics(self) -> dict[str, int]:
        """Counters since the start (``ClientMetrics``); ``in_flight`` and, when only failures are
        reported, ``delivered`` (= sent - failed - in flight) are as of now."""
        m = self._m
        m.feature_logs, m.actions, m.bytes = self._counts[:3]
        sent = m.feature_logs + m.actions
        if self.all_reports:
            m.in_flight = sent - m.delivered - m.failed
        else:
            m.in_flight = len(self._producer)
            m.delivered = sent - m.failed - m.in_flight
        return asdict(m)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._m.delivered += 1
        else:
            self._m.failed += 1
            if self.on_error is not None:
                self.on_error(err, msg)

    def _both(self, on_delivery: DeliveryCallback) -> DeliveryCallback:
        def cb(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg)
            on_delivery(err, msg)

        return cb

    def _stats(self, raw: str) -> None:
        with contextlib.suppress(ValueError, TypeError):
            self._m.retries = int(json.loads(raw).get("txretries", 0))
