"""``Comm``'s wait on a collective: two real gloo ranks (a file store, no ports), rank 1 late.

A waiting rank spins for up to ``spin_s`` and then blocks: what it receives is the same either way,
and past the cap it spends no CPU (a job waiting for data must not burn its cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RANK = """
import json, sys, time
import numpy as np, torch.distributed as dist
sys.path.insert(0, {root!r})
from trainer.distributed.comm import Comm
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://{store}", rank=rank, world_size=2)
comm = Comm(rank, 2, spin_s={spin})
one = np.ones(2, np.int64)
comm.exchange(np.zeros((2, 1), np.int64), one, one)  # connected
if rank == 1:
    time.sleep({late})
c0, t0 = time.process_time(), time.perf_counter()
got = comm.exchange(np.array([[10 * rank], [10 * rank + 1]], np.int64), one, one, "late")
out = {{"got": got.ravel().tolist(), "cpu": time.process_time() - c0, "wall": time.perf_counter() - t0,
       "waited": comm.stats["late"][1]}}
print(json.dumps(out), flush=True)
dist.destroy_process_group()
"""


def exchange_with_late_rank(tmp_path: Path, spin_s: float, late_s: float) -> list[dict]:
    tmp_path.mkdir(exist_ok=True)
    code = RANK.format(root=str(ROOT), store=tmp_path / "store", spin=spin_s, late=late_s)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.parametrize("spin_s", [0.0, 0.02, 5.0])
def test_a_rank_receives_the_same_rows_whether_it_spins_or_blocks(tmp_path, spin_s):
    r0, r1 = exchange_with_late_rank(tmp_path, spin_s, 0.05)
    assert r0["got"] == [0, 10] and r1["got"] == [1, 11]  # row r of each rank's send goes to rank r
    assert r0["wall"] >= 0.04 and r0["waited"] >= 0.04  # it did wait for rank 1, and stats counted it


def test_a_rank_spins_up_to_its_cap_then_blocks(tmp_path):
    late = 0.4
    capped, _ = exchange_with_late_rank(tmp_path / "capped", 0.02, late)
    spinning, _ = exchange_with_late_rank(tmp_path / "spinning", 5.0, late)
    assert capped["wall"] >= 0.3 and spinning["wall"] >= 0.3
    assert capped["cpu"] < 0.15  # ~20 ms of spinning, then asleep for the rest of the wait
    assert spinning["cpu"] > 0.2  # on its core through the wait (less what the hypervisor stole)
