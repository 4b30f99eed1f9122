"""The demo's stages, each run in a process of its own (the machine has few cores; the GIL one).

A stage writes its live counters to a JSON status file twice a second, so the demo can show
progress and decide when a stage has caught up with its input; SIGTERM asks it to finish
cleanly (final checkpoint / commit / snapshot), after which it writes its final status.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamrec.config import Settings

# A stage that hears nothing for this long stops by itself; normally the demo stops it first.
SAFETY_IDLE_S = 300.0


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _Reporter:
    """Writes ``status()`` to the status file every ``period`` seconds until stopped."""

    def __init__(self, path: Path, status: Callable[[], dict[str, Any]], period: float = 0.5):
        self.path, self.status, self.period = path, status, period
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.write(done=False)

    def write(self, done: bool, **extra: Any) -> None:
        try:
            data = self.status()
        except Exception as e:  # a racy read of live counters: skip this tick
            data = {"status_error": repr(e)}
        write_json(self.path, {**data, **extra, "done": done, "elapsed_s": time.monotonic() - self.started})

    def finish(self, **extra: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.write(done=True, **extra)


class _StopSignal:
    """SIGTERM/SIGINT handler installed before a stage builds anything: a stop that comes early
    is remembered and handed to the stage's stop function once it exists."""

    def __init__(self) -> None:
        self.received = False
        self.fn: Callable[[], None] | None = None
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, *_: object) -> None:
        self.received = True
        if self.fn is not None:
            self.fn()

    def __call__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        if self.received:
            fn()


def run_join(s: Settings, status_path: Path, on_stop: _StopSignal) -> None:
    from jobs.join_runner import JoinRunner

    runner = JoinRunner(s, from_start=True)
    e = runner.engine

    def status() -> dict[str, Any]:
        return {"consumed": e.counts.get("events", 0), "counts": dict(e.counts),
                "dead_reasons": dict(e.dead_reasons), "lag": runner.lag}

    rep = _Reporter(status_path, status)
    on_stop(lambda: setattr(runner, "stop", True))
    # the demo stops the joiner once it has consumed the whole replay: the input is complete
    stats = runner.run(stop_when_idle=SAFETY_IDLE_S, drain=True)
    rep.finish(produced=stats.examples + stats.dead_letters, examples=stats.examples,
               run_seconds=stats.seconds, cpu_seconds=stats.cpu_seconds)


def run_archive(s: Settings, status_path: Path, on_stop: _StopSignal) -> None:
    """Archive until stopped, then read the committed ``example_id`` column back from the files
    (here, where the filesystem is at hand: the demo's HDFS is gone by report time), so the
    report compares what the archive really holds, not the archiver's counters."""
    from jobs.demo_reference import ids_digest
    from sinks.archive import Archiver
    from sinks.reader import ArchiveReader

    arch = Archiver(s)
    rep = _Reporter(status_path, lambda: {"consumed": arch.stats.consumed, **asdict(arch.stats)})
    on_stop(arch.stop)
    t0 = time.monotonic()
    stats = arch.run(idle_s=SAFETY_IDLE_S)
    run_s = time.monotonic() - t0
    ids = ArchiveReader(arch.fs, s.features).example_ids()
    distinct = set(ids)
    read_back = {"rows": len(ids), "distinct": len(distinct), "duplicates": len(ids) - len(distinct),
                 "ids_sha1": ids_digest(distinct)}
    rep.finish(run_seconds=run_s, **{k: v for k, v in asdict(stats).items() if k != "consumed"},
               description=arch.fs.description, read_back=read_back)


def run_train(s: Settings, status_path: Path, on_stop: _StopSignal) -> None:
    from serving.transport import DeltaPublisher
    from trainer.loop import Trainer
    from trainer.sources import KafkaSource

    cfg = s.trainer
    publisher = DeltaPublisher(s)  # every sync goes to the params topic, where the serve stage reads it
    trainer = Trainer(cfg, s.features, serving=publisher)
    src = KafkaSource(s.kafka, s.kafka.topics.examples, cfg.consumer_group, "earliest")
    trainer.on_snapshot = lambda _p: src.commit()

    def status() -> dict[str, Any]:
        ev = trainer.evaluator
        auc = ev.rows[-1].get("auc") if ev.rows else None
        return {"consumed": trainer.examples + trainer.dedup.dropped, "examples": trainer.examples,
                "last_window_auc": auc, "rows": trainer.ps.num_rows()}

    rep = _Reporter(status_path, status)
    on_stop(lambda: setattr(trainer, "stop_requested", True))
    t0 = time.monotonic()
    try:
        trainer.run(src, stop_when_idle_s=SAFETY_IDLE_S)
        run_s = time.monotonic() - t0
        trainer.snapshot()
    finally:
        src.close()
        publisher.close()
    summary = trainer.finish()
    rep.finish(summary=summary, run_seconds=run_s, freshness=trainer.freshness,
               params_version=publisher.version - 1)


def run_serve(s: Settings, status_path: Path, on_stop: _StopSignal) -> None:
    """A serving replica (no HTTP: the delta loop is what the demo measures): bootstraps like
    `streamrec serve`, applies the trainer's deltas and measures freshness where it is applied."""
    from serving.replica import Replica

    r = Replica(s)
    stop = threading.Event()
    on_stop(stop.set)
    rep = _Reporter(status_path, lambda: {"version": r.version, "rows": r.ps.num_rows(), "ready": r.ready})
    r.start()
    while not stop.wait(0.5):
        if r.error:
            raise RuntimeError(r.error)
    r.stop()
    rep.finish(stats=r.stats(), freshness=[list(x) for x in r.freshness])


def run_flink(s: Settings, status_path: Path, on_stop: _StopSignal) -> None:
    """The join on a PyFlink mini cluster, bounded by the replay's recorded end offsets.

    Flink keeps its counters as Flink metrics, out of reach after a mini cluster ends, so the
    stage counts what the job wrote: examples by kind and dead letters by reason.
    """
    import subprocess
    import sys

    from streamrec.config import to_overrides
    from streamrec.secrets import child_env

    stop_offsets = status_path.parent / "stop-offsets.json"
    consumed = sum(sum(p.values()) for p in read_json(stop_offsets).values())
    rep = _Reporter(status_path, lambda: {"consumed": 0, "state": "running on Flink"})
    # the job runs as it would on its own (`python -m jobs.flink_join`): its JVM and logs stay out of the demo
    cmd = [sys.executable, "-m", "jobs.flink_join", "--stop-offsets", str(stop_offsets)]
    for o in to_overrides(s):
        cmd += ["--set", o]
    t0 = time.monotonic()
    with open(status_path.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                                env=child_env(s))
        on_stop(proc.terminate)
        if proc.wait() != 0:
            raise RuntimeError(f"the Flink job exited with {proc.returncode}; see {status_path.with_suffix('.log')}")
    run_s = time.monotonic() - t0
    counts, dead_reasons, raw = count_join_output(s)
    rep.finish(consumed=consumed, counts=counts, dead_reasons=dead_reasons, examples=raw, run_seconds=run_s)


def count_join_output(s: Settings) -> tuple[dict[str, int], dict[str, int], int]:
    """Join counters recomputed from the output topics (distinct examples by id)."""
    from collections import Counter

    from schemas.codec import default_codec
    from streamrec.kafka import drain

    codec = default_codec()
    t = s.kafka.topics
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    raw = 0
    for m in drain(s.kafka, [t.examples, t.dead_letter], idle_s=2.0):
        name, rec = codec.decode(m.value())
        if name == "DeadLetter":
            dead[rec["reason"]] += 1
            continue
        raw += 1
        if rec["example_id"] in seen:
            continue
        seen.add(rec["example_id"])
        counts["joined"] += 1
        if rec["late"]:
            counts["late"] += 1
        elif any(rec["labels"].values()):
            counts["positives"] += 1
        else:
            counts["negatives_kept"] += 1
    return dict(counts), dict(dead), raw


STAGES: dict[str, Callable[[Settings, Path, _StopSignal], None]] = {
    "join": run_join,
    "archive": run_archive,
    "train": run_train,
    "serve": run_serve,
    "flink": run_flink,
}


def stage_main(name: str, settings_json: str, status_path: str, secrets: dict[str, str]) -> None:
    """Entry point of a stage process (multiprocessing target: picklable arguments only, sent through a
    pipe, never on the command line). ``secrets``: the variables ``secret_env`` made, which this
    process's children inherit too."""
    import logging

    from streamrec.config import settings_from_json

    on_stop = _StopSignal()
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(levelname)s %(name)s: %(message)s")
    path = Path(status_path)
    os.environ.update(secrets)
    try:
        STAGES[name](settings_from_json(settings_json), path, on_stop)
    except BaseException as e:
        write_json(path, {**read_json(path), "done": True, "error": f"{type(e).__name__}: {e}"})
        raise
