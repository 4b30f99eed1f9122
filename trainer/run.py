"""The `streamrec train` modes: batch over an archive range, online on the examples topic.

A batch run ends with a snapshot, and an online run starts from the newest snapshot, so
``train --batch A..B`` followed by ``train --online`` continues from the same state (the dedup
memory travels in the snapshot too, so examples seen in the archive are dropped online).
``--restore`` makes any run start from the newest snapshot and replay from its stream positions.
SIGTERM or Ctrl-C stops a run cleanly: the batch in flight is trained on, then a final snapshot.
Online runs publish every sync as a delta to the params topic (``serving.publish``), where serving
replicas read them; each snapshot records the offset after the last delta.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from streamrec.errors import ConfigError, MissingInput
from streamrec.signals import stop_on_signals

log = logging.getLogger(__name__)


def train(settings: Any, batch: str | None = None, online: bool = False, restore: bool = False,
          stop_when_idle_s: float | None = None, max_examples: int | None = None,
          progress: bool = True, distributed: bool = False) -> dict[str, Any] | None:
    """Run the requested modes in order (batch, then online) on one trainer; return the summary.

    Fails before training (and before any snapshot) on an empty ``batch`` range: a snapshot of
    nothing would look like a model to the next ``--online`` or serving. ``distributed``: this
    process is one rank under torchrun (``trainer.distributed``); the summary is the job's,
    returned on rank 0 (None on the others)."""
    from trainer.sources import ArchiveSource, KafkaSource, parse_range

    if not batch and not online:
        raise ConfigError("nothing to do: give --batch FROM..TO and/or --online")
    cfg = settings.trainer
    reader = start = end = None
    total = 0
    if batch:
        from sinks.reader import open_archive

        try:
            start, end = parse_range(batch)
            reader = open_archive(settings)
            total = reader.count(start, end)
        except ValueError as e:
            raise ConfigError(str(e) if str(e).startswith("--batch") else f"--batch: {e}") from None
        if total == 0:
            raise MissingInput(f"--batch {batch}: no archived examples in that range under "
                               f"{reader.fs.description} (`streamrec archive-ls` lists the hours)")
    if online:  # before the model is built: a broker that is down or a missing topic fails in seconds
        from streamrec.kafka import check_access, require_topics

        check_access(settings.kafka)
        require_topics(settings.kafka, ["examples"])
    from trainer.loop import Trainer  # torch: seconds to import, so after the checks above

    rank, world, restore_any = 0, 1, False
    if distributed:
        import faulthandler
        import signal

        from trainer.distributed.comm import Comm
        from trainer.distributed.launch import restarted
        from trainer.distributed.loop import DistributedTrainer

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <rank>`: where is it waiting?
        comm = Comm.from_env(cfg.distributed)
        rank, world = comm.rank, comm.world
        publisher = _publisher(settings, online, rank)  # each rank publishes its own shard's rows
        trainer: Trainer = DistributedTrainer(cfg, settings.features, comm, serving=publisher)
        # an elastic restart resumes from the newest snapshot of every rank; torchrun counts restarts per
        # host, so the ranks decide together (restore is a collective)
        restore_any = any(comm.all_objects(restarted()))
    else:
        publisher = _publisher(settings, online)
        trainer = Trainer(cfg, settings.features, serving=publisher)
    if cfg.metrics_port is not None:
        from streamrec.metrics import serve_metrics

        serve_metrics(cfg.metrics_port + rank if cfg.metrics_port else 0, settings.metrics.host)  # a port per rank
    if restore or restore_any or (online and not batch):
        got = trainer.restore()
        if got is None and restore:
            raise MissingInput(f"--restore: no snapshot under trainer.snapshot_dir={cfg.snapshot_dir}")
        if got is not None:
            log.info("continuing from snapshot %s", got)
    bar = _progress() if progress and rank == 0 else nullcontext(None)
    with bar as prog, stop_on_signals(lambda: setattr(trainer, "stop_requested", True)):
        def tick(n: int, task: Any = None) -> None:
            if prog is not None and task is not None:
                prog.advance(task, n)

        if batch:
            src = ArchiveSource(reader, start, end, rank=rank, world=world)
            task = prog.add_task(f"batch {batch}", total=total) if prog else None
            trainer.run(src, max_examples=max_examples, progress=lambda n: tick(n, task))
            trainer.snapshot()
        # ranks take every step together: a stop seen by one rank ends the online run at once, not skips it
        if online and (distributed or not trainer.stop_requested):
            src = KafkaSource(settings.kafka, settings.kafka.topics.examples, cfg.consumer_group, cfg.online_start,
                              rank=rank, world=world)
            trainer.on_snapshot = lambda _p: src.commit()
            task = prog.add_task("online", total=None) if prog else None
            try:
                trainer.run(src, stop_when_idle_s=stop_when_idle_s, max_examples=max_examples,
                            progress=lambda n: tick(n, task))
                trainer.snapshot()
            finally:
                src.close()
    summary = {**trainer.finish(), "stopped_by_signal": trainer.stop_requested}
    if publisher is not None:
        publisher.close()
    if distributed:
        comm.close()
    return summary if rank == 0 else None


def _publisher(settings: Any, online: bool, rank: int | None = None) -> Any:
    """The params-topic publisher when ``serving.publish`` asks for one (else None: an in-process serving PS);
    ``rank``: one per rank of a distributed trainer, each for the rows of its shard."""
    mode = settings.serving.publish
    if not (mode == "always" or (mode == "online" and online)):
        return None
    from serving.transport import DeltaPublisher

    return DeltaPublisher(settings, rank=rank)  # syncs go to kafka.topics.params, for serving replicas


def _progress() -> Any:
    """On stderr: stdout carries the run's JSON summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)
