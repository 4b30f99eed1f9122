"""Per-slot embedding store: FIDs -> the table (and filter, TTL) of their feature slot.

API (batched; every method thread-safe)::

    store = EmbeddingStore(cfg, spec)                            # EmbeddingConfig, FeatureSpec
    emb = store.lookup(fids, train=True, now=ts)                 # float32[n, dim of the slot]
    emb, has_row = store.lookup(fids, train=True, now=ts, with_mask=True)
    store.apply_gradients(fids, grads, now=ts)                   # -> ids applied
    store.evict_expired(now=None)                                # {slot: rows evicted}
    store.evict_expired_ids(now=None)                            # {slot: evicted ids}
    store.drain_touched()                                        # {slot: (ids, rows)}
    store.save(dir, now=None); store.load(dir)                   # atomic, versioned, with filters
    store.num_rows()                                             # {slot: live rows}

Routing: a FID's slot number is in its high bits (``schemas.fid.slot_of``); slot names, numbers
and each slot's table settings come from the feature spec (``schemas.spec``). ``lookup`` /
``apply_gradients`` take the FIDs of **one slot** per call (the slot is read from the FIDs; pass
``slot=`` to skip that check), since slots may differ in ``dim``. Each slot has ``cfg.shards``
tables split by key hash, each with its own lock and filter.

Training lookups (``train=True``) apply the slot's frequency filter to ids without a row: each
occurrence is counted; admitted ids get a row (initialised, last-update = ``now``); ids not (yet)
admitted read zeros and get no row, and ``apply_gradients`` skips them. Serving/eval lookups
(``train=False``) never insert and never count: missing ids read zeros.

Time: event time in integer seconds. The store's clock is the largest ``now`` it was given;
``evict_expired(now=None)`` and ``save(now=None)`` use it. A slot with ``ttl_s`` > 0 loses rows with
``now - last_update > ttl_s`` on ``evict_expired`` and never saves them.

Concurrency: one lock per (slot, shard) table and one per filter; different slots/shards run in
parallel (the kernels release the GIL). ``save`` copies each table under its lock in turn, so a
save during training is consistent per table, not across tables (snapshot quiescently for that).
``load`` replaces the tables wholesale: call it before workers start.

On disk (``save(dir)``): ``MANIFEST.json`` (format name, version, generation, clock, per slot the
table and filter file of each shard) plus one ``.npz`` per table and per filter, all named with
the generation. Files are written first, each atomically; the manifest is replaced last
(temp + rename); then older generations are deleted. A crash at any point leaves a loadable dir.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from schemas.fid import slot_of
from schemas.spec import EmbeddingSettings, FeatureSpec
from streamrec.files import atomic_write
from trainer.embedding import _kernels as K
from trainer.embedding.config import EmbeddingConfig
from trainer.embedding.filters import Filter, filter_from_state, make_filter
from trainer.embedding.table import CuckooTable

STORE_FORMAT = "streamrec.embedding_store"
STORE_VERSION = 1
MANIFEST = "MANIFEST.json"


class EmbeddingStore:
    """All slots' tables, filters and TTLs behind one FID-routed API (see the module docstring)."""

    def __init__(self, cfg: EmbeddingConfig, spec: FeatureSpec, slots: list[str] | None = None) -> None:
        """Tables for ``slots`` (default: every slot and cross the spec uses)."""
        self.cfg = cfg
        self.slot_names = list(slots) if slots is not None else list(spec.model_slots)
        self.slot_cfg: dict[str, EmbeddingSettings] = {n: spec.settings(n) for n in self.slot_names}
        self.numbers = {n: spec.number(n) for n in self.slot_names}
        self._by_number = {v: k for k, v in self.numbers.items()}
        self.tables: dict[str, list[CuckooTable]] = {}
        self.filters: dict[str, list[Filter | None]] = {}
        for name in self.slot_names:
            self.tables[name], self.filters[name] = self._fresh_slot(name)
        self._clock = 0
        self._clock_lock = threading.Lock()
        self._save_lock = threading.Lock()

    def _seed(self, name: str, shard: int) -> int:
        return self.cfg.seed * 1_000_003 + self.numbers[name] * 101 + shard

    def _fresh_slot(self, name: str) -> tuple[list[CuckooTable], list[Filter | None]]:
        c = self.slot_cfg[name]
        n = self.cfg.shards
        cap = max(16, self.cfg.initial_capacity // n)
        tables = [CuckooTable.from_config(c, cap, self._seed(name, k), self.cfg.max_load,
                                          self.cfg.index_growth, self.cfg.arena_growth)
                  for k in range(n)]
        filters = [make_filter(c, self._seed(name, k) + 17, 1.0 / n) for k in range(n)]
        return tables, filters

    # ---- routing ----------------------------------------------------------------------------

    def slot_name(self, fids: np.ndarray, slot: str | None = None) -> str:
        """The slot of a batch of FIDs (all must share it); ``slot`` if given (then not checked)."""
        if slot is not None:
            if slot not in self.tables:
                raise KeyError(f"slot {slot!r} is not in this store")
            return slot
        if fids.shape[0] == 0:
            raise ValueError("cannot infer the slot of an empty batch; pass slot=")
        numbers = slot_of(fids)
        first = int(numbers[0])
        if not np.all(numbers == first):
            raise ValueError(f"FIDs of several slots in one call: {sorted(set(numbers.tolist()))}")
        name = self._by_number.get(first)
        if name is None:
            raise KeyError(f"FIDs carry slot number {first}, which has no table here")
        return name

    def _shards(self, fids: np.ndarray) -> list[np.ndarray] | None:
        """Positions of each shard's FIDs (None when there is a single shard)."""
        n = self.cfg.shards
        if n == 1:
            return None
        with np.errstate(over="ignore"):
            h = (fids.view(np.uint64) * K._GOLD) >> np.uint64(40)
        shard = (h % np.uint64(n)).astype(np.int64)
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(n + 1))
        return [order[bounds[k]:bounds[k + 1]] for k in range(n)]

    def _tick(self, now: int) -> None:
        with self._clock_lock:
            if now > self._clock:
                self._clock = int(now)

    @property
    def clock(self) -> int:
        return self._clock

    def dim(self, slot: str) -> int:
        return self.slot_cfg[slot].dim

    # ---- batched operations -------------------------------------------------------------------

    def lookup(self, fids, *, slot: str | None = None, train: bool = False, now: int = 0,
               with_mask: bool = False):
        """Embeddings of one slot's FIDs: float32[n, dim]; with ``with_mask`` also bool[n] has-row.

        ``train=True``: filter, then insert admitted ids (see the module docstring).
        ``train=False``: read only; missing ids are zeros.
        """
        fids = np.ascontiguousarray(fids, dtype=np.int64).reshape(-1)
        name = self.slot_name(fids, slot)
        parts = self._shards(fids)
        tables, filters = self.tables[name], self.filters[name]
        if train:
            self._tick(now)
        if parts is None:
            out, mask = self._lookup_shard(tables[0], filters[0], fids, train, now)
        else:
            out = np.empty((fids.shape[0], self.dim(name)), np.float32)
            mask = np.empty(fids.shape[0], np.bool_)
            for k, pos in enumerate(parts):
                if pos.shape[0]:
                    out[pos], mask[pos] = self._lookup_shard(tables[k], filters[k], fids[pos], train, now)
        return (out, mask) if with_mask else out

    @staticmethod
    def _lookup_shard(table: CuckooTable, flt: Filter | None, fids: np.ndarray, train: bool,
                      now: int) -> tuple[np.ndarray, np.ndarray]:
        if train and flt is None:
            return table.lookup(fids, insert=True, now=now), np.ones(fids.shape[0], np.bool_)
        out, found = table.lookup_found(fids, init_missing=False)
        if not train or found.all():
            return out, found
        miss = np.flatnonzero(~found)
        admitted = flt.admit(fids[miss])
        if admitted.any():
            table.insert(fids[miss[admitted]], now=now)
            # every occurrence of an admitted id reads its row, also those counted before admission
            out[miss], found[miss] = table.lookup_found(fids[miss], init_missing=False)
        return out, found

    def apply_gradients(self, fids, grads, *, slot: str | None = None, now: int = 0) -> int:
        """Optimizer step inside the slot's table(s); FIDs without a row are skipped. Returns applied."""
        fids = np.ascontiguousarray(fids, dtype=np.int64).reshape(-1)
        name = self.slot_name(fids, slot)
        self._tick(now)
        parts = self._shards(fids)
        tables = self.tables[name]
        if parts is None:
            return tables[0].apply_gradients(fids, grads, now)
        grads = np.asarray(grads, np.float32)
        return sum(tables[k].apply_gradients(fids[pos], grads[pos], now)
                   for k, pos in enumerate(parts) if pos.shape[0])

    def evict_expired(self, now: int | None = None) -> dict[str, int]:
        """Evict rows past their slot's TTL at ``now`` (default: the store's clock)."""
        return {name: len(ids) for name, ids in self.evict_expired_ids(now).items()}

    def evict_expired_ids(self, now: int | None = None) -> dict[str, np.ndarray]:
        """Evict rows past their slot's TTL; per slot with a TTL, the evicted ids (for serving)."""
        now = self._clock if now is None else int(now)
        return {name: np.concatenate([t.evict_expired_ids(now, self.slot_cfg[name].ttl_s) for t in tables])
                for name, tables in self.tables.items() if self.slot_cfg[name].ttl_s > 0}

    def drain_touched(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per slot (ids, embedding rows) updated since the last drain; slots with none are left out."""
        out = {}
        for name, tables in self.tables.items():
            parts = [t.drain_touched() for t in tables]
            ids = np.concatenate([p[0] for p in parts])
            if ids.shape[0]:
                out[name] = (ids, np.concatenate([p[1] for p in parts]))
        return out

    def num_rows(self) -> dict[str, int]:
        return {name: sum(len(t) for t in tables) for name, tables in self.tables.items()}

    @property
    def nbytes(self) -> int:
        tables = sum(t.nbytes for ts in self.tables.values() for t in ts)
        filters = sum(f.nbytes for fs in self.filters.values() for f in fs if f is not None)
        return tables + filters

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, directory: str | Path, now: int | None = None) -> dict:
        """Write every table (live, unexpired rows only) and filter into ``directory``; returns the manifest."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        now = self._clock if now is None else int(now)
        with self._save_lock:
            old = _read_manifest(d)
            gen = (old["generation"] + 1) if old else 1
            slots = {}
            for name, tables in self.tables.items():
                ttl = self.slot_cfg[name].ttl_s
                shards = []
                for k, table in enumerate(tables):
                    tfile = f"{name}.{k}.g{gen}.table.npz"
                    rows = table.save(d / tfile, now=now, ttl=ttl)
                    entry = {"table": tfile, "rows": rows, "filter": None}
                    flt = self.filters[name][k]
                    if flt is not None:
                        ffile = f"{name}.{k}.g{gen}.filter.npz"
                        state = flt.state()
                        atomic_write(d / ffile, lambda f, s=state: np.savez(f, **s))
                        entry["filter"] = ffile
                    shards.append(entry)
                slots[name] = {"shards": shards, "dim": self.slot_cfg[name].dim,
                               "optimizer": self.slot_cfg[name].optimizer}
            manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "generation": gen,
                        "clock": max(now, self._clock), "slots": slots}
            body = json.dumps(manifest, indent=1).encode()
            atomic_write(d / MANIFEST, lambda f: f.write(body))
            keep = {e[k] for s in slots.values() for e in s["shards"] for k in ("table", "filter") if e[k]}
            for p in d.glob("*.npz"):
                if p.name not in keep:
                    p.unlink(missing_ok=True)
        return manifest

    def load(self, directory: str | Path) -> None:
        """Replace every slot's tables and filters by those saved in ``directory``.

        Slots absent from the save start empty. A slot's saved dim or optimizer must match the
        current config (an error names the slot); the shard count may differ (rows are re-routed).
        """
        d = Path(directory)
        manifest = _read_manifest(d)
        if manifest is None:
            raise FileNotFoundError(f"{d / MANIFEST}: no embedding store saved here")
        if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
            raise ValueError(f"{d}: unsupported store format {manifest.get('format')!r} "
                             f"v{manifest.get('version')}")
        new_tables, new_filters = {}, {}
        for name in self.slot_names:
            tables, filters = self._fresh_slot(name)
            saved = manifest["slots"].get(name)
            if saved is not None:
                c = self.slot_cfg[name]
                if saved["dim"] != c.dim or saved["optimizer"] != c.optimizer:
                    raise ValueError(f"slot {name!r}: saved dim/optimizer {saved['dim']}/"
                                     f"{saved['optimizer']} != config {c.dim}/{c.optimizer}")
                same_shards = len(saved["shards"]) == len(tables)
                for k, entry in enumerate(saved["shards"]):
                    data = CuckooTable.load(d / entry["table"]).export()
                    self._restore(tables, data)
                    if entry["filter"] and same_shards and filters[k] is not None:
                        with np.load(d / entry["filter"], allow_pickle=False) as z:
                            st = {key: z[key] for key in z.files}
                        if str(st["kind"]) == filters[k].kind:
                            filters[k] = filter_from_state(st)
            new_tables[name], new_filters[name] = tables, filters
        self.tables, self.filters = new_tables, new_filters
        self._clock = int(manifest.get("clock", 0))

    def _restore(self, tables: list[CuckooTable], data: dict[str, np.ndarray]) -> None:
        parts = self._shards(data["ids"])
        if parts is None:
            tables[0].restore_rows(data)
            return
        for k, pos in enumerate(parts):
            tables[k].restore_rows({key: v[pos] for key, v in data.items()})


def _read_manifest(d: Path) -> dict | None:
    p = d / MANIFEST
    if not p.exists():
        return None
    return json.loads(p.read_text())


def saved_rows(directory: str | Path):
    """Yield (slot name, ids, embeddings) of a saved store, shard by shard, without optimizer state.

    What a serving replica bootstraps from: it reads only the ids and embedding arrays of each
    table file (``np.load`` of an ``.npz`` reads members lazily), never building training tables."""
    d = Path(directory)
    manifest = _read_manifest(d)
    if manifest is None:
        raise FileNotFoundError(f"{d / MANIFEST}: no embedding store saved here")
    for name, saved in manifest["slots"].items():
        for entry in saved["shards"]:
            with np.load(d / entry["table"], allow_pickle=False) as z:
                yield name, z["ids"], z["emb"]
