"""Pinning ranks to cores (``trainer.distributed.launch``): which ranks are pinned, and to which core.

Each case runs in a fresh interpreter: pinning changes the affinity of every thread of the process,
which must not leak into the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys, threading, time
sys.path.insert(0, {root!r})
from trainer.distributed import launch
stop = threading.Event()
t = threading.Thread(target=stop.wait)  # a thread started before pinning (like gloo's) is pinned too
t.start()
core = launch.pin_local_rank() if {env!r} else launch.pin_to_core({local}, {ranks})
tids = [int(x) for x in os.listdir("/proc/self/task")]
print(json.dumps({{"core": core, "affinity": sorted({{c for x in tids for c in os.sched_getaffinity(x)}})}}))
stop.set()
"""


def probe(local: int, ranks: int, env: dict[str, str] | None = None) -> dict:
    code = PROBE.format(root=str(ROOT), env=env is not None, local=local, ranks=ranks)
    full = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-c", code], env={**full, **(env or {})}, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_pin_to_core_pins_every_thread_to_its_local_ranks_core():
    cores = sorted(os.sched_getaffinity(0))
    last = len(cores) - 1
    got = probe(last, len(cores))
    assert got == {"core": cores[last], "affinity": [cores[last]]}
    unpinned = probe(0, len(cores) + 1)  # more local ranks than cores: left to the scheduler
    assert unpinned == {"core": None, "affinity": cores}


def test_only_ranks_sharing_a_host_are_pinned():
    cores = sorted(os.sched_getaffinity(0))
    assert probe(0, 0, {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}) == {"core": None, "affinity": cores}
    assert probe(0, 0, {}) == {"core": None, "affinity": cores}  # not under torchrun
    if len(cores) >= 2:
        got = probe(0, 0, {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
        assert got == {"core": cores[1], "affinity": [cores[1]]}
