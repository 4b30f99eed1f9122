"""The application client: log what was served and what users did, as the feature spec says.

::

    from streamrec.applog import ActionLog, Client, FeatureLog

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

from streamrec import applog
from streamrec.applog import ActionLog, FeatureLog, Item, LogEncoder, SpecError


def __getattr__(name: str) -> Any:
    """``Client`` and ``ClientMetrics`` load on first use, as in ``streamrec.applog``."""
    return getattr(applog, name)


__all__ = ["ActionLog", "Client", "ClientMetrics", "FeatureLog", "Item", "LogEncoder", "SpecError"]
