"""``streamrec train --distributed`` outside torchrun: start torchrun on this host with the same command.

torchrun (``torch.distributed.run``) starts ``trainer.distributed.nproc`` ranks, each running the
very command line given (it sees RANK/WORLD_SIZE and trains as one rank), on a c10d rendezvous
of a free loopback port (``--standalone``), and restarts them all up to ``max_restarts`` times
when one dies (each restart resumes from the newest snapshot every rank has). For several hosts,
run torchrun yourself on each (README: "The trainer on several processes or hosts").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from trainer.config import DistributedConfig

# OMP: one intra-op thread per rank (ranks are the parallelism). The TCPStore switch: torchrun shares
# its rendezvous store with the ranks' process group by default, and after an elastic restart the
# new ranks can read the killed rank's gloo address from the previous attempt and wait on it for
# ever (pytorch/pytorch#135712); a store of their own per attempt avoids it.
RANK_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pin_to_core(local_rank: int, local_ranks: int) -> int | None:
    """Pin every thread of this process (gloo's too) to the core of ``local_rank`` of ``local_ranks``
    on this host; the core, or None when the host has fewer usable cores than local ranks.

    Why: a rank blocks and wakes at every collective, and the scheduler then often resumes it on the
    other rank's core, with cold caches, while that rank's threads move the other way; on a host with
    a core per rank, pinning keeps each rank's working set in its core's cache (bench_distributed)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if local_ranks > len(cores) or not 0 <= local_rank < local_ranks:
        return None
    core = cores[local_rank]
    for tid in os.listdir("/proc/self/task"):  # sched_setaffinity(0) would pin the calling thread only
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), {core})
    return core


def pin_local_rank() -> int | None:
    """``pin_to_core`` for a rank of torchrun with other ranks on this host (LOCAL_RANK of
    LOCAL_WORLD_SIZE > 1). A single local rank is not pinned: two separate one-rank jobs on a host
    would both be local rank 0, and both pinned to the first core."""
    local, ranks = os.environ.get("LOCAL_RANK"), os.environ.get("LOCAL_WORLD_SIZE")
    if local is None or ranks is None or int(ranks) < 2:
        return None
    return pin_to_core(int(local), int(ranks))


def restarted() -> bool:
    """True in a rank that torchrun's elastic agent started again after a failure (counted per
    host: ask every rank, see ``trainer.run``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def torchrun_command(cfg: DistributedConfig, module: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.nproc}",
            f"--max-restarts={cfg.max_restarts}", "--monitor-interval=0.5", "-m", module, *argv]


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N``: torchrun's parser rejects it even after the module name (a
    prefix of its own ``--nproc-per-node``), and torchrun was told the number already."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def relaunch(cfg: DistributedConfig, module: str, argv: list[str]) -> int:
    """Run this command again as ``cfg.nproc`` ranks under torchrun; its exit code."""
    return subprocess.call(torchrun_command(cfg, module, without_nproc(argv)), env={**os.environ, **RANK_ENV})
