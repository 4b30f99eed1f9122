"""A frozen replica (``serving.follow_deltas = false``) serves a snapshot or nothing: without one it
fails loudly (its /healthz says why) instead of serving an empty model as ready. The frozen arm
with a snapshot, next to a following replica, is checked live in tests/simulate."""

from __future__ import annotations

import time
from pathlib import Path

from serving.replica import Replica
from streamrec.config import Settings


def test_a_frozen_replica_without_a_snapshot_fails_and_is_never_ready(tmp_path: Path) -> None:
    s = Settings()
    s.serving.follow_deltas = False
    s.serving.snapshot_dir = tmp_path  # empty: no snapshot to serve
    r = Replica(s)
    r.start()
    deadline = time.monotonic() + 10
    while r.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    r.stop()
    assert r.error is not None and "follow_deltas = false needs a snapshot" in r.error
    assert not r.ready and not r.alive
