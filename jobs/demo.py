"""`streamrec demo`: the whole loop on one command, then a report.

The local stack comes up; the MovieLens replay streams into the feature and action logs while
the joiner, the archive dumper and the online trainer run together, each in its own process,
on topics of this run alone. A stage is stopped (cleanly, by SIGTERM) once its input is
complete and it has consumed all of it, so the demo ends when the replay is drained. The
report accounts for every count from the replay to the trainer, against a reference join of
the same events computed in memory while the replay streams (``jobs.demo_reference``).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from deploy import stack
from jobs.demo_reference import ReferenceJoin
from jobs.demo_report import build_report, write_report
from jobs.demo_stages import read_json, stage_main
from jobs.join_runner import GC_THRESHOLDS
from jobs.replay import ReplaySummary, run_replay
from streamrec.config import Settings
from streamrec.secrets import secret_env
from streamrec.signals import stop_on_signals

console = Console(stderr=True)


@dataclass
class Stage:
    name: str
    status_path: Path
    proc: mp.Process | None = None
    stop_sent: bool = False
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.status.get("done")) and self.proc is not None and not self.proc.is_alive()

    def refresh(self) -> None:
        self.status = read_json(self.status_path) or self.status

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive() and not self.stop_sent:
            self.proc.terminate()  # SIGTERM: the stage finishes its checkpoint and exits
            self.stop_sent = True


def prepare(s: Settings, tag: str) -> Path:
    """Point every stage at this run's own topics and directories."""
    run = Path(s.stack.run_dir).resolve() / "demo" / tag
    run.mkdir(parents=True, exist_ok=True)
    t = s.kafka.topics
    t.features, t.actions = f"demo-{tag}-features", f"demo-{tag}-actions"
    t.examples, t.dead_letter = f"demo-{tag}-examples", f"demo-{tag}-dead-letter"
    t.params = f"demo-{tag}-params"
    s.joiner.state_dir = run / "joiner"
    if s.archive.target == "local":
        s.archive.root = run / "archive"
    else:
        s.archive.hdfs_root = f"/streamrec/demo-{tag}"
    s.trainer.snapshot_dir = run / "snapshots"
    s.trainer.metrics_csv = run / "auc.csv"
    s.trainer.plot = run / "auc.png"
    s.trainer.consumer_group = f"demo-{tag}-trainer"
    return run


def write_stop_offsets(s: Settings, ends: dict[str, dict[int, int]], path: Path) -> None:
    """The replay's end offsets for every input partition (0 where nothing was written)."""
    from jobs.flink.feed import write_offsets
    from streamrec.kafka import admin, partitions_of

    client = admin(s.kafka)
    t = s.kafka.topics
    write_offsets(path, {topic: {p: ends.get(topic, {}).get(p, 0) for p in partitions_of(client, topic)}
                         for topic in (t.features, t.actions)})


def _progress_table(replay: dict[str, Any], stages: dict[str, Stage]) -> Table:
    t = Table("stage", "consumed", "produced / state", "rate /s", title="streamrec demo", min_width=72)
    sent = replay.get("summary")
    elapsed = time.monotonic() - replay["t0"]
    n = sent.messages if sent else 0
    t.add_row("replay", "", f"{n:,} messages" + (" (done)" if replay.get("done") else ""),
              f"{n / max(elapsed, 1e-9):,.0f}")
    for st in stages.values():
        s = st.status
        consumed = s.get("consumed", 0)
        rate = consumed / max(s.get("elapsed_s", 0.0), 1e-9)
        if st.name == "join":
            c = s.get("counts", {})
            what = (f"{c.get('joined', 0):,} joined, {c.get('negatives_dropped', 0):,} neg dropped, "
                    f"{c.get('late', 0):,} late, {sum(s.get('dead_reasons', {}).values()):,} dead")
        elif st.name == "archive":
            what = f"{s.get('archived', 0):,} archived, {s.get('files', 0)} files"
        else:
            auc = s.get("last_window_auc")
            what = f"{s.get('examples', 0):,} trained" + (f", window AUC {auc:.3f}" if auc else "")
        state = " (done)" if s.get("done") else (" (stopping)" if st.stop_sent else "")
        if s.get("error"):
            state = f" [red]{s['error']}[/red]"
        t.add_row(st.name, f"{consumed:,}", what + state, f"{rate:,.0f}")
    return t


def run_demo(s: Settings, down: bool = False, hdfs: bool = False, flink: bool = False,
             timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run the loop; with ``flink`` the join runs on a PyFlink mini cluster once the replay is in
    (a bounded job, stopped by the replay's recorded end offsets) instead of the embedded runner."""
    tag = time.strftime("%Y%m%d-%H%M%S")
    if hdfs:
        from deploy import hdfs as local_hdfs

        s.archive.target = "hdfs"
        s.archive.hdfs_url = local_hdfs.up(Path(s.stack.run_dir) / "hdfs").url
    run = prepare(s, tag)
    stack.up(s)  # creates this run's topics too
    ctx = mp.get_context("spawn")
    settings_json = s.model_dump_json()  # secrets redacted: they travel apart, through a pipe (not argv)
    secrets = secret_env(s)
    stages = {name: Stage(name, run / f"{name}.json") for name in ("join", "archive", "train", "serve")}
    join_runtime = "flink" if flink else "join"

    def start(st: Stage, runtime: str) -> None:
        st.proc = ctx.Process(target=stage_main, args=(runtime, settings_json, str(st.status_path), secrets),
                              name=f"streamrec-{runtime}")
        st.proc.start()

    for st in stages.values():
        if st.name != "join" or not flink:
            start(st, st.name)

    replay: dict[str, Any] = {"t0": time.monotonic(), "summary": ReplaySummary()}
    ends: dict[str, dict[int, int]] | None = {} if flink else None

    def do_replay() -> None:
        # The reference join holds every live request, without reference cycles: with the default
        # thresholds the cyclic GC rescans it all the time (full MovieLens: replay 57 s instead of 35 s).
        old_gc = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            # the expected outcome: the same events joined in memory as they are sent
            ref = ReferenceJoin(s.joiner, s.features)
            run_replay(s, "movielens", quiet=True, read_back=False, summary=replay["summary"], ends=ends,
                       observe=ref.observe)
            if flink:
                write_stop_offsets(s, ends, run / "stop-offsets.json")
                start(stages["join"], join_runtime)
            replay["reference"] = ref.result()
        except BaseException as e:  # surfaced by the main loop
            replay["error"] = e
        finally:
            gc.set_threshold(*old_gc)
            replay["done"] = True

    producer_thread = threading.Thread(target=do_replay, name="replay", daemon=True)
    producer_thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        with stop_on_signals(_interrupt), \
                Live(_progress_table(replay, stages), console=console, refresh_per_second=2) as live:
            while not all(st.done for st in stages.values()):
                time.sleep(0.5)
                for st in stages.values():
                    st.refresh()
                    if st.proc is not None and not st.proc.is_alive() and not st.status.get("done"):
                        st.status = {**st.status, "done": True, "error": f"exited with code {st.proc.exitcode}"}
                _advance_stops(replay, stages)
                live.update(_progress_table(replay, stages))
                failed = [st for st in stages.values() if st.status.get("error")]
                if failed or replay.get("error"):
                    raise RuntimeError(f"demo stage failed: {[(st.name, st.status['error']) for st in failed]}"
                                       f"{' replay: ' + repr(replay['error']) if replay.get('error') else ''}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"demo did not finish in {timeout_s:.0f}s")
    finally:
        for st in stages.values():
            st.stop()
        for st in stages.values():
            if st.proc is not None:
                st.proc.join(60)
                if st.proc.is_alive():
                    st.proc.kill()
        if down:
            stack.down(s)
            if hdfs:
                local_hdfs.down(Path(s.stack.run_dir) / "hdfs")
    report = build_report(s, replay["summary"], {n: st.status for n, st in stages.items()},
                          time.monotonic() - replay["t0"], join_runtime, replay.get("reference"))
    write_report(report, run)
    return report


def _interrupt() -> None:
    """SIGTERM as Ctrl-C: the ``finally`` of ``run_demo`` stops every stage cleanly (by default
    SIGTERM would end this process alone and leave its stage processes running)."""
    raise KeyboardInterrupt


def _advance_stops(replay: dict[str, Any], stages: dict[str, Stage]) -> None:
    """Stop each stage once its input is complete and fully consumed."""
    join, archive, train, serve = stages["join"], stages["archive"], stages["train"], stages["serve"]
    if replay.get("done") and join.status.get("consumed", 0) >= replay["summary"].messages:
        join.stop()
    if join.done:
        produced = join.status.get("examples", 0)
        for st in (archive, train):
            if st.status.get("consumed", 0) >= produced:
                st.stop()
    if train.done and serve.status.get("version", -1) >= train.status.get("params_version", 0):
        serve.stop()  # the replica applied the trainer's last delta
