"""One simulation run, start to end: data, starting model, pipeline, traffic, drain, report.

1. MovieLens is cut by time at ``simulate.batch_share``; the starting model is batch-trained on the
   ratings before the cut, in this process, publishing its syncs to the run's params topic and ending
   with a snapshot (which records the params offset, so replicas bootstrap from it).
2. The pipeline starts as processes (``simulate.pipeline``): joiner, online trainer (continuing from
   that snapshot), the online arm's replica (follows deltas) and the frozen arm's (does not).
3. Requests: a user (seeded draw) asks their arm's replica to rank ``candidates`` items and show the
   top ``show``; the replica logs the FeatureLog; the user's actions go to the actions topic through
   the client, each when the event clock reaches it. At each window's end a fixed probe request
   (unlogged) is scored by both replicas, to show which model moved.
4. The remaining actions are sent, then one action far in event time closes the joiner's windows;
   the examples topic is read until every served impression is there (or it stops growing).
"""

from __future__ import annotations

import heapq
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulate.config import SimulateConfig
from simulate.pipeline import Process, Server
from simulate.report import write_report
from simulate.users import ARMS, FROZEN, ONLINE, Action, Population
from streamrec.config import Settings

Say = Callable[[str], None]


def prepare(s: Settings, cfg: SimulateConfig, out: Path | None) -> Path:
    """Point every stage at this run's own topics and directories (a run never reads another's data)."""
    tag = time.strftime("%Y%m%d-%H%M%S")
    run = (out or Path(cfg.out_dir) / tag).resolve()
    run.mkdir(parents=True, exist_ok=True)
    if out is None:
        latest = Path(cfg.out_dir) / "latest"
        latest.unlink(missing_ok=True)
        latest.symlink_to(run)
    t = s.kafka.topics
    name = f"sim-{tag}-{uuid.uuid4().hex[:6]}"
    t.features, t.actions, t.examples = f"{name}-features", f"{name}-actions", f"{name}-examples"
    t.dead_letter, t.params = f"{name}-dead-letter", f"{name}-params"
    s.joiner.state_dir = run / "joiner"
    s.joiner.group_id = f"{name}-join"
    s.joiner.metrics_port = None
    s.trainer.snapshot_dir = run / "snapshots"
    s.trainer.consumer_group = f"{name}-trainer"
    s.trainer.metrics_csv, s.trainer.plot, s.trainer.metrics_port = run / "trainer-auc.csv", None, None
    s.trainer.sparse_sync_interval_s = cfg.sparse_sync_interval_s
    s.trainer.dense_sync_interval_s = cfg.dense_sync_interval_s
    return run


def check(s: Settings, cfg: SimulateConfig) -> None:
    """Refuse settings under which served actions would be lost by design (the count check relies on it)."""
    longest = max(int(cfg.delay_max_s * 1000), cfg.impression_delay_max_ms)  # react() caps every delay
    if longest >= s.joiner.window_ms:
        raise ValueError(f"an action may come {longest} ms after its request, past joiner.window_ms = "
                         f"{s.joiner.window_ms}: lower simulate.delay_max_s or raise the window")
    actions = set(s.features.labels) | set(s.features.actions.ignored)
    if cfg.impression_action not in actions:
        raise ValueError(f"simulate.impression_action {cfg.impression_action!r} is not an action of the spec "
                         f"({sorted(actions)})")


def batch_train(s: Settings, pop: Population, say: Say) -> Path:
    """The starting model: the trainer's DeepFM over the ratings before the cut, one pass in time order,
    its syncs published as deltas; the snapshot it ends with is what both arms start from."""
    from serving.transport import DeltaPublisher
    from trainer.experiments.data import rating_examples
    from trainer.loop import Trainer
    from trainer.sources import MemorySource

    records = rating_examples(s.features, s.replay, limit=pop.cut)
    say(f"batch-training the starting model on {len(records):,} ratings (the first "
        f"{100 * pop.cfg.batch_share:.0f} % by time)")
    cfg = s.trainer.model_copy(update={"snapshot_every_s": 0.0, "metrics_csv": None, "plot": None})
    publisher = DeltaPublisher(s)
    try:
        trainer = Trainer(cfg, s.features, serving=publisher)
        trainer.run(MemorySource(records, name="batch"))
        return trainer.snapshot()
    finally:
        publisher.close()


def simulate(settings: Settings, quick: bool = False, out: Path | None = None,
             say: Say = lambda _m: None) -> tuple[dict[str, Any], Path]:
    """Run the whole simulation; return the report and its folder."""
    from examples.movielens.dataset import load_movielens
    from streamrec.kafka import check_access, create_topics

    s = settings.model_copy(deep=True)
    cfg = s.simulate.quick() if quick else s.simulate
    s.simulate = cfg
    check(s, cfg)
    run = prepare(s, cfg, out)
    check_access(s.kafka)
    counts = s.kafka.topics.partition_counts()
    counts.pop(s.kafka.topics.params)  # the publisher creates it, with its retention
    create_topics(s.kafka, counts)
    pop = Population(load_movielens(), cfg, s.features.labels)
    say(f"{len(pop.users)} users: {sum(u.arm == ONLINE for u in pop.users)} online, "
        f"{sum(u.arm == FROZEN for u in pop.users)} frozen; run folder {run}")
    start = batch_train(s, pop, say)
    frozen_dir = run / "frozen-snapshot"
    shutil.copytree(start, frozen_dir / start.name)
    logs = run / "logs"
    stages: list[Process] = [Process("joiner", s, ["join"], logs), Process("trainer", s, ["train", "--online"], logs)]
    # each arm's FeatureLogs name it in `source`, so the logs themselves show who was served by which
    own = {ONLINE: [], FROZEN: ["serving.follow_deltas=false", f'serving.snapshot_dir="{frozen_dir}"']}
    servers = {arm: Server(arm, s, logs, [f'serving.source="{s.serving.source}-{arm}"', *own[arm]]) for arm in ARMS}
    procs = [*stages, *servers.values()]
    try:
        for p in procs:
            p.start()
        for arm, srv in servers.items():
            srv.connect(cfg.start_timeout_s)
            st = srv.wait_ready(cfg.start_timeout_s)
            say(f"{arm} replica ready: version {st['version']}, {st['rows']:,} rows, from {st['bootstrapped_from']}")
        traffic = _traffic(s, cfg, pop, servers, procs, say)
        joined = _drain(s, cfg, traffic, say)
    finally:
        say("stopping the pipeline")
        stop_codes = {p.name: p.stop() for p in reversed(procs)}
    report = {"config": cfg.model_dump(mode="json"), "labels": pop.labels, "start_snapshot": str(start),
              "users": {arm: sorted(u.user_id for u in pop.users if u.arm == arm) for arm in ARMS},
              **traffic["report"], "joined": joined, "topics": s.kafka.topics.by_role(),
              "sources": {arm: f"{s.serving.source}-{arm}" for arm in ARMS}, "stop_codes": stop_codes,
              "settings": {"joiner.window_ms": s.joiner.window_ms,
                           "joiner.negative_keep_rate": s.joiner.negative_keep_rate,
                           "trainer.sparse_sync_interval_s": s.trainer.sparse_sync_interval_s,
                           "trainer.dense_sync_interval_s": s.trainer.dense_sync_interval_s}}
    write_report(report, run)
    return report, run


def _traffic(s: Settings, cfg: SimulateConfig, pop: Population, servers: dict[str, Server],
             procs: list[Process], say: Say) -> dict[str, Any]:
    """The request loop; per request: arm, window, shown count, labels earned; probes at window ends."""
    from streamrec.applog import ActionLog, Client

    client = Client(s)
    labels = pop.labels
    t0 = int(pop.ds.r_ts_s[pop.cut - 1]) * 1000 + 1000  # the stream goes on where the batch part ended
    wall0 = time.monotonic()
    pending: list[tuple[int, int, Action]] = []
    seq = 0
    windows = [_empty_window(k, labels) for k in range(cfg.windows)]
    probes: list[dict[str, Any]] = []
    probe_user = pop.users[0]
    probe_items = [int(i) for i in pop.popularity.argsort()[::-1][: cfg.probe_items]]
    # built once: its dense features (counts) must not move, or the frozen arm's scores would
    probe = {**pop.request(s.features, probe_user, probe_items, t0), "log": False, "raw": True, "show": None}
    served: dict[str, dict[str, Any]] = {}  # request id -> arm, impressions, labels sent
    now_ms = t0

    def send_due(until: int) -> None:
        while pending and pending[0][0] <= until:
            a = heapq.heappop(pending)[2]
            client.send(ActionLog(a.request_id, a.item_id, a.action, a.ts_ms))

    for r in range(cfg.requests):
        wait = wall0 + r / cfg.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now_ms = t0 + int((time.monotonic() - wall0) * cfg.speed * 1000)
        send_due(now_ms)
        client.poll(0)
        w = windows[r * cfg.windows // cfg.requests]
        u = pop.next_user()
        items = pop.candidates(u)
        status, body = servers[u.arm].call("POST", "/score", pop.request(s.features, u, items, now_ms))
        if status != 200:
            for p in procs:
                p.check()
            raise RuntimeError(f"{u.arm} replica answered {status}: {body}")
        index = {int(pop.ds.item_ids[i]): i for i in items}
        shown = [index[it["item_id"]] for it in body["items"][: cfg.show]]
        actions = pop.react(u, body["request_id"], shown, now_ms)
        for a in actions:
            heapq.heappush(pending, (a.ts_ms, seq, a))
            seq += 1
        earned = {lb: sum(a.action == lb for a in actions) for lb in labels}
        served[body["request_id"]] = {"arm": u.arm, "impressions": len(shown), **earned}
        a = w["arms"][u.arm]
        a["requests"] += 1
        a["impressions"] += len(shown)
        for lb in labels:
            a[lb] += earned[lb]
        a["versions"].add(body["model_version"])
        w["event_ms"] = [w["event_ms"][0] or now_ms, now_ms]
        if r + 1 == cfg.requests or (r + 1) * cfg.windows // cfg.requests != r * cfg.windows // cfg.requests:
            w["wall_s"] = round(time.monotonic() - wall0, 1)
            probes.append(_probe(servers, probe, w["window"]))
            say(_window_line(w, labels, cfg.requests))
    send_due(1 << 62)  # the rest, in event-time order (their feature logs are all out)
    # one action far past every window closes them all (it joins nothing: no request has its id)
    last = max([now_ms, *(a.ts_ms for _t, _s, a in pending)])
    client.send(ActionLog("simulate-end-of-run", 0, cfg.impression_action,
                          last + s.joiner.window_ms + s.joiner.allowed_lateness_ms + 1))
    left = client.flush(60)
    failed = client.metrics()["failed"]
    if left or failed:
        raise RuntimeError(f"actions not delivered: {left} still queued, {failed} failed")
    for w in windows:
        for a in w["arms"].values():
            a["versions"] = sorted(a["versions"])
    return {"served": served, "report": {"windows": windows, "probes": probes, "probe": {
        "user_id": probe_user.user_id, "item_ids": [int(pop.ds.item_ids[i]) for i in probe_items]},
        "requests": len(served), "wall_s": round(time.monotonic() - wall0, 1)}}


def _empty_window(k: int, labels: list[str]) -> dict[str, Any]:
    return {"window": k, "event_ms": [0, 0], "wall_s": 0.0,
            "arms": {arm: {"requests": 0, "impressions": 0, **dict.fromkeys(labels, 0), "versions": set()}
                     for arm in ARMS}}


def _window_line(w: dict[str, Any], labels: list[str], total: int) -> str:
    parts = []
    for arm, a in w["arms"].items():
        rates = ", ".join(f"{lb} {a[lb] / max(a['impressions'], 1):.3f}" for lb in labels)
        parts.append(f"{arm}: {a['requests']} req, {rates}, v{max(a['versions'], default=0)}")
    return f"window {w['window']} ({w['wall_s']:.0f} s): " + " | ".join(parts)


def _probe(servers: dict[str, Server], body: dict[str, Any], window: int) -> dict[str, Any]:
    """Both arms' raw scores of one fixed request (not logged: it joins nothing)."""
    out: dict[str, Any] = {"window": window}
    for arm, srv in servers.items():
        status, got = srv.call("POST", "/score", body)
        if status != 200:
            raise RuntimeError(f"probe of the {arm} replica answered {status}: {got}")
        out[arm] = {"version": got["model_version"], "dense_version": got["dense_version"],
                    "scores": {str(it["item_id"]): it["raw"] for it in got["items"]}}
    return out


def _drain(s: Settings, cfg: SimulateConfig, traffic: dict[str, Any], say: Say) -> dict[str, Any]:
    """Read the examples topic until it holds every served impression (every shown item of every served
    request, both arms) or stops growing; count them and their labels per request."""
    from schemas.codec import default_codec
    from streamrec.kafka import drain

    served = traffic["served"]
    want = sum(r["impressions"] for r in served.values())
    codec = default_codec()
    deadline = time.monotonic() + cfg.drain_timeout_s
    labels = s.features.labels
    last = -1
    while True:
        per: dict[str, dict[str, int]] = {}
        n = 0
        for m in drain(s.kafka, [s.kafka.topics.examples], idle_s=1.0):
            ex = codec.decode(m.value())[1]
            c = per.setdefault(ex["request_id"], dict.fromkeys(["examples", *s.features.labels], 0))
            c["examples"] += 1
            for lb, v in ex["labels"].items():
                c[lb] += int(v)
            n += 1
        positives = {lb: sum(c[lb] for rid, c in per.items() if rid in served) for lb in labels}
        sent = {lb: sum(r[lb] for r in served.values()) for lb in labels}
        say(f"examples joined: {n:,} for {want:,} served impressions; " + ", ".join(
            f"{lb} {positives[lb]:,} of {sent[lb]:,}" for lb in labels))
        # negatives are sampled (joiner.negative_keep_rate): complete when every positive is in, and
        # without sampling every impression; or when nothing came for a while past the deadline
        if positives == sent and (s.joiner.negative_keep_rate < 1 or n >= want):
            break
        if time.monotonic() > deadline and n == last:
            break
        last = n
        time.sleep(2.0)
    by_arm = {arm: {"served_requests": 0, "joined_requests": 0, "impressions": 0, "examples": 0,
                    **{f"{lb}_sent": 0 for lb in labels}, **{f"{lb}_joined": 0 for lb in labels}} for arm in ARMS}
    for rid, r in served.items():
        a, got = by_arm[r["arm"]], per.get(rid)
        a["served_requests"] += 1
        a["impressions"] += r["impressions"]
        a["joined_requests"] += got is not None
        a["examples"] += got["examples"] if got else 0
        for lb in labels:
            a[f"{lb}_sent"] += r[lb]
            a[f"{lb}_joined"] += got[lb] if got else 0
    return {"examples": n, "impressions": want, "unknown_requests": len(set(per) - set(served)), "by_arm": by_arm}
