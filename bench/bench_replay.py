"""Replay throughput vs a bare confluent-kafka produce loop of the same bytes, same broker, same run.

Prints messages/s of: the bare loop (baseline), the replay's send path (same pre-encoded payloads,
with its pacing/progress/backpressure logic), and the whole replay (build + encode + send).
Usage: python bench/bench_replay.py [--limit RATINGS]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from deploy.broker import Broker
from jobs.replay import encode_events, produce_stream, replay_producer, run_replay
from replay import FEATURES, build_events
from streamrec.config import load_config
from streamrec.kafka import create_topics, producer


def bare_loop(p: Producer, topics: dict[str, str], roles: list[str], keys: list[bytes], payloads: list[bytes]) -> None:
    for role, key, payload in zip(roles, keys, payloads, strict=True):
        while True:
            try:
                p.produce(topics[role], payload, key=key)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=30_000, help="MovieLens ratings (each ~12 messages)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp)) as broker:
        s = load_config(None, [f'kafka.bootstrap="{broker.bootstrap}"', f"replay.limit={args.limit}"])
        t0 = time.perf_counter()
        events = build_events(s.replay)
        t1 = time.perf_counter()
        payloads = encode_events(events)
        t2 = time.perf_counter()
        n = len(events)
        roles = [e.role for e in events]
        keys = [e.key.encode() for e in events]
        best_bare = best_replay = float("inf")
        for r in range(args.repeat):
            for kind in ("bare", "replay"):
                topics = {FEATURES: f"{kind}{r}-features", "actions": f"{kind}{r}-actions"}
                create_topics(s.kafka, {t: 2 for t in topics.values()})
                p = producer(s.kafka) if kind == "bare" else replay_producer(s)
                t = time.perf_counter()
                if kind == "bare":
                    bare_loop(p, topics, roles, keys, payloads)
                    best_bare = min(best_bare, time.perf_counter() - t)
                else:
                    produce_stream(p, ((topics[r], k, v) for r, k, v in zip(roles, keys, payloads, strict=True)))
                    best_replay = min(best_replay, time.perf_counter() - t)
                del p
        build_s, encode_s = t1 - t0, t2 - t1
        mb = sum(map(len, payloads)) / 1e6
        s.kafka.topics.features, s.kafka.topics.actions = "whole-features", "whole-actions"
        create_topics(s.kafka, {"whole-features": 2, "whole-actions": 2})
        whole = run_replay(s, "movielens", quiet=True, read_back=False).seconds
        print(f"messages: {n:,} ({mb:.1f} MB) from {args.limit:,} ratings; best of {args.repeat}")
        print(f"bare confluent-kafka loop : {n / best_bare:12,.0f} msg/s  (baseline)")
        print(f"replay send path          : {n / best_replay:12,.0f} msg/s  ratio {best_bare / best_replay:.2f}x")
        print(f"replay end to end         : {n / whole:12,.0f} msg/s  ratio {best_bare / whole:.2f}x "
              f"(alone: build {build_s:.1f} s, encode {encode_s:.1f} s)")


if __name__ == "__main__":
    main()
