"""`streamrec experiment collisionless`: the paper's Fig. 7 on MovieLens-100K.

Per seed: a random split of the ratings into train and test; the same DeepFM (``trainer.loop``)
trained for a few epochs on the collisionless table and, with the same seed, split, shuffles and
initial weights, on hashed tables whose measured collision rates match the paper's; test AUC after
every epoch. Across seeds: mean and 95 % t-interval per epoch and arm, and of the paired difference.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainer.evaluation import weighted_auc
from trainer.experiments.common import Progress, seeded_config, train_on
from trainer.experiments.config import CollisionlessConfig
from trainer.experiments.data import first_labels, rating_examples, slot_ids
from trainer.experiments.hashing import HashedSlot, hashed_records
from trainer.experiments.stats import mean_ci
from trainer.loop import Trainer

if TYPE_CHECKING:
    from streamrec.config import Settings

ARMS = ("collisionless", "hashed")


def hashed_slots(settings: Settings, cfg: CollisionlessConfig, records: list[dict[str, Any]]) -> dict[str, str]:
    """side -> the slot hashed there: the configured one, else the side's slot with the most distinct ids."""
    spec = settings.features
    check_slots(settings, cfg)
    out = {}
    for side in cfg.targets:
        if side in cfg.slots:
            name = cfg.slots[side]
        else:
            plain = [n for n in spec.sparse_on(side) if n in spec.slots]
            if not plain:
                raise ValueError(f"experiments.collisionless.targets.{side}: the feature spec has no {side}-side slot")
            name = max(plain, key=lambda n: len(slot_ids(records, n)))
        out[side] = name
    return out


def check_slots(settings: Settings, cfg: CollisionlessConfig) -> None:
    """The configured slots exist on their side of the spec (checked before any data is read)."""
    spec = settings.features
    for side, name in cfg.slots.items():
        if name not in spec.slots or spec.slots[name].retired or spec.side(name) != side:
            raise ValueError(f"experiments.collisionless.slots.{side}: {name!r} is not a {side}-side slot in use "
                             f"of the feature spec ({sorted(spec.sparse_on(side))})")


def run(settings: Settings, cfg: CollisionlessConfig, progress: Progress | None = None,
        work_dir: Path | None = None) -> dict[str, Any]:
    """Every seed's curves, the hashed tables' sizes and measured rates, the summary per epoch."""
    torch.set_num_threads(1)
    spec = settings.features
    check_slots(settings, cfg)
    records = rating_examples(spec, settings.replay, cfg.limit)
    y_all = first_labels(records, spec)
    slots = hashed_slots(settings, cfg, records)
    ids = {slot: slot_ids(records, slot) for slot in slots.values()}
    runs = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for seed in cfg.seeds:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(records))
            n_test = max(1, int(round(cfg.test_share * len(records))))
            test, train = perm[:n_test], perm[n_test:]
            tables = {side: HashedSlot.fit(slot, spec.number(slot), ids[slot], cfg.targets[side], seed)
                      for side, slot in slots.items()}
            maps = {t.slot: t.mapping(ids[t.slot]) for t in tables.values()}
            arms = {"collisionless": records, "hashed": hashed_records(records, maps)}
            orders = [np.random.default_rng([seed, e]).permutation(train) for e in range(cfg.epochs)]
            curves, rows = {}, {}
            for arm, recs in arms.items():
                trainer = Trainer(seeded_config(settings.trainer, seed, Path(tmp) / f"{arm}-{seed}"), spec)
                test_recs = [recs[i] for i in test]
                aucs = []
                for e, order in enumerate(orders):
                    # each epoch's examples get ids of their own: the trainer drops ids it has seen
                    epoch = [{**recs[i], "example_id": f"{recs[i]['example_id']}/{e}"} for i in order]
                    train_on(trainer, epoch, f"{arm}-epoch-{e}", progress)
                    aucs.append(weighted_auc(trainer.score(test_recs), y_all[test]))
                curves[arm] = aucs
                live = trainer.ps.store.num_rows()
                rows[arm] = {slot: live[slot] for slot in slots.values()}
            runs.append({
                "seed": seed, "train": len(train), "test": n_test, "auc": curves,
                "tables": {side: vars(t) for side, t in tables.items()},
                "rows": rows,  # rows the hashed slots hold in each arm's table at the end
            })
    return {"experiment": "collisionless", "config": cfg.model_dump(mode="json"), "ratings": len(records),
            "positives": float(y_all.mean()), "label": spec.labels[0], "slots": slots, "runs": runs,
            "summary": summarize(runs, cfg.epochs)}


def summarize(runs: list[dict[str, Any]], epochs: int) -> list[dict[str, float]]:
    """Per epoch: each arm's mean AUC and 95 % half-width, and the paired difference's."""
    out = []
    for e in range(epochs):
        row: dict[str, float] = {"epoch": e + 1}
        for arm in ARMS:
            row[arm], row[f"{arm}_ci"] = mean_ci([r["auc"][arm][e] for r in runs])
        row["diff"], row["diff_ci"] = mean_ci([r["auc"]["collisionless"][e] - r["auc"]["hashed"][e] for r in runs])
        out.append(row)
    return out


def describe(result: dict[str, Any]) -> str:
    """What was run and what it shows, in words (the report's introduction)."""
    c, s = result["config"], result["summary"]
    above = sum(r["diff"] > 0 for r in s)
    clear = sum(r["diff"] - r["diff_ci"] > 0 for r in s if not math.isnan(r["diff_ci"]))
    slots = ", ".join(f"{side}s: `{slot}`" for side, slot in result["slots"].items())
    return (
        f"DeepFM (the trainer's model, `trainer/model.py`) on MovieLens-100K: {result['ratings']} ratings, one example "
        f"each, label `{result['label']}` ({100 * result['positives']:.1f} % positive); per seed a random "
        f"{100 * (1 - c['test_share']):.0f}/{100 * c['test_share']:.0f} split, {c['epochs']} epochs, test AUC after "
        f"each; seeds {c['seeds']}. Arm *collisionless*: the cuckoo tables as they are. Arm *hashed*: the same "
        f"tables fed `slot | h(id) mod M` for the id slots ({slots}), so ids that share a row share its "
        "embedding, with M chosen per seed so that the measured collision rate (share of distinct ids sharing "
        "their row with another) matches the paper's (users 7.73 %, items 2.86 %). Everything else (split, "
        "order, initial dense weights, crosses) is the same in both arms.\n\n"
        f"**Result:** the collisionless table's mean AUC is above the hashed one's at {above} of {len(s)} epochs; "
        f"the paired 95 % interval of the difference excludes zero at {clear} of {len(s)}. "
        "The paper (MovieLens-25M) saw the collisionless table ahead at every epoch. "
        "Scale matters: ML-100K has 943 users and 1,682 movies, so 7.73 % is ~73 users sharing rows.")
