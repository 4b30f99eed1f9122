"""The collectives one training step needs, over torch.distributed (gloo on CPU).

Every call is a collective: all ranks make the same calls in the same order (the loop in
``trainer.distributed.loop`` keeps them in lockstep). Variable-size exchanges use
``all_to_all_single`` with split sizes that every rank already knows from the control rows it
received in the step's first exchange, so no extra round trip is spent on sizes. World size 1
short-cuts every call.

A rank waiting on a collective spins (``sched_yield``) for up to ``spin_s`` before it blocks. On
a VM an idle virtual CPU halts and its hypervisor may hand the physical core to another guest until
the next wake-up: the lockstep makes every rank idle ~1 ms a step, and blocking there cost 2 ranks
~6 % of their examples/s (0.99-1.13x in 12 rounds), with more steal (bench_distributed). Past
``spin_s`` (an idle stream, a snapshot on another rank) it blocks, so a job waiting for data does
not burn its cores.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from trainer.config import DistributedConfig


class Comm:
    """This rank's view of the process group."""

    def __init__(self, rank: int, world: int, spin_s: float = 0.0) -> None:
        self.rank = rank
        self.world = world
        self.spin_s = spin_s
        self.stats: dict[str, list[float]] = {}  # kind -> [calls, seconds, bytes sent] (cost model, bench)

    def _count(self, kind: str, t0: float, nbytes: int, calls: int = 1) -> None:
        s = self.stats.setdefault(kind, [0, 0.0, 0])
        s[0] += calls
        s[1] += time.perf_counter() - t0
        s[2] += nbytes

    @classmethod
    def from_env(cls, cfg: DistributedConfig) -> Comm:
        """Join the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) as ``cfg`` says."""
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(f"--distributed outside torchrun: {', '.join(missing)} not set "
                               "(launch with `streamrec train --distributed --nproc N` or torchrun)")
        if not dist.is_initialized():
            dist.init_process_group(cfg.backend, timeout=timedelta(seconds=cfg.timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), cfg.spin_wait_ms / 1e3)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def exchange(self, send: np.ndarray, send_counts: np.ndarray, recv_counts: np.ndarray,
                 kind: str = "all_to_all") -> np.ndarray:
        """All-to-all of rows: ``send_counts[r]`` rows to rank r (send is ordered by rank). ``kind``
        names it in ``stats``: time, including the wait for the slowest rank, and bytes sent."""
        return self.exchange_async(send, send_counts, recv_counts, kind).wait()

    def exchange_async(self, send: np.ndarray, send_counts: np.ndarray, recv_counts: np.ndarray,
                       kind: str = "all_to_all") -> Pending:
        """``exchange`` run by gloo's own thread: the caller works on until ``Pending.wait()``."""
        if self.world == 1:
            return Pending(send, None, self, None, kind)
        recv = torch.empty((int(recv_counts.sum()), *send.shape[1:]), dtype=torch.from_numpy(send[:0]).dtype)
        src = torch.from_numpy(np.ascontiguousarray(send))
        t0 = time.perf_counter()
        work = dist.all_to_all_single(recv, src, output_split_sizes=recv_counts.tolist(),
                                      input_split_sizes=send_counts.tolist(), async_op=True)
        self._count(kind, t0, send.nbytes)
        return Pending(recv, work, self, src, kind)

    def all_objects(self, obj: object) -> list[object]:
        """Every rank's (small, picklable) object."""
        if self.world == 1:
            return [obj]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


class Pending:
    """An exchange in flight; ``wait()`` returns what ``Comm.exchange`` would have (time waited is counted)."""

    def __init__(self, recv: Any, work: Any, comm: Comm, send: Any, kind: str) -> None:
        self._recv, self._work, self._comm, self._send, self._kind = recv, work, comm, send, kind

    def wait(self) -> np.ndarray:
        if self._work is None:
            return self._recv
        t0 = time.perf_counter()
        until = t0 + self._comm.spin_s
        while not self._work.is_completed() and time.perf_counter() < until:
            os.sched_yield()  # stay on this core (see the module's docstring), let gloo's threads run
        self._work.wait()
        self._comm._count(self._kind, t0, 0, calls=0)
        self._send = None  # gloo is done with the send buffer
        return self._recv.numpy()
