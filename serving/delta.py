"""Parameter deltas: what the trainer publishes to the params topic and serving replicas apply.

Every sync is one **version** (numbered by the trainer, strictly increasing across restarts: it
starts from the snapshot's). A version is a run of messages, all carrying its number:

- ``rows``   one slot's touched rows (embeddings only), at most ``chunk_rows`` per message;
- ``delete`` one slot's ids that training evicted by TTL;
- ``dense``  the dense weights (``torch.save`` bytes, in parts when large) and what serving needs
  beside them: the feature spec they were trained under, the model's shape, each head's keep rate;
- ``commit`` the version's end: the newest event time and the ingest times (the Kafka timestamps
  of the examples) whose updates it carries, and when it was sent.

Every message is an idempotent overwrite or delete, so applying the same messages again, or
from an earlier offset, yields the same state; in one version deletes come before rows (an id
evicted and then trained again is live). The wire format is a small header (JSON) and raw
little-endian arrays: no codec work per row, so a replica applies a million rows in well under a
second. Pure logic: no Kafka here (``serving.transport`` moves the bytes).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"SRD1"
_LEN = struct.Struct("<I")
KINDS = ("rows", "delete", "dense", "commit")


@dataclass
class Delta:
    """One decoded message (see the module docstring)."""

    kind: str
    version: int
    slot: int = -1
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rows: np.ndarray | None = None
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


def _message(header: dict[str, Any], *parts: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, _LEN.pack(len(h)), h, *parts))


def encode_rows(version: int, slot: int, ids: np.ndarray, rows: np.ndarray, chunk_rows: int) -> list[bytes]:
    """One slot's rows as messages of at most ``chunk_rows`` rows each."""
    ids = np.ascontiguousarray(ids, dtype="<i8")
    rows = np.ascontiguousarray(rows, dtype="<f4")
    dim = rows.shape[1] if rows.ndim == 2 else 0
    out = []
    for a in range(0, len(ids), chunk_rows):
        i, r = ids[a:a + chunk_rows], rows[a:a + chunk_rows]
        out.append(_message({"kind": "rows", "version": version, "slot": int(slot), "n": len(i), "dim": dim},
                            i.tobytes(), r.tobytes()))
    return out


def encode_delete(version: int, slot: int, ids: np.ndarray, chunk_rows: int) -> list[bytes]:
    ids = np.ascontiguousarray(ids, dtype="<i8")
    return [_message({"kind": "delete", "version": version, "slot": int(slot), "n": len(ids[a:a + chunk_rows])},
                     ids[a:a + chunk_rows].tobytes()) for a in range(0, len(ids), chunk_rows)]


def encode_dense(version: int, state: bytes, meta: dict[str, Any], part_bytes: int) -> list[bytes]:
    """The dense weights in ``ceil(len / part_bytes)`` parts; ``meta`` travels in the first."""
    parts = [state[a:a + part_bytes] for a in range(0, len(state), part_bytes)] or [b""]
    return [_message({"kind": "dense", "version": version, "part": k, "parts": len(parts),
                      **({"meta": meta} if k == 0 else {})}, p) for k, p in enumerate(parts)]


def encode_commit(version: int, info: dict[str, Any]) -> bytes:
    return _message({"kind": "commit", "version": version, **info})


def decode(data: bytes) -> Delta:
    """One message -> ``Delta``; ``ValueError`` (saying what is wrong) for anything else."""
    if data[:4] != MAGIC:
        raise ValueError(f"not a parameter delta (magic {data[:4]!r}, expected {MAGIC!r})")
    (hlen,) = _LEN.unpack_from(data, 4)
    body = 8 + hlen
    header = json.loads(data[8:body])
    kind = header.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown delta kind {kind!r}")
    d = Delta(kind, int(header["version"]), int(header.get("slot", -1)), header=header)
    if kind in ("rows", "delete"):
        n = int(header["n"])
        d.ids = np.frombuffer(data, "<i8", n, body)
        if kind == "rows":
            dim = int(header["dim"])
            d.rows = np.frombuffer(data, "<f4", n * dim, body + 8 * n).reshape(n, dim)
    elif kind == "dense":
        d.payload = data[body:]
    return d
