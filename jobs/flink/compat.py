"""Make PyFlink's Kafka wrappers work with the thin connector jars.

PyFlink's Python Kafka wrappers name the *shaded* Kafka classes of the flink-sql-connector-kafka
uber jar (``org.apache.flink.kafka.shaded.org.apache.kafka...``). The project ships the thin
``flink-connector-kafka.jar`` plus the plain ``kafka-clients.jar`` (see STACK.md), where those
classes do not exist, so ``KafkaOffsetsInitializer.offsets()`` and ``committed_offsets()`` fail with
"Could not found the Java class". ``install()`` redirects the two conversions to the plain classes.
"""

from __future__ import annotations

from pyflink.datastream.connectors import kafka as _kafka
from pyflink.java_gateway import get_gateway


def _to_j_topic_partition(self: _kafka.KafkaTopicPartition):  # noqa: ANN202 - a py4j object
    return get_gateway().jvm.org.apache.kafka.common.TopicPartition(self._topic, self._partition)


def _to_j_offset_reset_strategy(self: _kafka.KafkaOffsetResetStrategy):  # noqa: ANN202
    return getattr(get_gateway().jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy, self.name)


def install() -> None:
    """Idempotent; the Java lookups are lazy, so this may run before the jars are added."""
    _kafka.KafkaTopicPartition._to_j_topic_partition = _to_j_topic_partition
    _kafka.KafkaOffsetResetStrategy._to_j_offset_reset_strategy = _to_j_offset_reset_strategy
