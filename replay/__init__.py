"""Log replay: MovieLens-100K (or SYNTHETIC Zipf traffic) as a served feed's feature and action logs."""

from replay.events import ACTIONS, FEATURES, ReplayEvent, build_events, iter_events

__all__ = ["ACTIONS", "FEATURES", "ReplayEvent", "build_events", "iter_events"]
