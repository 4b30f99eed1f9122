"""The `streamrec train` modes: batch over an archive range, online on the examples topic.

A batch run ends with a snapshot, and an online run starts from the newest snapshot, so
``train --batch A..B`` followed by ``train --online`` continues from the same state (the dedup
memory travels in the snapshot too, so examples seen in the archive are dropped online).
``--restore`` makes any run start from the newest snapshot and replay from its stream positions.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from trainer.loop import Trainer

log = logging.getLogger(__name__)


def train(settings: Any, batch: str | None = None, online: bool = False, restore: bool = False,
          stop_when_idle_s: float | None = None, max_examples: int | None = None,
          progress: bool = True, distributed: bool = False) -> dict[str, Any] | None:
    """Run the requested modes in order (batch, then online) on one trainer; return the summary.

    ``distributed``: this process is one rank under torchrun (``trainer.distributed``); the
    summary is the job's, returned on rank 0 (None on the others)."""
    from trainer.sources import ArchiveSource, KafkaSource, parse_range

    if not batch and not online:
        raise ValueError("nothing to do: give --batch FROM..TO and/or --online")
    cfg = settings.trainer
    rank, world = 0, 1
    if distributed:
        import faulthandler
        import signal

        from trainer.distributed.comm import Comm
        from trainer.distributed.launch import restarted
        from trainer.distributed.loop import DistributedTrainer

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <rank>`: where is it waiting?
        comm = Comm.from_env(cfg.distributed.backend, cfg.distributed.timeout_s)
        rank, world = comm.rank, comm.world
        trainer: Trainer = DistributedTrainer(cfg, settings.features, comm)
        # an elastic restart resumes from the newest snapshot of every rank; torchrun counts restarts per
        # host, so the ranks decide together (restore is a collective)
        restore_any = any(comm.all_objects(restarted()))
    else:
        trainer = Trainer(cfg, settings.features)
        restore_any = False
    if cfg.metrics_port is not None:
        from streamrec.metrics import serve_metrics

        serve_metrics(cfg.metrics_port + rank if cfg.metrics_port else 0, settings.metrics.host)
    if restore or restore_any or (online and not batch):
        got = trainer.restore()
        if got is None and restore:
            raise FileNotFoundError(f"--restore: no snapshot under {cfg.snapshot_dir}")
        if got is not None:
            log.info("continuing from snapshot %s", got)
    bar = _progress() if progress and rank == 0 else nullcontext(None)
    with bar as prog:
        def tick(n: int, task: Any = None) -> None:
            if prog is not None and task is not None:
                prog.advance(task, n)

        if batch:
            from sinks.reader import open_archive

            start, end = parse_range(batch)
            reader = open_archive(settings)
            src = ArchiveSource(reader, start, end, rank=rank, world=world)
            task = prog.add_task(f"batch {batch}", total=reader.count(start, end)) if prog else None
            trainer.run(src, max_examples=max_examples, progress=lambda n: tick(n, task))
            trainer.snapshot()
        if online:
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
    summary = trainer.finish()
    if distributed:
        comm.close()
    return summary if rank == 0 else None


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)
