"""The sharded training PS: this rank's shard of every slot's table, and the exchange with the others.

Each rank's ``EmbeddingStore`` holds the FIDs it owns (``routing.owner_of``) of every slot, with
the slot's frequency filter, TTL and in-table optimizer, exactly as one process holds all of them.
A step is three exchanges, in lockstep on every rank, of which two are sync points:

1. ids: each rank sends (fid, occurrences, slot) of its batch's unique FIDs to their owners, and
   with them its control row to every rank (one all-to-all instead of a control all-gather
   followed by the requests);
2. rows: each owner looks them up (``train=True``: every occurrence from every rank counts in the
   filter, as if the ranks' batches were one) and sends the rows back, in gloo's thread while the
   loop reads and builds its next batch (``start_pull``), so this one rarely waits;
3. gradients: after backward, each rank sends the gradient of each row to its owner, which
   applies them all in one ``apply_gradients`` (duplicates from several ranks are summed first,
   then one optimizer step per id: the single-process semantics of the union of the batches).
   The same all-to-all carries the dense gradient to every rank, the step's scores to rank 0 and
   the next step's ids (1.): the loop reads and builds its next batch before it, so exchange 3 of
   one step is exchange 1 of the next (``finish_step``). Only the first step and the one after a
   snapshot open on their own (``open_step``). Each sync point costs a round of wake-ups on every
   rank (~0.25 ms on loopback, a round trip across hosts), so two instead of three per step.

The dense part is data-parallel: every rank sums the ranks' dense gradients in rank order and
applies the same optimizer step to its identical copy. (Gathering the dense gradient costs
world x its size per rank, against ~2x for a ring allreduce; for the small dense part of DeepFM
and a few ranks one collective fewer per step wins: see the cost model in the README.)

Why synchronous: gloo's collectives are blocking and matched across ranks, so a step is a
barrier anyway; in exchange the result equals one process training on the ranks' batches
together, which is what the AUC test checks. Rows are exchanged padded to the widest slot.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas.spec import FeatureSpec
from trainer.config import TrainerConfig
from trainer.distributed import routing
from trainer.distributed.comm import Comm, Pending
from trainer.ps import TrainingPS

EVAL_COLS = 5  # a scored example for rank 0: ts_ms, item_id, label, score, weight (floats as int64 bits)


class ShardedPS(TrainingPS):
    """A ``TrainingPS`` whose ``store`` is this rank's shard; pulls and pushes go through ``comm``."""

    def __init__(self, cfg: TrainerConfig, spec: FeatureSpec, comm: Comm, columns: tuple[int, int, int]) -> None:
        """``columns``: where a control row holds the FIDs asked of rank 0 (those of rank r follow),
        the rank's examples and its event time (s)."""
        super().__init__(cfg, spec)
        self.comm = comm
        self.columns = columns
        self.dims = [self.store.dim(s) for s in spec.model_slots]
        self.width = max(self.dims)
        self.dense_size = sum(p.numel() for p in self.params)
        self.eval_rows = np.zeros((0, EVAL_COLS), np.int64)  # after a step, on rank 0: every rank's scored rows
        self._req: routing.Requests | None = None
        self._recv_counts = np.zeros(comm.world, np.int64)
        self._examples = np.zeros(comm.world, np.int64)
        self._served = np.zeros((0, 3), np.int64)
        self._grads = np.zeros((0, self.width), np.float32)
        self._eval = np.zeros((0, EVAL_COLS), np.int64)
        self._now = 0
        self._cap = cfg.batch_size  # FID requests per owner carried by the first exchange (see open_step)
        self._dense: np.ndarray | None = None  # staged by push_dense, sent by finish_step
        self._rows: Pending | None = None  # this step's rows in flight (start_pull)

    def open_step(self, row: np.ndarray, req: routing.Requests) -> np.ndarray:
        """A step's first exchange on its own (the job's first step, the one after a snapshot): this
        rank's control ``row`` to every rank and to each owner the (fid, occurrences, slot) it asks of
        it; returns every rank's control row (int64[world, k]). Other steps open inside the previous
        step's ``finish_step``."""
        one = np.ones(self.comm.world, np.int64)
        return self._opened(self.comm.exchange(self._opening(row, req), one, one, "ids"), req)

    def _opening(self, row: np.ndarray, req: routing.Requests) -> np.ndarray:
        """int64[world, k + 3 cap]: the control row and, for each owner, up to ``cap`` requests.

        The requests travel in a fixed ``cap`` per owner (so no exchange of sizes goes first); the
        rare ones beyond it follow in a second exchange whose sizes the control rows give. ``cap``
        follows the last step's largest request, the same on every rank (it is computed from the
        control rows they all received)."""
        w, k, cap = self.comm.world, len(row), self._cap
        bounds = np.cumsum([0, *req.counts])
        send = np.zeros((w, k + 3 * cap), np.int64)
        send[:, :k] = row
        for r in range(w):
            part = req.table[bounds[r]:bounds[r] + min(int(req.counts[r]), cap)]
            send[r, k:k + part.size] = part.reshape(-1)
        return send

    def _opened(self, got: np.ndarray, req: routing.Requests) -> np.ndarray:
        """Take in every rank's opening (int64, ``world`` equal blocks): the control rows, returned,
        and the FIDs asked of this rank, which ``pull_batch`` serves."""
        comm, w, (counts_at, examples_at, now_at) = self.comm, self.comm.world, self.columns
        got = got.reshape(w, -1)
        cap = self._cap
        k = got.shape[1] - 3 * cap
        bounds = np.cumsum([0, *req.counts])
        ctrl = got[:, :k].copy()
        asked = ctrl[:, counts_at:counts_at + w]  # [sender, owner]
        mine = asked[:, comm.rank]
        served = [got[r, k:k + 3 * min(int(mine[r]), cap)].reshape(-1, 3) for r in range(w)]
        over = np.maximum(asked - cap, 0)
        if over.any():  # every rank sees the same matrix: all take part in the second exchange
            rest = np.concatenate([req.table[bounds[r] + cap:bounds[r + 1]] for r in range(w)
                                   if req.counts[r] > cap] or [np.zeros((0, 3), np.int64)])
            extra = comm.exchange(rest, over[comm.rank], over[:, comm.rank], "ids")
            at = np.cumsum([0, *over[:, comm.rank]])
            served = [np.concatenate([served[r], extra[at[r]:at[r + 1]]]) for r in range(w)]
        self._cap = max(64, -(-int(asked.max() * 5 // 4) // 64) * 64)
        self._req, self._recv_counts, self._now = req, mine.astype(np.int64), int(ctrl[:, now_at].max())
        self._examples = ctrl[:, examples_at].astype(np.int64)
        self._served = np.concatenate(served)
        return ctrl

    def start_pull(self, slots: list[str]) -> None:
        """Look up the rows asked of this shard and send them back in gloo's thread, so the loop can
        read and build its next batch while they travel (``pull_batch`` collects them)."""
        rows = np.zeros((len(self._served), self.width), np.float32)
        for s, pos in routing.by_slot(self._served[:, 2]):
            ids, cnt = self._served[pos, 0], self._served[pos, 1]
            emb = self.store.lookup(np.repeat(ids, cnt), slot=slots[s], train=True, now=self._now)
            rows[pos, :self.dims[s]] = emb[np.cumsum(cnt) - cnt]
        self._rows = self.comm.exchange_async(rows, self._recv_counts, self._req.counts, "rows")

    def pull_batch(self, slots: list[str], bags: list[np.ndarray], now_s: int
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        req = self._req
        assert req is not None, "open_step() before a step"
        if self._rows is None:
            self.start_pull(slots)
        back, self._rows = self._rows.wait(), None
        mine = routing.split_slots(routing.unsort(back, req.order), req.uniq, self.dims)
        return list(zip(req.uniq, mine, req.inv, strict=True))

    def stage_eval(self, rows: np.ndarray) -> None:
        """This rank's scored rows of the step, for rank 0 (sent with the gradients)."""
        self._eval = rows

    def push_batch(self, slots: list[str], uniqs: list[np.ndarray], grads: list[np.ndarray], now_s: int) -> None:
        """Stage the rows' gradients in send order; ``push_dense`` sends them with the dense ones."""
        flat = np.zeros((sum(len(u) for u in uniqs), self.width), np.float32)
        start = 0
        for g, d in zip(grads, self.dims, strict=True):
            flat[start:start + len(g), :d] = g
            start += len(g)
        self._grads = flat[self._req.order]
        self._slots = slots

    def push_dense(self, grads: list[torch.Tensor | None]) -> None:
        """Stage the dense gradient; ``finish_step`` sends it with the rows' gradients and the scores."""
        full = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)]
        self._dense = torch.cat([g.reshape(-1) for g in full]).numpy()

    def finish_step(self, row: np.ndarray | None = None, req: routing.Requests | None = None) -> np.ndarray | None:
        """The step's last exchange, one all-to-all of bytes: to each owner the gradients of its rows,
        to every rank this rank's dense gradient, to rank 0 the scored rows; and, given the next
        step's ``row`` and ``req``, that step's opening too, so a step costs two sync points, not three.
        Then each owner applies its rows' gradients and every rank sums the dense gradients in rank
        order (the same sum, bit for bit, everywhere) and takes the same optimizer step. Returns the
        next step's control rows when it opened one.

        The next step's rows are looked up after this (``pull_batch``), so they carry these gradients:
        the result is the same as exchanging them apart."""
        if self._dense is None:  # no step ran (no rank had examples)
            return None if row is None else self.open_step(row, req)
        comm, w, opening = self.comm, self.comm.world, None if row is None else self._opening(row, req)
        row_b, dense_b, eval_b = self.width * 4, self._dense.nbytes, EVAL_COLS * 8
        open_b = 0 if opening is None else opening.shape[1] * 8
        parts, send_counts = [], np.zeros(w, np.int64)
        bounds = np.cumsum([0, *self._req.counts])
        for r in range(w):
            chunk = [self._grads[bounds[r]:bounds[r + 1]].view(np.uint8).reshape(-1), self._dense.view(np.uint8)]
            if r == 0:
                chunk.append(np.ascontiguousarray(self._eval).view(np.uint8).reshape(-1))
            if opening is not None:
                chunk.append(opening[r].view(np.uint8))
            parts += chunk
            send_counts[r] = sum(len(c) for c in chunk)
        recv_counts = self._recv_counts * row_b + dense_b + open_b
        if comm.rank == 0:
            recv_counts = recv_counts + self._examples * eval_b
        got = comm.exchange(np.concatenate(parts), send_counts, recv_counts, "gradients")
        sparse, dense_sum, evals, opened, at = [], np.zeros(dense_b // 4, np.float32), [], [], 0
        for r in range(w):
            k = int(self._recv_counts[r]) * row_b
            sparse.append(got[at:at + k].view(np.float32).reshape(-1, self.width))
            dense_sum += got[at + k:at + k + dense_b].view(np.float32)
            at += k + dense_b
            if comm.rank == 0:
                e = int(self._examples[r]) * eval_b
                evals.append(got[at:at + e].view(np.int64).reshape(-1, EVAL_COLS))
                at += e
            opened.append(got[at:at + open_b])
            at += open_b
        recv = np.concatenate(sparse)
        for s, pos in routing.by_slot(self._served[:, 2]):
            self.store.apply_gradients(self._served[pos, 0], recv[pos, :self.dims[s]], slot=self._slots[s],
                                       now=self._now)
        self.eval_rows = np.concatenate(evals) if evals else self.eval_rows[:0]
        out, start = [], 0
        for p in self.params:
            out.append(torch.from_numpy(dense_sum[start:start + p.numel()]).view_as(p))
            start += p.numel()
        self._req, self._dense = None, None
        super().push_dense(out)
        return None if opening is None else self._opened(np.concatenate(opened).view(np.int64), req)
