"""Serving as a service, end to end with separate processes and the real broker:
joiner, trainer and two `streamrec serve` replicas; requests served and logged by a replica,
actions sent by the client, joined, trained on, and back in serving as deltas.

Checked: both replicas score alike and equal the trainer's own scoring of the final weights; a
replica killed and restarted comes back ready (snapshot + deltas) and equal; rows evicted by TTL
leave serving; a served request's examples carry exactly the served features; bad requests get a
4xx naming the field while serving goes on; per-head sampling correction with per-head rates."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from deploy.procs import free_port
from examples.movielens import SPEC_FILE
from schemas.codec import default_codec
from schemas.fid import fid
from serving.transport import last_version
from streamrec.client import ActionLog, Client, FeatureLog, LogEncoder
from streamrec.config import Settings, load_config
from streamrec.kafka import drain
from tests.serving.procs import Replica, Stage, http, wait_until
from trainer.evaluation import correct_sampled
from trainer.loop import Trainer

T0 = 1_767_225_600_000
USERS = 40


def user(u: int) -> dict:
    return {"user_id": u, "age": str(u % 7), "gender": "MF"[u % 2], "occupation": str(u % 20), "zip": f"{u % 50:03d}"}


def item(i: int) -> dict:
    return {"item_id": i, "sparse": {"item_id": i, "genre": [f"g{i % 5}"], "year": str(1990 + i % 10)},
            "dense": {"item_popularity": float(i % 7)}}


def clicked(u: int, i: int) -> bool:
    return (u + i) % 4 == 0


def liked(u: int, i: int) -> bool:
    return clicked(u, i) and i % 3 == 0


def write_config(tmp: Path, topics: dict[str, str], bootstrap: str, trainer_metrics: int,
                 joiner_metrics: int) -> tuple[Path, Settings]:
    (tmp / "features.toml").write_text(_spec_toml())  # item rows expire after 60 event seconds
    cfg = tmp / "streamrec.toml"
    cfg.write_text(f"""
[features]
file = "features.toml"
[kafka]
bootstrap = "{bootstrap}"
[kafka.topics]
{chr(10).join(f'{k} = "{v}"' for k, v in topics.items())}
[stack]
run_dir = "{tmp / 'run'}"
[joiner]
state_dir = "{tmp / 'joiner'}"
group_id = "join-{topics['params']}"
metrics_port = {joiner_metrics}
window_ms = 1000
allowed_lateness_ms = 0
negative_keep_rate = 0.5
checkpoint_interval_ms = 500
[trainer]
snapshot_dir = "{tmp / 'snaps'}"
snapshot_every_s = 3.0
sparse_sync_interval_s = 0.5
dense_sync_interval_s = 1.0
evict_interval_s = 1.0
batch_size = 64
metrics_port = {trainer_metrics}
metrics_csv = "{tmp / 'auc.csv'}"
plot = "{tmp / 'auc.png'}"
[serving]
max_candidates = 50
""")
    return cfg, load_config(cfg)


def _spec_toml() -> str:
    """The MovieLens spec file with a TTL on item rows."""
    old = 'item_id    = { number = 6, side = "item", type = "int" }'
    text = SPEC_FILE.read_text()
    assert old in text
    return text.replace(old, old[:-2] + ", ttl_s = 60 }")


def request(u: int, items: list[int], ts: int, **kw) -> dict:
    return {"user_id": u, "ts_ms": ts, "user": user(u), "user_dense": {"user_activity": float(u % 9)},
            "candidates": [item(i) for i in items], **kw}


SENT = {"events": 0}  # feature logs (by the replicas) + actions (by the client) of the test


def serve_traffic(replica: Replica, client: Client, pool: list[int], t0: int, n: int, seed: int) -> list[str]:
    """``n`` requests of 8 candidates to ``replica`` (logged by it), then the users' actions via the client."""
    rng = np.random.default_rng(seed)
    rids = []
    sent = client.metrics()["actions"]
    for k in range(n):
        u, ts = int(rng.integers(USERS)), t0 + k * 200
        items = [int(i) for i in rng.choice(pool, 8, replace=False)]
        status, body = replica.post("/score", request(u, items, ts))
        assert status == 200, body
        rids.append(body["request_id"])
        for j, it in enumerate(body["items"]):
            i = it["item_id"]
            client.send(ActionLog(body["request_id"], i, "impression", ts + 20 + j))
            if clicked(u, i):
                client.send(ActionLog(body["request_id"], i, "click", ts + 100))
            if liked(u, i):
                client.send(ActionLog(body["request_id"], i, "like", ts + 150))
    assert client.flush(30) == 0
    SENT["events"] += n + client.metrics()["actions"] - sent
    return rids


def metric(port: int, pattern: str) -> float:
    status, text = http("GET", f"http://127.0.0.1:{port}/metrics")
    m = re.search("^" + re.escape(pattern) + r" ([0-9.e+]+)$", text, re.M) if status == 200 else None
    return float(m.group(1)) if m else -1.0


def examples_of(s: Settings) -> list[dict]:
    codec = default_codec()
    return [codec.decode(m.value())[1] for m in drain(s.kafka, [s.kafka.topics.examples], idle_s=1.0)]


def same_scores(a: Replica, b: Replica, req: dict) -> tuple[dict, dict]:
    sa, ra = a.post("/score", {**req, "log": False, "raw": True})
    sb, rb = b.post("/score", {**req, "log": False, "raw": True})
    assert sa == sb == 200, (ra, rb)
    return ra, rb


@pytest.mark.slow
def test_trainer_joiner_and_two_replicas_close_the_loop(tmp_path: Path, make_topics, kafka_bootstrap: str) -> None:
    topics = make_topics(features=2, actions=2, examples=2, dead_letter=1, params=1)
    tm, jm = free_port(), free_port()
    cfg, s = write_config(tmp_path, topics, kafka_bootstrap, tm, jm)
    SENT["events"] = 0
    logs = tmp_path / "logs"
    joiner = Stage("joiner", cfg, ["join"], logs).start()
    trainer = Stage("trainer", cfg, ["train", "--online"], logs).start()
    a = Replica("replica-a", cfg, logs).start()
    b = Replica("replica-b", cfg, logs)
    procs = [joiner, trainer, a]
    client = Client(s)
    try:
        a.wait_ready()  # no snapshot yet: the params topic from its start (the trainer's first dense delta)
        assert a.get("/healthz")[0] == 200

        # ---- bad requests: 4xx naming the field; serving goes on --------------------------------------
        good = request(1, [101, 102], T0)
        bad = {
            "candidates[0].sparse.colour": {**good, "candidates": [{**item(101), "sparse": {"colour": "red"}}]},
            "user_id": {**good, "user_id": "seven"},
            "candidates[1].item_id": {**good, "candidates": [item(101), {**item(102), "item_id": 1.5}]},
            "candidates": {**good, "candidates": []},
            "rank_by": {**good, "rank_by": "purchase"},
            "user.age": {**good, "user": {**user(1), "age": 7}},
        }
        for field, body in bad.items():
            status, got = a.post("/score", {**body, "log": False})
            assert 400 <= status < 500 and field in got["error"], (field, status, got)
        status, got = a.post("/score", {**request(1, list(range(100, 160)), T0), "log": False})
        assert status == 422 and got["fields"] == ["candidates"] and "max_candidates" in got["error"]
        status, got = a.post("/score/batch", {"requests": [good, {**good, "candidates": [{"item_id": "x"}]}]})
        assert status == 422 and "requests[1].candidates[0].item_id" in got["error"], got
        assert a.post("/score", {**good, "log": False})[0] == 200

        # ---- phase 1: items 100..159 at event time T0.. ----------------------------------------------
        p1, p2 = list(range(100, 160)), list(range(200, 260))
        serve_traffic(a, client, p1, T0, 150, seed=1)
        b.start()  # a second replica while training runs (from a snapshot if one exists, else the topic)
        procs.append(b)
        b.wait_ready()

        # ---- phase 2: items 200..259, 200 event seconds later: phase-1 item rows expire (TTL 60 s) -----
        rids = serve_traffic(b, client, p2, T0 + 200_000, 150, seed=2)
        # a request served by replica B, shown top 3, one clicked: its examples carry exactly what was served
        req = request(7, [200, 201, 202, 203, 204], T0 + 240_000, show=3)
        status, served = b.post("/score", req)
        assert status == 200 and served["logged"] and len(served["items"]) == 5
        shown = [it["item_id"] for it in served["items"][:3]]
        client.send(ActionLog(served["request_id"], shown[1], "click", T0 + 240_100))
        assert client.flush(30) == 0
        SENT["events"] += 2  # its feature log and the click

        # ---- kill replica B mid-stream, train on, restart it -------------------------------------------
        b.kill()
        # event time jumps again: every phase-1 row (the last phase-1 windows trained in batches stamped with
        # phase-2 times) is past its TTL now; these requests also close the windows above
        serve_traffic(a, client, p2, T0 + 400_000, 40, seed=3)
        b.start()
        stats_b = b.wait_ready()
        assert stats_b["bootstrapped_from"] is not None  # a snapshot, then the deltas after its offset

        # ---- let the joiner and the trainer catch up, then stop the trainer (final sync + snapshot) -------
        wait_until(lambda: metric(jm, 'streamrec_join_input_messages_total{role="features"}')
                   + metric(jm, 'streamrec_join_input_messages_total{role="actions"}') >= SENT["events"], 180,
                   f"joiner read all {SENT['events']} events", procs)
        time.sleep(2 * s.joiner.checkpoint_interval_ms / 1000 + 1)  # its last checkpoint's transaction commits
        examples = examples_of(s)
        assert len(examples) > 1000
        wait_until(lambda: metric(tm, "streamrec_trainer_examples_total") >= len(examples), 180,
                   "trainer caught up", procs)
        trainer.kill(signal.SIGTERM)
        assert trainer.wait(120) == 0, trainer.tail()
        final = last_version(s, topics["params"])
        for r in (a, b):
            wait_until(lambda r=r: r.get("/stats")[1]["version"] >= final, 60, f"{r.name} at version {final}", [r])

        # ---- both replicas score alike, and as the trainer does with the same weights ------------------
        probe = request(3, p2[:10] + [999], T0 + 500_000)
        ra, rb = same_scores(a, b, probe)
        assert ra["items"] == rb["items"] and ra["model_version"] == rb["model_version"] == final
        t = Trainer(s.trainer, s.features)
        assert t.restore() is not None
        enc = LogEncoder(s.features)
        log = FeatureLog("probe", 3, probe["ts_ms"], probe["user"], probe["user_dense"])
        for c in probe["candidates"]:
            log.add_item(c["item_id"], c["sparse"], c["dense"])
        from serving.model_server import ModelServer

        recs = ModelServer.examples_of(enc.record(log))
        mine = dict(zip([r["item_id"] for r in recs], t.score(recs), strict=True))
        for it in ra["items"]:
            assert abs(it["raw"]["click"] - mine[it["item_id"]]) < 1e-5, (it, mine[it["item_id"]])
        # each head corrected with its own keep rate: like-negatives include kept clicks, so r_like > r_click
        rates = ra["keep_rates"] if "keep_rates" in ra else a.get("/stats")[1]["keep_rates"]
        assert 0.4 < rates["click"] < 0.6 and rates["like"] > rates["click"] + 0.05, rates
        for it in ra["items"]:
            for head in ("click", "like"):
                want = float(correct_sampled(np.array([it["raw"][head]]), rates[head])[0])
                assert abs(it["scores"][head] - want) < 1e-9
        assert [it["scores"]["click"] for it in ra["items"]] == sorted(
            (it["scores"]["click"] for it in ra["items"]), reverse=True)

        # ---- TTL: phase-1 item rows were evicted by training and are gone from both replicas ------------
        p1_fids = np.array([fid(6, i) for i in p1])
        p2_fids = np.array([fid(6, i) for i in p2])
        held1, held2 = t.ps.rows("item_id", p1_fids)[1], t.ps.rows("item_id", p2_fids)[1]
        assert (~held1).sum() >= 30, "training evicted too few phase-1 item rows for this test to mean much"
        for r in (a, b):
            st, rows1 = r.post("/rows", {"slot": "item_id", "fids": p1_fids.tolist()})
            st2, rows2 = r.post("/rows", {"slot": "item_id", "fids": p2_fids.tolist()})
            assert st == st2 == 200
            # every phase-1 item was served with a row once; exactly those training still holds are left
            assert rows1["found"] == held1.tolist(), f"{r.name}: rows evicted by training still served"
            # (how many phase-2 rows survive depends on which phase-3 windows closed before the stop: 15-40)
            assert rows2["found"] == held2.tolist() and sum(rows2["found"]) >= 10, r.name

        # ---- the served request became examples with exactly the served features -----------------------
        mine_log = FeatureLog(served["request_id"], 7, req["ts_ms"], req["user"], req["user_dense"])
        for c in req["candidates"]:
            mine_log.add_item(c["item_id"], c["sparse"], c["dense"])
        want = {it["item_id"]: it for it in enc.record(mine_log)["items"]}
        user_fids = enc.record(mine_log)["user_sparse"]
        got = [e for e in examples if e["request_id"] == served["request_id"]]
        ids = {e["item_id"] for e in got}  # the shown items only (unclicked ones are sampled negatives)
        assert shown[1] in ids and ids <= set(shown) and len(got) == len(ids)
        for e in got:
            assert e["sparse"] == {**user_fids, **want[e["item_id"]]["sparse"]}, e
            assert e["labels"]["click"] == int(e["item_id"] == shown[1])
        assert len({e["request_id"] for e in examples} & set(rids)) > 100  # traffic served by B joined too

        # ---- metrics -------------------------------------------------------------------------------------
        status, text = http("GET", a.url + "/metrics")
        for name in ("streamrec_serve_request_seconds_bucket", "streamrec_serve_requests_total",
                     "streamrec_serve_model_version", "streamrec_serve_rows", "streamrec_serve_delta_lag_messages",
                     "streamrec_serve_freshness_seconds_bucket"):
            assert name in text, name
        st = a.get("/stats")[1]
        assert st["freshness_samples"] >= 2 and 0 <= st["freshness_p50_ms"] <= st["freshness_p99_ms"] < 60_000
        print(f"\nreplica freshness p50 {st['freshness_p50_ms']:.0f} ms, p99 {st['freshness_p99_ms']:.0f} ms "
              f"({st['freshness_samples']} deltas)")
    finally:
        client.flush(10)
        for p in (b, a, trainer, joiner):
            p.kill(signal.SIGTERM)
        time.sleep(0.1)
        for p in (b, a, trainer, joiner):
            p.kill()
