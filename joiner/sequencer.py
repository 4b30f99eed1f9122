"""Input in rounds that depend only on the input's offsets, not on how it was fetched.

Why: the join decides by event times, but "was the window already closed when this action
came?" depends on the watermark at the moment the action is processed, and the watermark
depends on how far every input partition has been read. If messages are processed in the
order and chunks the consumer happens to deliver them, two runs over the same input (a clean
run and a replay after a crash) can close a window before or after a late action and write two
different examples under one id.

So the runner processes rounds: each round takes the next ``round_size`` messages of every
input partition, in a fixed partition order, and the watermark moves (and due timers fire)
only between rounds. A round is ready once every partition has ``round_size`` messages waiting
or has nothing more for now (end of partition); with a backlog, and in any replay, rounds
therefore start at the same offsets every time, and so do checkpoints, which are taken only
between rounds. At the live head of a stream a partition that has nothing more cuts a round
short: the rounds then depend on timing, as any live watermark does.

Rounds count messages, so the feature-log partitions (a message per request) run ahead in
event time of the action partitions (a message per shown item): harmless, as the watermark is
the slowest partition's, and actions then find their feature logs. The runner pauses a
partition whose messages pile up waiting for the others.

No Kafka here: messages are anything with ``topic()``, ``partition()`` and ``offset()``.
"""

from __future__ import annotations

from typing import Any

Partition = tuple[str, int]


class Sequencer:
    def __init__(self, partitions: list[Partition], round_size: int):
        """``partitions`` in the order a round takes them: feature logs first, so that a round's
        actions find the feature logs of the same round (they are not early, and an impression of
        a known request is a no-op the engine recognises in its batch fast path)."""
        if round_size < 1:
            raise ValueError("round_size must be >= 1")
        self.order = list(dict.fromkeys(partitions))  # the fixed order of a round
        self.round_size = round_size
        self._queues: dict[Partition, list[Any]] = {tp: [] for tp in self.order}
        self._heads: dict[Partition, int] = dict.fromkeys(self.order, 0)
        self._ended: set[Partition] = set()  # at the end of the partition for now
        self._eof: set[Partition] = set()  # of those, the ones the consumer confirmed (an empty fetch)

    def add(self, msgs: list[Any]) -> None:
        """Messages as consumed (no errors), in each partition's offset order."""
        queues = self._queues
        ended = self._ended
        # a partition at its end that got messages is no longer at its end; found by its queue
        # growing (a few partitions), not by a second pass over the messages
        before = {tp: len(queues[tp]) for tp in ended} if ended else None
        for m in msgs:
            queues[(m.topic(), m.partition())].append(m)
        if before:
            for tp, n in before.items():
                if len(queues[tp]) > n:
                    ended.discard(tp)
                    self._eof.discard(tp)

    def end_of(self, tp: Partition, confirmed: bool = True) -> None:
        """The consumer reached the end of ``tp``: a round need not wait for more of it.

        ``confirmed=False``: only its newest message reached the high watermark its fetch carried,
        which at the live head says nothing of what is on its way (a producer retrying after a
        broker restart, say). That ends a round, but only a confirmed end (``drained``) lets the
        partition stop holding the watermark back: else the watermark would jump past what the
        slow partition is about to bring, and make it late."""
        self._ended.add(tp)
        if confirmed:
            self._eof.add(tp)

    def waiting(self, tp: Partition) -> int:
        return len(self._queues[tp]) - self._heads[tp]

    def ready(self) -> bool:
        k = self.round_size
        return any(self.waiting(tp) for tp in self.order) and all(
            self.waiting(tp) >= k or tp in self._ended for tp in self.order)

    def take(self) -> list[Any] | None:
        """The next round (up to ``round_size`` of each partition, in order), or None if none is ready."""
        if not self.ready():
            return None
        out: list[Any] = []
        k = self.round_size
        for tp in self.order:
            q, h = self._queues[tp], self._heads[tp]
            out += q[h:h + k]
            h += min(k, len(q) - h)
            if h > 4096 and h * 2 > len(q):  # drop what was taken, now and then
                del q[:h]
                h = 0
            self._heads[tp] = h
        return out

    def newest_offsets(self) -> dict[Partition, int]:
        """The offset of each partition's newest message added (partitions with none waiting left out)."""
        return {tp: q[-1].offset() for tp, q in self._queues.items() if len(q) > self._heads[tp]}

    def drained(self, tp: Partition) -> bool:
        """At its confirmed end and nothing of it waits: the partition does not hold the watermark back."""
        return tp in self._eof and not self.waiting(tp)
