"""Application logging: log builders of raw values, their encoder and the producer.

Applications import it as ``streamrec.client`` (that package's docstring shows how); the
pipeline's own stages (the replay, serving, the experiments) import it from here, below the CLI.
"""

from typing import Any

from schemas.spec import SpecError
from streamrec.applog.encoder import LogEncoder
from streamrec.applog.logs import ActionLog, FeatureLog, Item


def __getattr__(name: str) -> Any:
    """The producer (Kafka, the pipeline's config) loads on first use: encoding logs needs neither,
    so a stage that only encodes (the replay, the trainer's experiments) does not load the joiner's config."""
    if name in ("Client", "ClientMetrics"):
        from streamrec.applog import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ActionLog", "Client", "ClientMetrics", "FeatureLog", "Item", "LogEncoder", "SpecError"]
