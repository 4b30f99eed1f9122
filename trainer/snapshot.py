"""Atomic snapshots: write everything into a temporary directory, then rename it into place.

A snapshot directory ``snap-<seq>`` holds the tables and filters (``EmbeddingStore.save``), the
dense weights and the dense optimizer state, the evaluator (so the AUC curve continues), the
dedup memory, and ``state.json`` with the stream positions the state corresponds to. A crash
while writing leaves only a ``.tmp-*`` directory, which is ignored and cleaned up later; the
newest complete ``snap-*`` is what ``--restore`` loads.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from streamrec.files import fsync_dir

PREFIX = "snap-"


def latest(root: Path) -> Path | None:
    if not root.exists():
        return None
    snaps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    return snaps[-1] if snaps else None


def seqs(root: Path) -> list[int]:
    """Sequence numbers of the complete snapshots under ``root``, oldest first."""
    if not root.exists():
        return []
    return sorted(int(p.name[len(PREFIX):]) for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def path_of(root: Path, seq: int) -> Path:
    return root / f"{PREFIX}{seq:08d}"


def next_seq(root: Path) -> int:
    last = latest(root)
    return int(last.name[len(PREFIX):]) + 1 if last else 1


def write(root: Path, store: Any, dense: dict[str, Any], evaluator: Any, dedup_ids: list[str],
          state: dict[str, Any], keep: int, seq: int | None = None) -> Path:
    """Write one snapshot atomically; keep the newest ``keep`` of them. ``seq``: the number to
    give it (the ranks of a distributed trainer agree on one), else the next free one."""
    root.mkdir(parents=True, exist_ok=True)
    seq = next_seq(root) if seq is None else seq
    tmp = root / f".tmp-{seq:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    store.save(tmp / "embedding")
    torch.save(dense, tmp / "dense.pt")
    with open(tmp / "evaluator.pkl", "wb") as f:
        pickle.dump(evaluator, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(tmp / "dedup.json", "w") as f:
        json.dump(dedup_ids, f)
    with open(tmp / "state.json", "w") as f:
        json.dump({**state, "seq": seq}, f, indent=1)
    for name in ("dense.pt", "evaluator.pkl", "dedup.json", "state.json"):
        with open(tmp / name, "rb+") as f:
            os.fsync(f.fileno())
    final = path_of(root, seq)
    os.replace(tmp, final)
    fsync_dir(root)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    snaps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    for old in snaps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def read(path: Path) -> dict[str, Any]:
    """Everything but the tables (the caller loads those with ``store.load(path / 'embedding')``)."""
    with open(path / "evaluator.pkl", "rb") as f:
        evaluator = pickle.load(f)
    return {
        "dense": torch.load(path / "dense.pt", weights_only=False),
        "evaluator": evaluator,
        "dedup": json.loads((path / "dedup.json").read_text()),
        "state": json.loads((path / "state.json").read_text()),
        "embedding": path / "embedding",
    }


def read_for_serving(path: Path) -> dict[str, Any]:
    """What a serving replica needs of a snapshot: its state (positions, the params offset, the
    serving meta), the dense weights without optimizer state, and where the tables are."""
    dense = torch.load(path / "dense.pt", weights_only=False)
    return {"state": json.loads((path / "state.json").read_text()), "dense": dense["model"],
            "embedding": path / "embedding"}
