"""Re-shard a distributed trainer's snapshot to another number of ranks (offline, between runs).

    python -m trainer.distributed.reshard SNAPSHOT_DIR --to 3

takes the newest sequence number that every ``shard-<r>-of-<W>/`` under SNAPSHOT_DIR has, and
writes ``shard-<r>-of-3/snap-<same seq>`` for r = 0..2: each table row goes to its owner among 3
ranks (``routing.owner_of``) with its optimizer state, last-update time and count; the dense
weights and optimizer are copied (every rank holds the same); the job's evaluator goes to rank 0
(the AUC curve continues); the stream positions of all old ranks are merged and given to every new
rank, each of which reads only its own partitions from them (``KafkaSource.seek``); the dedup
memories are merged. Frequency filters start empty (their counters cannot be split by FID):
ids that already have rows keep them, ids still waiting for admission count from zero again.
Positions inside an archive hour (``train --batch``) count a rank's stride of rows and cannot be
moved to another stride: re-shard after a batch run (its final snapshot is at an hour boundary).
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from trainer import snapshot
from trainer.distributed import routing
from trainer.embedding.store import MANIFEST, STORE_FORMAT, STORE_VERSION
from trainer.embedding.table import CuckooTable
from trainer.evaluation import ProgressiveEvaluator


def old_shards(root: Path) -> tuple[int, int, list[Path]]:
    """(world, seq, snapshot dir of each old rank) of the newest snapshot every rank has."""
    dirs = sorted(root.glob("shard-*-of-*"))
    worlds = {int(d.name.rsplit("-of-", 1)[1]) for d in dirs}
    if len(worlds) != 1:
        raise ValueError(f"{root}: expected shards of one world size, found {sorted(worlds) or 'none'}")
    world = worlds.pop()
    seqs = set.intersection(*(set(snapshot.seqs(root / f"shard-{r}-of-{world}")) for r in range(world)))
    if not seqs:
        raise ValueError(f"{root}: no snapshot that all {world} ranks have")
    seq = max(seqs)
    return world, seq, [snapshot.path_of(root / f"shard-{r}-of-{world}", seq) for r in range(world)]


def reshard(root: Path, to: int) -> list[Path]:
    """Write the newest common snapshot of ``root`` as ``to`` shards; return their snapshot dirs."""
    world, seq, olds = old_shards(root)
    if world == to:
        raise ValueError(f"{root} is already sharded {to} ways")
    news = [snapshot.path_of(root / f"shard-{r}-of-{to}", seq) for r in range(to)]
    for d in news:
        if d.exists():
            shutil.rmtree(d)
        (d / "embedding").mkdir(parents=True)
    manifests = [json.loads((o / "embedding" / MANIFEST).read_text()) for o in olds]
    slots: list[dict] = [{} for _ in range(to)]
    for name in manifests[0]["slots"]:
        tables = [CuckooTable.load(o / "embedding" / e["table"])
                  for o, m in zip(olds, manifests, strict=True) for e in m["slots"][name]["shards"]]
        parts = [t.export() for t in tables]
        data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        owner = routing.owner_of(data["ids"], to)
        h = tables[0].header()
        for r in range(to):
            keep = owner == r
            t = CuckooTable(dim=h["dim"], optimizer=h["optimizer"], init_std=h["init_std"], seed=h["seed"],
                            capacity=max(16, int(keep.sum())), **h["hyper"])
            t.restore_rows({k: v[keep] for k, v in data.items()})
            file = f"{name}.0.g1.table.npz"
            rows = t.save(news[r] / "embedding" / file)
            slot = manifests[0]["slots"][name]
            slots[r][name] = {"shards": [{"table": file, "rows": rows, "filter": None}], "dim": slot["dim"],
                              "optimizer": slot["optimizer"]}
    states = [json.loads((o / "state.json").read_text()) for o in olds]
    positions: dict = {}
    for st in states:
        for source, pos in st["positions"].items():
            if source.startswith("kafka:"):  # "topic:partition" -> offset: each partition has one reader
                positions.setdefault(source, {}).update(pos)
            elif isinstance(pos, dict) and pos.get("row", 0):
                raise ValueError(f"{source} position {pos} is inside an hour, in rows of a stride of {world}: "
                                 "re-shard after the batch run's final snapshot (at an hour boundary)")
            else:
                positions[source] = pos
    dedup = list(dict.fromkeys(i for o in olds for i in json.loads((o / "dedup.json").read_text())))
    clock = max(m["clock"] for m in manifests)
    for r, d in enumerate(news):
        manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "generation": 1, "clock": clock,
                    "slots": slots[r]}
        (d / "embedding" / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.copy(olds[0] / "dense.pt", d / "dense.pt")
        # the job's evaluator lives on rank 0; the other ranks get an empty one
        with open(olds[0] / "evaluator.pkl", "rb") as f:
            ev = pickle.load(f)
        if r:
            ev = ProgressiveEvaluator(ev.window_ms, ev.lateness_ms, ev.baseline.prior_strength)
        with open(d / "evaluator.pkl", "wb") as f:
            pickle.dump(ev, f, protocol=pickle.HIGHEST_PROTOCOL)
        (d / "dedup.json").write_text(json.dumps(dedup))
        st = {**states[0], "positions": positions, "rank": r, "world": to, "local_examples": 0,
              "resharded_from": world}
        if all("params" in x for x in states):  # replicas read the deltas on from the smallest rank's offset
            st["params"] = min((x["params"] for x in states), key=lambda pr: pr["offset"])
        (d / "state.json").write_text(json.dumps(st, indent=1))
    return news


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot_dir", type=Path, help="trainer.snapshot_dir of the distributed job")
    ap.add_argument("--to", type=int, required=True, help="the new number of ranks")
    args = ap.parse_args()
    for d in reshard(args.snapshot_dir, args.to):
        print(d)


if __name__ == "__main__":
    main()
