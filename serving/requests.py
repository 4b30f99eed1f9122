"""Scoring requests: their shape (pydantic, so a bad field is a 422 naming it) and their FIDs.

A request carries the user's features and the candidates', as raw values (turned into FIDs by
the client's encoder, exactly as an application's logs are) or as FIDs (``"fids": true``: each
FID must carry its slot's number; crosses are computed here, as the client does). Either way the
result is a FeatureLog record: what is scored, and what is logged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from schemas.codec import default_codec
from schemas.fid import slot_of
from schemas.spec import FeatureSpec, SpecError
from streamrec.applog import FeatureLog, Item, LogEncoder

RawValue = StrictInt | StrictStr | list[StrictInt | StrictStr]
Number = StrictFloat | StrictInt


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: StrictInt = Field(description="the item's id")
    sparse: dict[str, RawValue] = Field(default_factory=dict, description="item-side slot -> raw value(s) or FIDs")
    dense: dict[str, Number] = Field(default_factory=dict, description="item-side dense features")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str | None = Field(None, min_length=1, max_length=256, description="default: a new uuid")
    user_id: StrictInt
    ts_ms: StrictInt | None = Field(None, ge=0, description="serving time (default: now)")
    user: dict[str, RawValue] = Field(default_factory=dict, description="user-side slot -> raw value(s) or FIDs")
    user_dense: dict[str, Number] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(min_length=1, description="items to rank (at most serving.max_candidates)")
    fids: bool = Field(False, description="sparse values are FIDs, not raw values")
    rank_by: str | None = Field(None, description="the head to rank by (default: the spec's first label)")
    show: int | None = Field(None, gt=0, description="how many top items the app shows (and the log lists)")
    raw: bool = Field(False, description="also return each head's uncorrected probability")
    log: bool = Field(True, description="log the FeatureLog of this request (off: a dry run, nothing joins)")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[ScoreRequest] = Field(min_length=1)


class RequestError(ValueError):
    """A request the spec or the limits refuse: ``field`` is its path in the request body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _request_path(field: str) -> str:
    """The encoder's path of a FeatureLog field -> the request's (items[j] are candidates[j])."""
    return field.replace("items[", "candidates[")


class RecordBuilder:
    """ScoreRequest -> (request id, ts_ms, FeatureLog record) under one spec."""

    def __init__(self, spec: FeatureSpec, source: str) -> None:
        self.spec = spec
        self.source = source
        self.encoder = LogEncoder(spec)
        self.codec = default_codec()
        self.user_slots = spec.sparse_on("user")
        self.item_slots = spec.sparse_on("item")

    def record(self, req: ScoreRequest, prefix: str = "") -> dict[str, Any]:
        rid = req.request_id or uuid.uuid4().hex
        ts = req.ts_ms if req.ts_ms is not None else int(time.time() * 1000)
        if req.fids:
            return self._from_fids(req, rid, ts, prefix)
        log = FeatureLog(rid, req.user_id, ts, req.user, req.user_dense,
                         [Item(c.item_id, c.sparse, c.dense) for c in req.candidates], self.source)
        try:
            return self.encoder.fids(log)
        except SpecError as e:
            raise RequestError(prefix + _request_path(e.field), str(e).split(": ", 1)[-1]) from None

    # ---- FIDs given ----------------------------------------------------------------------------
    def _from_fids(self, req: ScoreRequest, rid: str, ts: int, prefix: str) -> dict[str, Any]:
        user = self._fids(req.user, self.user_slots, "user", prefix + "user")
        self._cross(user, user, "user")
        dense_u = self._dense(req.user_dense, "user", prefix + "user_dense")
        items = []
        for j, c in enumerate(req.candidates):
            where = f"{prefix}candidates[{j}]"
            sp = self._fids(c.sparse, self.item_slots, "item", where + ".sparse")
            self._cross(sp, {**user, **sp}, "item")
            items.append({"item_id": c.item_id, "position": j, "sparse": sp,
                          "dense": self._dense(c.dense, "item", where + ".dense")})
        return {"request_id": rid, "user_id": req.user_id, "ts_ms": ts, "user_sparse": user, "user_dense": dense_u,
                "items": items, "source": self.source}

    def _fids(self, raw: dict[str, Any], slots: dict[str, int], side: str, where: str) -> dict[str, list[int]]:
        out = {}
        for name, v in raw.items():
            number = slots.get(name)
            if number is None or name in self.spec.crosses:
                why = (f"{name!r} is a cross: computed from its sources" if name in self.spec.crosses
                       else f"unknown {side}-side slot {name!r} (the spec's: {sorted(slots)})")
                raise RequestError(f"{where}.{name}", why)
            vals = v if isinstance(v, list) else [v]
            for k, f in enumerate(vals):
                if type(f) is not int or not -(1 << 63) <= f < (1 << 63):
                    raise RequestError(f"{where}.{name}[{k}]", f"{f!r} is not an int64 FID")
                if int(slot_of(f)) != number:
                    raise RequestError(f"{where}.{name}[{k}]", f"FID {f} carries slot number {int(slot_of(f))}, "
                                                               f"not {name!r}'s {number}")
            out[name] = list(vals)
        return out

    def _cross(self, into: dict[str, list[int]], sources: dict[str, list[int]], side: str) -> None:
        for name, c in self.spec.crosses.items():
            if c.retired or self.spec.side(name) != side:
                continue
            a, b = sources.get(c.of[0]), sources.get(c.of[1])
            if a and b:
                into[name] = [self.spec.cross_fid(name, x, y) for x in a for y in b]

    def _dense(self, raw: dict[str, Any], side: str, where: str) -> dict[str, float]:
        known = self.spec.dense_on(side)
        for name in raw:
            if name not in known:
                raise RequestError(f"{where}.{name}", f"unknown {side}-side dense feature {name!r} (the spec's: "
                                                      f"{sorted(known)})")
        return {k: float(v) for k, v in raw.items()}

    def encode(self, req: ScoreRequest, record: dict[str, Any], shown: list[int]) -> bytes:
        """The FeatureLog of the shown items (indexes into the candidates), in that order: from the raw
        values by the client's encoder (the FIDs ``record`` holds come from the same caches), or
        the record itself when FIDs were given."""
        if req.fids:
            items = [{**record["items"][i], "position": p} for p, i in enumerate(shown)]
            return self.codec.encode("FeatureLog", {**record, "items": items})
        c = req.candidates
        log = FeatureLog(record["request_id"], record["user_id"], record["ts_ms"], req.user, req.user_dense,
                         [Item(c[i].item_id, c[i].sparse, c[i].dense, p) for p, i in enumerate(shown)], self.source)
        return self.encoder.feature_log(log)
