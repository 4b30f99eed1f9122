"""TrainingExample records -> the arrays one training step needs (bags of FIDs per slot).

What is read comes from the feature spec: one bag per slot it uses, its dense features (absent
-> the feature's default, then normalized as it says) and its labels, in the spec's order.
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.spec import FeatureSpec


@dataclass
class ExampleBatch:
    example_ids: list[str]
    ts_ms: np.ndarray  # int64[n] impression (event) time
    item_ids: np.ndarray  # int64[n]
    bags: dict[str, tuple[np.ndarray, np.ndarray]]  # slot -> (fids int64[m], offsets int64[n])
    dense: np.ndarray  # float32[n, dense features of the spec], normalized
    labels: np.ndarray  # float32[n, labels of the spec]
    sample_rate: np.ndarray  # float32[n]
    ingest_ms: int = 0  # when the newest record of the batch was produced / read (wall ms)
    position: dict[str, Any] = field(default_factory=dict)  # source position after this batch

    def __len__(self) -> int:
        return len(self.example_ids)


def build_batch(records: Sequence[dict[str, Any]], spec: FeatureSpec, ingest_ms: int = 0) -> ExampleBatch:
    """Vectorise records; absent slots give empty bags, absent dense values their default, absent labels 0.

    Arrow converts the records in one pass in C++, 1.2-1.8x faster here than walking them in
    Python, which was about half of a training step (a null counts as absent). Records it cannot
    take as the spec types them (a value of another type, a required field missing) go the Python
    way, which raises what it always did."""
    try:
        return _build_arrow(records, spec, ingest_ms)
    except (ValueError, TypeError, NotImplementedError):  # Arrow's own errors derive from these
        return build_batch_python(records, spec, ingest_ms)


@functools.lru_cache(maxsize=16)
def _record_type(slots: tuple[str, ...], dense: tuple[str, ...], labels: tuple[str, ...]) -> Any:
    import pyarrow as pa

    return pa.struct([("example_id", pa.string()), ("ts_ms", pa.int64()), ("item_id", pa.int64()),
                      ("sparse", pa.struct([(s, pa.list_(pa.int64())) for s in slots])),
                      ("dense", pa.struct([(f, pa.float64()) for f in dense])),
                      ("labels", pa.struct([(lb, pa.float64()) for lb in labels])),
                      ("sample_rate", pa.float64())])


def _build_arrow(records: Sequence[dict[str, Any]], spec: FeatureSpec, ingest_ms: int) -> ExampleBatch:
    import pyarrow as pa  # here, not at the top: a serving replica imports this module, never builds batches
    import pyarrow.compute as pc

    n = len(records)
    arr = pa.array(records, type=_record_type(tuple(spec.model_slots), tuple(spec.dense), tuple(spec.labels)))
    if any(arr.field(f).null_count for f in ("example_id", "ts_ms", "item_id", "sparse", "dense", "labels")):
        raise ValueError("a required field is absent: the Python way names it")
    sparse, dense_col, label_col = arr.field("sparse"), arr.field("dense"), arr.field("labels")
    bags = {}
    for slot in spec.model_slots:
        col = sparse.field(slot)
        lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy().astype(np.int64)
        offsets = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        bags[slot] = (pc.list_flatten(col).to_numpy().copy(), offsets)
    dense = np.empty((n, len(spec.dense)), np.float32)
    for j, (f, d) in enumerate(spec.dense.items()):
        dense[:, j] = pc.fill_null(dense_col.field(f), d.default).to_numpy()
    y = np.empty((n, len(spec.labels)), np.float32)
    for j, lb in enumerate(spec.labels):
        y[:, j] = pc.fill_null(label_col.field(lb), 0.0).to_numpy()
    return ExampleBatch(
        example_ids=arr.field("example_id").to_pylist(),
        ts_ms=arr.field("ts_ms").to_numpy().copy(), item_ids=arr.field("item_id").to_numpy().copy(),
        bags=bags, dense=normalize_dense(spec, dense), labels=y,
        sample_rate=pc.fill_null(arr.field("sample_rate"), 1.0).to_numpy().astype(np.float32),
        ingest_ms=ingest_ms,
    )


def build_batch_python(records: Sequence[dict[str, Any]], spec: FeatureSpec, ingest_ms: int = 0) -> ExampleBatch:
    """``build_batch`` walking the records in Python: the way for records Arrow cannot take, and the
    reference the Arrow way is tested against."""
    n = len(records)
    bags = {}
    for slot in spec.model_slots:
        lists = [r["sparse"].get(slot) or () for r in records]
        lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=n)
        fids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
        offsets = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        bags[slot] = (fids, offsets)
    defaults = [(f, d.default) for f, d in spec.dense.items()]
    dense = normalize_dense(spec, np.array([[r["dense"].get(f, v) for f, v in defaults] for r in records],
                                           dtype=np.float32).reshape(n, len(defaults)))
    labels = spec.labels
    y = np.array([[r["labels"].get(lb, 0) for lb in labels] for r in records],
                 dtype=np.float32).reshape(n, len(labels))
    return ExampleBatch(
        example_ids=[r["example_id"] for r in records],
        ts_ms=np.fromiter((r["ts_ms"] for r in records), dtype=np.int64, count=n),
        item_ids=np.fromiter((r["item_id"] for r in records), dtype=np.int64, count=n),
        bags=bags, dense=dense, labels=y,
        sample_rate=np.fromiter((r.get("sample_rate", 1.0) for r in records), dtype=np.float32, count=n),
        ingest_ms=ingest_ms,
    )


def normalize_dense(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """Each column (a dense feature of the spec, in order) as its ``normalize`` says, in place.

    log1p is signed (``sign(x) * log1p(|x|)``): counts and rates of any magnitude, negatives too."""
    for j, d in enumerate(spec.dense.values()):
        if d.normalize == "log1p":
            x[:, j] = np.sign(x[:, j]) * np.log1p(np.abs(x[:, j]))
        elif d.normalize == "standard":
            x[:, j] = (x[:, j] - d.mean) / d.std
    return x


class Deduper:
    """Drops examples whose id was seen among the last ``capacity`` ids (at-least-once inputs).

    Bounded (insertion-ordered, oldest forgotten first) so an endless stream keeps a fixed
    footprint; duplicates in this pipeline arrive close to their original, well inside it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.dropped = 0

    def filter(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            eid = r["example_id"]
            if eid in self.seen:
                self.dropped += 1
                continue
            self.seen[eid] = None
            out.append(r)
        while len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        return out

    def state(self) -> list[str]:
        return list(self.seen)

    def load(self, ids: list[str]) -> None:
        self.seen = OrderedDict.fromkeys(ids)
