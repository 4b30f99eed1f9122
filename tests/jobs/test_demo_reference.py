"""The demo's reference join: the replay's events, joined incrementally as they are sent, give
exactly the examples of the batch in-memory join, counted by kind, with dead letters by reason."""

from __future__ import annotations

from jobs.demo_reference import ReferenceJoin, ids_digest
from jobs.replay import ReplaySummary, send_events
from jobs.replay_examples import join_events
from joiner.config import JoinerConfig
from replay.config import ReplayConfig
from replay.events import ACTIONS, FEATURES, ReplayEvent, build_events
from streamrec.client import ActionLog


class CountingClient:
    """What ``send_events`` needs of a ``streamrec.client.Client``, without a broker."""

    def __init__(self) -> None:
        self.topics = {ActionLog: "actions"}
        self.sent = 0

    def send(self, log: object, on_delivery: object = None) -> None:
        self.sent += 1
        self.topics.setdefault(type(log), "features")

    def metrics(self) -> dict[str, int]:
        return {"bytes": 0, "failed": 0}

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_reference_join_equals_join_events_on_a_small_replay(movielens_spec) -> None:
    events = build_events(ReplayConfig(limit=300), "movielens")
    # an action whose feature log never comes: a dead letter once the input ends
    events.append(ReplayEvent(events[-1].send_ms, 1 << 40, ACTIONS, "no-such-request",
                              ActionLog("no-such-request", 1, "click", events[-1].log.ts_ms)))
    cfg = JoinerConfig()
    ref = ReferenceJoin(cfg, movielens_spec)
    summary = ReplaySummary()
    client = CountingClient()
    send_events(client, iter(events), summary, observe=ref.observe)  # the replay's path
    r = ref.result()

    expected = join_events(events, cfg, movielens_spec)
    ids = [x["example_id"] for x in expected]
    assert client.sent == len(events) and sorted(ref.join.examples) == sorted(ids)
    assert r["examples"] == len(set(ids)) == len(ids) and r["ids_sha1"] == ids_digest(ids)
    window = [x for x in expected if not x["late"]]
    assert r["positives"] == sum(any(x["labels"].values()) for x in window)
    assert r["negatives_kept"] == len(window) - r["positives"]
    assert r["late"] == len(expected) - len(window) > 0
    shown = sum(len(e.log.items) for e in events if e.role == FEATURES)
    assert shown == summary.shown_items == r["positives"] + r["negatives_kept"] + r["negatives_dropped"]
    assert r["dead_letters"] == {"no_features": 1}
