"""Checks a command runs before a stage's heavy imports (torch, numba, pyarrow: seconds), so that a
broker that is down or a missing topic ends it within seconds, in one line (``streamrec.errors``)."""

from __future__ import annotations

from streamrec.config import Settings


def preflight(s: Settings, roles: list[str]) -> None:
    """The broker answers and lets us in, and the topics of ``roles`` (``kafka.topics.<role>``) exist.
    The stage checks again itself (a library caller has no CLI); when all is well that costs milliseconds."""
    from streamrec.kafka import check_access, require_topics

    check_access(s.kafka)
    require_topics(s.kafka, roles)
