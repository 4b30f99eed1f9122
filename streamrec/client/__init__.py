"""The application client: log what was served and what users did, as the feature spec says.

::

    from streamrec.client import ActionLog, Client, FeatureLog

    client = Client.from_config("streamrec.toml")            # the pipeline's config: spec, topics, broker
    log = FeatureLog("req-1", user_id=42, ts_ms=now_ms, user={"country": "de"})
    log.add_item(7, sparse={"category": "shoes"}, dense={"price": 19.9})
    client.send(log)                                         # SpecError (naming the field) if it breaks the spec
    client.send(ActionLog("req-1", item_id=7, action="click", ts_ms=now_ms + 3000))
    client.flush()

Raw values become FIDs as the spec says, crosses are computed, the message is keyed by
``request_id`` and stamped with ``ts_ms``. Installs without torch or Flink
(``pip install 'streamrec[client]'``): it imports only confluent-kafka, fastavro and pydantic.
"""

from typing import Any

from schemas.spec import SpecError
from streamrec.client.encoder import LogEncoder
from streamrec.client.logs import ActionLog, FeatureLog, Item


def __getattr__(name: str) -> Any:
    """The producer (Kafka, the pipeline's config) loads on first use: encoding logs needs neither,
    so a stage that only encodes (the replay, the trainer's experiments) does not load the joiner's config."""
    if name in ("Client", "ClientMetrics"):
        from streamrec.client import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ActionLog", "Client", "ClientMetrics", "FeatureLog", "Item", "LogEncoder", "SpecError"]
