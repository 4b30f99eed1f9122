"""MovieLens-100K from the installed `recbole==1.2.1` package (never committed: its licence forbids it).

Its raw features are named as the slots of ``features.toml`` beside this file.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from replay.dataset import Dataset


def movielens_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MovieLens-100K comes with recbole==1.2.1: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise FileNotFoundError(f"{path}/ml-100k.inter missing: reinstall recbole==1.2.1")
    return path


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="latin-1", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[1:]  # header names the columns as name:type


def _age_bucket(age: str) -> str:
    return str(min(int(age) // 10, 7))


def load_movielens(path: Path | None = None) -> Dataset:
    path = path or movielens_dir()
    users = _rows(path / "ml-100k.user")
    user_ids = np.array([int(u[0]) for u in users], dtype=np.int64)
    user_raw = {
        "user_id": user_ids.tolist(),
        "age": [_age_bucket(u[1]) for u in users],
        "gender": [u[2] for u in users],
        "occupation": [u[3] for u in users],
        "zip": [u[4][:3] for u in users],
    }
    items = _rows(path / "ml-100k.item")
    item_ids = np.array([int(i[0]) for i in items], dtype=np.int64)
    item_raw = {
        "item_id": item_ids.tolist(),
        "genre": [(i[3].split() if len(i) > 3 and i[3] else ["unknown"]) for i in items],
        "year": [i[2] or "unknown" for i in items],
    }

    inter = _rows(path / "ml-100k.inter")
    u = np.array([int(r[0]) for r in inter], dtype=np.int64)
    it = np.array([int(r[1]) for r in inter], dtype=np.int64)
    rating = np.array([float(r[2]) for r in inter], dtype=np.float32)
    ts = np.array([int(float(r[3])) for r in inter], dtype=np.int64)
    order = np.lexsort((it, u, ts))  # by time; ties broken stably by ids
    u_index = np.searchsorted(user_ids, u[order])
    i_index = np.searchsorted(item_ids, it[order])
    return Dataset("movielens", user_ids, user_raw, item_ids, item_raw, u_index, i_index, rating[order], ts[order])
