"""`streamrec demo`: the loop on one command — stack, MovieLens replay, and every stage that exists.

Stages run one after another on the same topics so each one's throughput is measured alone; the
report says what each stage counted.
"""

from __future__ import annotations

from rich.console import Console

from deploy import stack
from jobs.replay import run_replay
from streamrec.config import Settings

console = Console(stderr=True)


def run_demo(s: Settings, down: bool = False) -> None:
    stack.up(s)
    try:
        run_replay(s, "movielens")
    finally:
        if down:
            stack.down(s)
