"""The demo's reference join: the replay's events, joined incrementally as they are sent, give
exactly the examples of the batch in-memory join, counted by kind, with dead letters by reason."""

from __future__ import annotations

from jobs.demo_reference import ReferenceJoin, ids_digest
from jobs.replay import ReplaySummary, _outgoing
from joiner.config import JoinerConfig
from replay import ACTIONS, FEATURES, ReplayEvent, build_events
from replay.config import ReplayConfig
from streamrec.config import Settings
from trainer.replay_examples import join_events


def test_reference_join_equals_join_events_on_a_small_replay() -> None:
    events = build_events(ReplayConfig(limit=300), "movielens")
    # an action whose feature log never comes: a dead letter once the input ends
    events.append(ReplayEvent(events[-1].send_ms, 1 << 40, ACTIONS, "no-such-request",
                              {"request_id": "no-such-request", "item_id": 1, "action": "click",
                               "ts_ms": events[-1].record["ts_ms"], "value": None}))
    cfg = JoinerConfig()
    ref = ReferenceJoin(cfg)
    summary = ReplaySummary()
    sent = list(_outgoing(Settings(), iter(events), summary, lambda: None, ref.observe))  # the replay's path
    r = ref.result()

    expected = join_events(events, cfg)
    ids = [x["example_id"] for x in expected]
    assert len(sent) == len(events) and sorted(ref.join.examples) == sorted(ids)
    assert r["examples"] == len(set(ids)) == len(ids) and r["ids_sha1"] == ids_digest(ids)
    window = [x for x in expected if not x["late"]]
    assert r["positives"] == sum(any(x["labels"].values()) for x in window)
    assert r["negatives_kept"] == len(window) - r["positives"]
    assert r["late"] == len(expected) - len(window) > 0
    shown = sum(len(e.record["items"]) for e in events if e.role == FEATURES)
    assert shown == summary.shown_items == r["positives"] + r["negatives_kept"] + r["negatives_dropped"]
    assert r["dead_letters"] == {"no_features": 1}
