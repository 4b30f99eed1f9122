"""The `streamrec train` modes: batch over an archive range, online on the examples topic.

A batch run ends with a snapshot, and an online run starts from the newest snapshot, so
``train --batch A..B`` followed by ``train --online`` continues from the same state (the dedup
memory travels in the snapshot too, so examples seen in the archive are dropped online).
``--restore`` makes any run start from the newest snapshot and replay from its stream positions.
Online runs publish every sync as a delta to the params topic (``serving.publish``), where serving
replicas read them; each snapshot records the offset after the last delta.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from trainer.loop import Trainer

log = logging.getLogger(__name__)


def train(settings: Any, batch: str | None = None, online: bool = False, restore: bool = False,
          stop_when_idle_s: float | None = None, max_examples: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run the requested modes in order (batch, then online) on one trainer; return the summary."""
    from trainer.sources import ArchiveSource, KafkaSource, parse_range

    if not batch and not online:
        raise ValueError("nothing to do: give --batch FROM..TO and/or --online")
    cfg = settings.trainer
    if cfg.metrics_port is not None:
        from streamrec.metrics import serve_metrics

        serve_metrics(cfg.metrics_port, settings.metrics.host)
    publisher = None
    mode = settings.serving.publish
    if mode == "always" or (mode == "online" and online):
        from serving.transport import DeltaPublisher

        publisher = DeltaPublisher(settings)  # syncs go to kafka.topics.params, for serving replicas
    trainer = Trainer(cfg, settings.features, serving=publisher)
    _stop_on_sigterm(trainer)
    if restore or (online and not batch):
        got = trainer.restore()
        if got is None and restore:
            raise FileNotFoundError(f"--restore: no snapshot under {cfg.snapshot_dir}")
        if got is not None:
            log.info("continuing from snapshot %s", got)
    bar = _progress() if progress else nullcontext(None)
    with bar as prog:
        def tick(n: int, task: Any = None) -> None:
            if prog is not None and task is not None:
                prog.advance(task, n)

        if batch:
            from sinks.reader import open_archive

            start, end = parse_range(batch)
            reader = open_archive(settings)
            src = ArchiveSource(reader, start, end)
            task = prog.add_task(f"batch {batch}", total=reader.count(start, end)) if prog else None
            trainer.run(src, max_examples=max_examples, progress=lambda n: tick(n, task))
            trainer.snapshot()
        if online:
            src = KafkaSource(settings.kafka, settings.kafka.topics.examples, cfg.consumer_group, cfg.online_start)
            trainer.on_snapshot = lambda _p: src.commit()
            task = prog.add_task("online", total=None) if prog else None
            try:
                trainer.run(src, stop_when_idle_s=stop_when_idle_s, max_examples=max_examples,
                            progress=lambda n: tick(n, task))
                trainer.snapshot()
            finally:
                src.close()
    if publisher is not None:
        publisher.close()
    return trainer.finish()


def _stop_on_sigterm(trainer: Trainer) -> None:
    """SIGTERM ends the run like idleness does: after the batch in hand, a final sync and snapshot."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: setattr(trainer, "stop_requested", True))


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)
