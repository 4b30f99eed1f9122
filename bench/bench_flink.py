"""PyFlink join job vs a pure-JVM Flink SQL interval join: input events/s per core, same run.

Both read the same two topics (a MovieLens replay; Kafka timestamps = event times, keys =
request_id) on one Apache Kafka broker, each in a fresh local mini cluster (its own JVM, same
Flink install, parallelism, RocksDB state backend and checkpointing), bounded by the recorded end
offsets, both writing with the same delivery guarantee (``flink.delivery_guarantee``, default
exactly-once: Kafka transactions committed with each checkpoint). The baseline is a Table
API/SQL interval join (`a.ts BETWEEN f.ts AND f.ts + window`) on the raw bytes: key =
request_id (raw key format), event time = the Kafka timestamp, output to Kafka. The PyFlink job
decodes Avro, runs joiner.core, encodes examples and dead letters.

Measured per job: wall time from RUNNING to FINISHED (start-up excluded) and the CPU seconds
the job's JVM (Python runs inside it in thread mode) used meanwhile; per core = events / CPU s.
``--cluster``: the same two jobs at parallelism 2 with `flink run` on a local standalone cluster,
once with one TaskManager of two slots and once with two TaskManagers of one slot each (CPU =
the TaskManagers' processes).
Usage: python bench/bench_flink.py [--limit RATINGS] [--cluster] (goal: ratio >= 0.5)
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.broker import Broker  # noqa: E402
from streamrec.config import Settings, load_config  # noqa: E402

PARTITIONS = 2


def overrides(bootstrap: str, tag: str, tmp: Path) -> list[str]:
    return [
        f'kafka.bootstrap="{bootstrap}"',
        f'kafka.topics.features="b{tag}-features"',
        f'kafka.topics.actions="b{tag}-actions"',
        f'kafka.topics.examples="b{tag}-examples"',
        f'kafka.topics.dead_letter="b{tag}-dead"',
        f'flink.checkpoint_dir="{tmp / "checkpoints"}"',
        f'flink.run_dir="{tmp / "flink"}"',
        'flink.jvm_heap="768m"',
    ]


def feed(s: Settings, limit: int, offsets_path: Path) -> int:
    from jobs.flink.feed import produce_recorded, write_offsets
    from jobs.replay import encode_events
    from replay.events import build_events
    from streamrec.kafka import create_topics

    t = s.kafka.topics
    create_topics(s.kafka, {t.features: PARTITIONS, t.actions: PARTITIONS, t.examples: PARTITIONS,
                                      t.dead_letter: 1, t.examples + "-sql": PARTITIONS})
    s.replay.limit = limit
    events = build_events(s.replay, "movielens")
    topic = {"features": t.features, "actions": t.actions}
    msgs = [(topic[e.role], e.key.encode(), v, None, e.log.ts_ms)
            for e, v in zip(events, encode_events(events, s.features), strict=True)]
    write_offsets(offsets_path, produce_recorded(s.kafka, msgs))
    return len(events)


def interval(ms: int) -> str:
    """Milliseconds as a SQL interval literal (SECOND alone is limited to 2 digits)."""
    d, rest = divmod(ms, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}' DAY TO SECOND(3)"


# ---- child: one job in this process's own JVM ----------------------------------------------------
def jvm_cpu_seconds() -> float:
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def pids_cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            c = psutil.Process(pid).cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.NoSuchProcess:
            pass
    return total


class CpuSampler(threading.Thread):
    """CPU seconds (of this process's JVM children, or of ``pids``) sampled every 50 ms, to read the
    CPU used inside any past time window; ``clock`` stamps the samples."""

    def __init__(self, pids: list[int] | None = None, clock=time.monotonic) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.running = True
        self.pids = pids
        self.clock = clock

    def run(self) -> None:
        while self.running:
            cpu = jvm_cpu_seconds() if self.pids is None else pids_cpu_seconds(self.pids)
            self.samples.append((self.clock(), cpu))
            time.sleep(0.05)

    def at(self, t: float) -> float:
        i = bisect.bisect_left([s[0] for s in self.samples], t)
        return self.samples[min(i, len(self.samples) - 1)][1]


def measure(submit) -> dict:  # noqa: ANN001 - returns a PyFlink JobClient
    """Job net runtime (job start to end as Flink reports it: the client's and the local cluster's
    start-up excluded) and the JVM CPU seconds used within it."""
    sampler = CpuSampler()
    sampler.start()
    client = submit()
    runtime_s = client.get_job_execution_result().result().get_net_runtime() / 1000
    t_end = time.monotonic()
    time.sleep(0.1)
    sampler.running = False
    sampler.join()
    return {"seconds": runtime_s, "cpu": sampler.at(t_end) - sampler.at(t_end - runtime_s)}


def run_python_job(s: Settings, ov: list[str], offsets: Path) -> dict:
    from jobs.flink_join import build, local_environment, parse_args

    local_environment(s)
    args = parse_args([*(a for o in ov for a in ("--set", o)), "--stop-offsets", str(offsets)])
    env = build(s, args)
    return measure(lambda: env.execute_async("bench-python-join"))


def run_sql_job(s: Settings, offsets: Path) -> dict:
    from jobs.flink_join import local_environment

    local_environment(s)
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.flink.env import flink_configuration
    from jobs.flink.kafka import load_stop_offsets

    conf = Configuration()
    for k, v in flink_configuration(s.flink).items():
        conf.set_string(k, v)
    conf.set_string("parallelism.default", str(s.flink.parallelism))
    conf.set_string("execution.checkpointing.interval", f"{s.flink.checkpoint_interval_ms} ms")
    tenv = TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf)
                                   .build())
    stops = load_stop_offsets(offsets)
    t, bs = s.kafka.topics, s.kafka.bootstrap
    lateness, window = s.joiner.allowed_lateness_ms, s.joiner.window_ms

    def source(name: str, topic: str) -> None:
        ends = ";".join(f"partition:{p},offset:{o}" for p, o in sorted(stops[topic].items()))
        tenv.execute_sql(f"""
            CREATE TABLE {name} (
              rid STRING, v BYTES,
              ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
              WATERMARK FOR ts AS ts - {interval(lateness)}
            ) WITH (
              'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{bs}',
              'properties.group.id' = 'bench-sql', 'scan.startup.mode' = 'earliest-offset',
              'scan.bounded.mode' = 'specific-offsets', 'scan.bounded.specific-offsets' = '{ends}',
              'key.format' = 'raw', 'key.fields' = 'rid', 'value.format' = 'raw',
              'value.fields-include' = 'EXCEPT_KEY'
            )""")

    source("features", t.features)
    source("actions", t.actions)
    guarantee = s.flink.delivery_guarantee
    txn = (f", 'sink.transactional-id-prefix' = 'bench-sql-{os.getpid()}', "
           f"'properties.transaction.timeout.ms' = '{s.flink.transaction_timeout_ms}'"
           if guarantee == "exactly-once" else "")
    tenv.execute_sql(f"""
        CREATE TABLE joined (rid STRING, v BYTES) WITH (
          'connector' = 'kafka', 'topic' = '{t.examples}-sql', 'properties.bootstrap.servers' = '{bs}',
          'key.format' = 'raw', 'key.fields' = 'rid', 'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY', 'sink.delivery-guarantee' = '{guarantee}'{txn}
        )""")
    insert = f"""
        INSERT INTO joined
        SELECT f.rid, a.v FROM features f, actions a
        WHERE f.rid = a.rid AND a.ts BETWEEN f.ts AND f.ts + {interval(window)}"""
    return measure(lambda: tenv.execute_sql(insert).get_job_client())


def child(which: str, ov: list[str], offsets: Path) -> None:
    # No cyclic GC here: a py4j object collected on the sampler thread makes py4j open a second
    # connection, so later planner calls may run on another Java thread, where Calcite's
    # thread-local metadata provider is unset (NullPointerException: metadataHandlerProvider).
    gc.disable()
    s = load_config(None, ov)
    out = run_python_job(s, ov, offsets) if which == "python" else run_sql_job(s, offsets)
    print("RESULT " + json.dumps(out), flush=True)


# ---- parent ---------------------------------------------------------------------------------------
def run_child(which: str, ov: list[str], offsets: Path, log: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--offsets", str(offsets),
           *(a for o in ov for a in ("--set", o))]
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, cwd=ROOT, timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"{which} job failed ({r.returncode}):\n{r.stdout[-2000:]}\n{log.read_text()[:6000]}")
    return json.loads(lines[-1][7:])


def run_on_cluster(s: Settings, ov: list[str], offsets: Path, tmp: Path, taskmanagers: int,
                   which: str) -> dict:
    """One job with `flink run` (this script's child mode) on a fresh standalone cluster of
    ``taskmanagers`` TaskManagers sharing two slots; runtime from the JobManager, CPU of the
    TaskManagers within it."""
    from deploy import flink

    cfg = s.flink.model_copy(update={"taskmanagers": taskmanagers, "task_slots": 2 // taskmanagers,
                                     "parallelism": 2, "run_dir": tmp / f"cluster-{taskmanagers}-{which}"})
    cluster = flink.up(cfg)
    try:
        sampler = CpuSampler(cluster.all_pids("taskmanager"), clock=time.time)
        sampler.start()
        r = flink.submit(cfg, ["--child", which, "--offsets", str(offsets), *(a for o in ov for a in ("--set", o))],
                         timeout=900, script=Path(__file__).resolve())
        sampler.running = False
        sampler.join()
        if r.returncode != 0:
            raise RuntimeError(f"{which} job failed on the cluster:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        [job] = cluster.rest("/jobs/overview")["jobs"]
        start, end = job["start-time"] / 1000, job["end-time"] / 1000
        return {"seconds": end - start, "cpu": sampler.at(end) - sampler.at(start)}
    finally:
        flink.down(cfg)


def cluster_runs(s: Settings, ov: list[str], n: int, tmp: Path, only: str | None) -> None:
    """Both jobs on one TaskManager, then on two; each run writes to topics of its own."""
    from streamrec.kafka import create_topics

    res: dict[tuple[int, str], dict] = {}
    t = s.kafka.topics
    for tms in (1, 2):
        ex, dead = f"{t.examples}-tm{tms}", f"{t.dead_letter}-tm{tms}"
        run_ov = [*ov, f'kafka.topics.examples="{ex}"', f'kafka.topics.dead_letter="{dead}"']
        create_topics(s.kafka, {ex: PARTITIONS, f"{ex}-sql": PARTITIONS, dead: 1})
        for which in [only] if only else ["sql", "python"]:
            r = res[(tms, which)] = run_on_cluster(s, run_ov, tmp / "offsets.json", tmp, tms, which)
            r["rate"], r["per_core"] = n / r["seconds"], n / r["cpu"]
            print(f"{which:6s} on {tms} TaskManager(s), parallelism 2: {r['rate']:>9,.0f} events/s wall "
                  f"({r['seconds']:.1f} s), {r['per_core']:>9,.0f} events/s per core ({r['cpu']:.1f} CPU s)",
                  flush=True)
    if only:
        return
    for tms in (1, 2):
        ratio = res[(tms, "python")]["per_core"] / res[(tms, "sql")]["per_core"]
        print(f"ratio pyflink/sql per core on {tms} TaskManager(s): {ratio:.2f}x (goal >= 0.5x)")
    print(f"pyflink on 2 TaskManagers vs 1: {res[(2, 'python')]['rate'] / res[(1, 'python')]['rate']:.2f}x events/s "
          f"wall, {res[(2, 'python')]['per_core'] / res[(1, 'python')]['per_core']:.2f}x per core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=8000, help="MovieLens ratings (each ~12 events)")
    ap.add_argument("--only", choices=["python", "sql"], help="run one job (no ratio; for tuning)")
    ap.add_argument("--cluster", action="store_true",
                    help="run on local standalone clusters: one TaskManager vs two, parallelism 2")
    ap.add_argument("--set-job", action="append", default=[],
                    help="extra override for both jobs, e.g. flink.bundle_size=5000")
    ap.add_argument("--child", choices=["python", "sql"], help=argparse.SUPPRESS)
    ap.add_argument("--offsets", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.overrides, a.offsets)
        return
    from schemas.codec import default_codec
    from streamrec.kafka import count_messages, drain

    with tempfile.TemporaryDirectory(prefix="bench-flink-") as tmp_, Broker(Path(tmp_)) as broker:
        tmp = Path(tmp_)
        ov = overrides(broker.bootstrap, os.urandom(4).hex(), tmp) + a.set_job
        s = load_config(None, ov)
        n = feed(s, a.limit, tmp / "offsets.json")
        print(f"input: {n:,} events (MovieLens replay, limit {a.limit}) on {PARTITIONS} partitions/topic, "
              f"parallelism {s.flink.parallelism}, {s.flink.state_backend} state, "
              f"checkpoints every {s.flink.checkpoint_interval_ms} ms, {s.flink.delivery_guarantee} sinks, "
              f"{os.cpu_count()} cores", flush=True)
        if a.cluster:
            cluster_runs(s, ov, n, tmp, a.only)
            return
        res = {}
        for which in [a.only] if a.only else ["sql", "python"]:
            res[which] = r = run_child(which, ov, tmp / "offsets.json", tmp / f"{which}.log")
            r["rate"] = n / r["seconds"]
            r["per_core"] = n / r["cpu"]
        t = s.kafka.topics
        outs = count_messages(s.kafka, [t.examples + "-sql"], idle_s=1.0)
        ids = [default_codec().decode(m.value())[1]["example_id"] for m in drain(s.kafka, [t.examples], idle_s=1.0)]
        outs[t.examples] = f"{len(set(ids)):,} distinct of {len(ids):,}"
        names = {"sql": "flink-sql interval join (JVM)", "python": "pyflink join job (joiner.core)"}
        for which, r in res.items():
            out = f"{outs[t.examples + '-sql']:,}" if which == "sql" else outs[t.examples]
            print(f"{names[which]:32s} {r['rate']:>9,.0f} events/s wall ({r['seconds']:.1f} s), "
                  f"{r['per_core']:>9,.0f} events/s per core ({r['cpu']:.1f} CPU s), output records: {out}")
        if a.only:
            return
        ratio = res["python"]["per_core"] / res["sql"]["per_core"]
        print(f"ratio pyflink/sql per core: {ratio:.2f}x (goal >= 0.5x) "
              f"[wall: {res['python']['rate'] / res['sql']['rate']:.2f}x]")


if __name__ == "__main__":
    main()
