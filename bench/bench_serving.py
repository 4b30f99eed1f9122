"""Benchmark: scoring over HTTP, `streamrec serve`'s app vs a plain FastAPI + PyTorch EmbeddingBag endpoint.

Same run, same machine (2 cores: the server under test in one process, the load generator in
this one), same DeepFM (class and dense weights), same requests: 100 candidates each, MovieLens
features as raw values (user: 5 slots + a dense feature; item: id, 1-2 genres, year, a dense
feature; the user x genre cross).

- ours: ``serving.app`` over a replica whose serving PS holds a row for every value (collisionless
  tables), each request encoded by the client's encoder, scored, corrected per head, ranked, and
  its FeatureLog written to a real local Kafka broker and acknowledged before the answer
  (``serving.log_ack``), as in production.
- baseline: ``bench/serving_baseline.py``: the model over fixed ``nn.EmbeddingBag`` tables (values
  hashed into buckets), no logging.

Measured: saturating throughput (closed loop, ``--conns`` keep-alive connections, ``--seconds``),
then an open loop at half of each server's own saturating rate: latency from each request's
scheduled send time (no coordinated omission), p50 / p99. Goals: throughput >= 1.0x the baseline;
p99 <= 20 ms at half the saturating rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USERS, ITEMS, GENRES, CANDIDATES = 6000, 4000, 18, 100


def user(u: int) -> dict[str, Any]:
    return {"user_id": u, "age": str(u % 7), "gender": "MF"[u % 2], "occupation": str(u % 20), "zip": f"{u % 500:03d}"}


def genres(i: int) -> list[str]:
    return [f"g{i % GENRES}"] + ([f"g{(i * 7) % GENRES}"] if i % 3 == 0 and (i * 7) % GENRES != i % GENRES else [])


def item(i: int) -> dict[str, Any]:
    return {"item_id": i, "sparse": {"item_id": i, "genre": genres(i), "year": str(1950 + i % 50)},
            "dense": {"item_popularity": float(i % 97)}}


def bodies(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = int(rng.integers(USERS))
        out.append(json.dumps({"user_id": u, "user": user(u), "user_dense": {"user_activity": float(u % 13)},
                               "candidates": [item(int(i)) for i in rng.choice(ITEMS, CANDIDATES, replace=False)]}
                              ).encode())
    return out


# ---- the servers (each in its own process) ---------------------------------------------------------
def model_and_spec(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    import torch

    from streamrec.config import load_config
    from trainer.ps import make_model, model_shape

    s = load_config(None, [])
    torch.manual_seed(seed)
    m = make_model(s.trainer, s.features)
    m.eval()
    return m, s.features, model_shape(s.trainer, s.features)


def fill_rows(ps: Any, spec: Any, seed: int) -> None:
    """A row for every value of every slot (and every user x genre pair)."""
    rng = np.random.default_rng(seed)
    values = {"user_id": range(USERS), "age": [str(a) for a in range(7)], "gender": ["M", "F"],
              "occupation": [str(o) for o in range(20)], "zip": [f"{z:03d}" for z in range(500)],
              "item_id": range(ITEMS), "genre": [f"g{g}" for g in range(GENRES)],
              "year": [str(1950 + y) for y in range(50)]}
    fids = {slot: np.array([spec.fid(slot, v) for v in vals], np.int64) for slot, vals in values.items()}
    fids["user_genre"] = np.array([spec.cross_fid("user_genre", int(u), int(g)) for u in fids["user_id"]
                                   for g in fids["genre"]], np.int64)
    for slot, ids in fids.items():
        rows = rng.normal(0, 0.05, (len(ids), spec.settings(slot).dim)).astype(np.float32)
        ps.push_slot(spec.number(slot), ids, rows)


def serve_ours(port: int, bootstrap: str, topic: str, seed: int, log_ack: bool) -> None:
    import torch
    import uvicorn

    from serving.app import create_app
    from serving.replica import Replica
    from serving.run import tune_gc
    from streamrec.applog import Client
    from streamrec.config import load_config

    torch.set_num_threads(1)
    s = load_config(None, [f'kafka.bootstrap="{bootstrap}"', f'kafka.topics.features="{topic}"',
                           "client.delivery_reports=\"all\"", f"serving.log_ack={str(log_ack).lower()}"])
    model, spec, shape = model_and_spec(seed)
    r = Replica(s)
    fill_rows(r.ps, spec, seed)
    r.ps.push_dense({k: v.clone() for k, v in model.state_dict().items()},
                    {"spec": spec.model_dump(mode="json"), "model": shape, "keep_rates": [0.5, 0.7],
                     "dense_version": 1})
    r.ready = True
    client = Client(s, **{"linger.ms": s.serving.log_linger_ms})
    app = create_app(s, r, client)
    tune_gc()  # as `streamrec serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools",
                access_log=False)


def serve_baseline(port: int, seed: int) -> None:
    import torch
    import uvicorn

    from bench.serving_baseline import make_app

    torch.set_num_threads(1)
    model, spec, _ = model_and_spec(seed)
    uvicorn.run(make_app(spec, model, 100_000, seed), host="127.0.0.1", port=port, log_level="warning",
                loop="uvloop", http="httptools", access_log=False)


# ---- the load generator -------------------------------------------------------------------------------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, body: bytes) -> int:
        self.w.write(b"POST /score HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        await self.r.readexactly(n)
        return status


async def saturate(port: int, reqs: list[bytes], conns: int, seconds: float) -> float:
    pool = [await Conn.open(port) for _ in range(conns)]
    done = [0]
    stop = time.perf_counter() + seconds

    async def loop(c: Conn, k: int) -> None:
        while time.perf_counter() < stop:
            assert await c.post(reqs[k % len(reqs)]) == 200
            k += conns
            done[0] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c, i) for i, c in enumerate(pool)))
    return done[0] / (time.perf_counter() - t0)


async def open_loop(port: int, reqs: list[bytes], rate: float, seconds: float) -> np.ndarray:
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(16):
        idle.put_nowait(await Conn.open(port))
    lat: list[float] = []
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.05

    async def one(k: int) -> None:
        due = t0 + k / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        c = idle.get_nowait() if not idle.empty() else await Conn.open(port)
        assert await c.post(reqs[k % len(reqs)]) == 200
        lat.append(time.perf_counter() - due)
        idle.put_nowait(c)

    await asyncio.gather(*(one(k) for k in range(n)))
    return np.array(lat) * 1000


def wait_up(port: int, proc: subprocess.Popen, body: bytes) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if asyncio.run(_probe(port, body)) == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server did not come up")


async def _probe(port: int, body: bytes) -> int:
    c = await Conn.open(port)
    try:
        return await c.post(body)
    finally:
        c.w.close()


def measure(name: str, port: int, reqs: list[bytes], a: argparse.Namespace) -> dict[str, float]:
    asyncio.run(saturate(port, reqs, a.conns, 2.0))  # warm-up (caches, allocator)
    rps = asyncio.run(saturate(port, reqs, a.conns, a.seconds))
    lat = asyncio.run(open_loop(port, reqs, rps / 2, a.seconds))
    out = {"rps": rps, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
    print(f"{name:9s} saturating {rps:7.1f} req/s ({rps * CANDIDATES:,.0f} candidates/s); at {rps / 2:.0f} req/s: "
          f"p50 {out['p50']:.1f} ms, p99 {out['p99']:.1f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", default="bench-features", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each server is reported")
    ap.add_argument("--log-ack", choices=["true", "false"], default="true",
                    help="ours answers once the FeatureLog is acknowledged (serving.log_ack)")
    a = ap.parse_args()
    if a.serve == "ours":
        return serve_ours(a.port, a.bootstrap, a.topic, a.seed, a.log_ack == "true")
    if a.serve == "baseline":
        return serve_baseline(a.port, a.seed)

    from deploy.broker import Broker
    from deploy.procs import free_port
    from streamrec.config import KafkaConfig
    from streamrec.kafka import count_messages, create_topics

    reqs = bodies(200, a.seed)
    me = [sys.executable, str(Path(__file__).resolve()), "--seed", str(a.seed)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp, Broker(run_dir=Path(tmp)) as broker:
        create_topics(KafkaConfig(bootstrap=broker.bootstrap), {a.topic: 2})
        print(f"{CANDIDATES} candidates per request; server: 1 process, 1 torch thread; load: {a.conns} connections",
              flush=True)
        pb, po = free_port(), free_port()
        procs = {"baseline": (subprocess.Popen(me + ["--serve", "baseline", "--port", str(pb)], cwd=ROOT, env=env), pb),
                 "streamrec": (subprocess.Popen(me + ["--serve", "ours", "--port", str(po), "--bootstrap",
                                                     broker.bootstrap, "--topic", a.topic, "--log-ack", a.log_ack],
                                                    cwd=ROOT, env=env), po)}
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "streamrec": []}
        try:
            for proc, port in procs.values():
                wait_up(port, proc, reqs[0])
            for _ in range(a.rounds):  # alternating, so both see the same moments of a shared machine
                for name, (_, port) in procs.items():
                    runs[name].append(measure(name, port, reqs, a))
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(30)
        base = {"rps": max(r["rps"] for r in runs["baseline"]), "p99": min(r["p99"] for r in runs["baseline"])}
        ours = {"rps": max(r["rps"] for r in runs["streamrec"]), "p99": min(r["p99"] for r in runs["streamrec"])}
        logged = count_messages(KafkaConfig(bootstrap=broker.bootstrap), [a.topic], idle_s=1.0)[a.topic]
    print(f"best of {a.rounds} rounds: baseline {base['rps']:.1f} req/s, p99 {base['p99']:.1f} ms; streamrec "
          f"{ours['rps']:.1f} req/s, p99 {ours['p99']:.1f} ms")
    print(f"throughput ratio streamrec/baseline: {ours['rps'] / base['rps']:.2f}x (goal >= 1.0x: "
          f"{'met' if ours['rps'] >= base['rps'] else 'NOT met'}); streamrec p99 at half load {ours['p99']:.1f} ms "
          f"(goal <= 20 ms: {'met' if ours['p99'] <= 20 else 'NOT met'}); FeatureLogs on Kafka: {logged:,}")


if __name__ == "__main__":
    main()
