"""The runner's GC regime: join state frozen out of the cyclic GC, swept in full now and then."""

from __future__ import annotations

import gc
import weakref

from jobs.join_runner import StateGC


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic GC frees it


def test_state_alive_at_a_checkpoint_is_frozen_and_the_sweep_frees_frozen_cycles() -> None:
    sgc = StateGC(sweep_s=3600)
    sgc.start()
    try:
        before = gc.get_freeze_count()
        state = [Node() for _ in range(100)]  # stands for join state alive at the checkpoint
        garbage = Node()
        ref = weakref.ref(garbage)
        sgc.after_checkpoint()
        assert gc.get_freeze_count() >= before + 100  # out of every later scan
        del garbage
        gc.collect()
        assert ref() is not None and sgc.sweeps == 0  # frozen: not collected until a sweep
        sgc.sweep_s = 0
        sgc.after_checkpoint()
        assert ref() is None and sgc.sweeps == 1  # the sweep unfroze and collected it
        assert all(n.me is n for n in state) and gc.get_freeze_count() >= 100  # live state frozen again
    finally:
        sgc.stop()
    assert gc.get_freeze_count() == 0
