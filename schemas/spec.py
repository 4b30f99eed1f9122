"""The feature spec: the data contract every stage reads (section ``[features]`` or a file it names).

It declares the user's features, not the code's:

- **sparse slots**: name -> stable ``number`` (the FID's high bits, never reused), ``side``
  (``user``: in ``FeatureLog.user_sparse``; ``item``: in each shown item's ``sparse``), the raw
  value ``type`` the client accepts (``string`` or ``int``), and the slot's embedding settings
  (``dim``, ``optimizer``, ``filter_threshold``, ``ttl_s`` ... : every ``EmbeddingSettings``
  field; unset ones come from ``[embedding]``);
- **cross slots**: a number and the two slots they are built ``of`` (FID = hash of the pair
  of source FIDs, so any stage holding the FIDs can rebuild it); an item-side cross when
  either source is item-side;
- **dense features**: name -> ``side``, ``default`` (when absent), ``normalize``
  (``none`` | ``log1p`` | ``standard`` with ``mean``/``std``);
- **actions**: the ``labels`` (one task each; the first is the evaluated one) and the
  ``ignored`` ones (like ``impression``);
- ``unknown``: what the joiner does with a slot or dense feature a message carries that the
  spec does not know (``drop`` it and count, or ``dead_letter`` the message).

A slot is never deleted: ``retired = true`` keeps its number reserved; messages may still carry
it (dropped and counted), the client refuses it, no stage trains or archives it.
``compatibility(old, new)`` says whether a change keeps the contract (``streamrec features check``).
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from schemas.fid import MAX_SLOT, cross_fid, fid
from streamrec.section import Section


class Frozen(Section):
    """A part of the spec: immutable once validated (the spec's derived views stay right); build a
    changed spec with ``FeatureSpec.model_validate`` (``merge`` helps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
Side = Literal["user", "item"]


class SpecError(ValueError):
    """A spec that cannot be used, or a log that breaks it; ``field`` names where (dotted path)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EmbeddingSettings(Frozen):
    """One slot's table: shape, optimizer, initializer, frequency filter, expiry."""

    dim: int = Field(16, ge=1, le=1024, description="embedding width of this slot")
    optimizer: Literal["adagrad", "ftrl"] = "adagrad"
    learning_rate: float = Field(0.05, gt=0, description="Adagrad step size / FTRL alpha")
    initial_accumulator: float = Field(0.1, ge=0, description="Adagrad accumulator start value")
    adagrad_eps: float = Field(1e-8, ge=0, description="added under Adagrad's square root")
    ftrl_beta: float = Field(1.0, ge=0, description="FTRL-proximal beta")
    ftrl_l1: float = Field(0.0, ge=0, description="FTRL L1 strength (sparsifies rows)")
    ftrl_l2: float = Field(0.0, ge=0, description="FTRL L2 strength")
    init_std: float = Field(0.01, ge=0, description="std of the row initializer (deterministic per id; 0 = zeros)")
    filter_threshold: int = Field(1, ge=1, le=255, description="occurrences before an id gets a row (1 = no filter)")
    filter_kind: Literal["count_min", "probabilistic"] = Field(
        "count_min",
        description="count_min: admit after `threshold` counted occurrences; "
        "probabilistic: admit each occurrence with probability 1/threshold (no counters)",
    )
    filter_capacity: int = Field(1_000_000, ge=1, description="distinct not-yet-admitted ids the sketch is sized for")
    filter_fp_rate: float = Field(0.01, gt=0, lt=1, description="bound on the count-min false-admission rate")
    filter_depth: int = Field(4, ge=1, le=16, description="count-min rows (hash functions)")
    filter_decay_every: int = Field(0, ge=0, description="halve all count-min counters after this many increments")
    ttl_s: int = Field(0, ge=0, description="evict rows not updated for longer (event seconds; 0 = never)")


EMBEDDING_FIELDS = tuple(EmbeddingSettings.model_fields)
# changing these makes the slot's saved rows unusable (another shape or optimizer state)
TABLE_FIELDS = ("dim", "optimizer")


class SlotSpec(EmbeddingSettings):
    """A sparse slot: its number, side and raw value type, plus its embedding settings."""

    number: int = Field(ge=1, le=MAX_SLOT, description="the FID's high bits; stable, never reused")
    side: Side
    type: Literal["string", "int"] = Field("string", description="raw values the client accepts")
    retired: bool = Field(False, description="no longer used; the number stays reserved")


class CrossSpec(EmbeddingSettings):
    """A cross slot: FIDs of the pairs of values of two other slots."""

    number: int = Field(ge=1, le=MAX_SLOT, description="the FID's high bits; stable, never reused")
    of: tuple[str, str] = Field(description="the two slots it crosses")
    retired: bool = False


class DenseSpec(Frozen):
    side: Side
    default: float = Field(0.0, description="the value when a log does not carry the feature")
    normalize: Literal["none", "log1p", "standard"] = Field(
        "none", description="none | log1p (signed log1p) | standard ((x - mean) / std)")
    mean: float = 0.0
    std: float = Field(1.0, gt=0)


class ActionsSpec(Frozen):
    labels: list[str] = Field(min_length=1, description="one task per action type; the first is evaluated")
    ignored: list[str] = Field(default_factory=lambda: ["impression"], description="actions that carry no label")


class FeatureSpec(Frozen):
    file: str | None = Field(None, description="the spec file this was read from (informational)")
    unknown: Literal["drop", "dead_letter"] = Field(
        "drop", description="a slot or dense feature not in the spec: drop it (counted) or dead-letter the message")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings,
                                         description="embedding defaults of every slot")
    slots: dict[str, SlotSpec] = Field(min_length=1)
    crosses: dict[str, CrossSpec] = Field(default_factory=dict)
    dense: dict[str, DenseSpec] = Field(default_factory=dict)
    actions: ActionsSpec

    @field_validator("slots", "crosses", "dense")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"{name!r} is not a feature name (letters, digits, _; not starting with a digit)")
        return v

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        numbers: dict[int, str] = {}
        for kind, table in (("slots", self.slots), ("crosses", self.crosses)):
            for name, s in table.items():
                if s.number in numbers:
                    raise ValueError(f"{kind}.{name}: number {s.number} is also {numbers[s.number]!r}'s")
                numbers[s.number] = name
                unset = {f: getattr(self.embedding, f) for f in EMBEDDING_FIELDS if f not in s.model_fields_set}
                if unset:  # unset embedding settings come from [embedding] (then they count as set)
                    table[name] = s.model_copy(update=unset)
        both = sorted(self.slots.keys() & self.crosses.keys())
        if both:
            raise ValueError(f"crosses: {both} are slots too")
        for name, c in self.crosses.items():
            a, b = c.of
            for src in (a, b):
                if src not in self.slots or (self.slots[src].retired and not c.retired):
                    raise ValueError(f"crosses.{name}.of: {src!r} is not a slot in use")
            if a == b:
                raise ValueError(f"crosses.{name}.of: a slot crossed with itself")
        if not any(not s.retired for s in self.slots.values()):
            raise ValueError("slots: no slot in use (every one is retired)")
        for field, names in (("labels", self.actions.labels), ("ignored", self.actions.ignored)):
            bad = [a for a in names if not NAME.match(a)]
            if bad or len(set(names)) != len(names):
                raise ValueError(f"actions.{field}: names must be distinct identifiers, got {names}")
        if set(self.actions.labels) & set(self.actions.ignored):
            raise ValueError(f"actions: {sorted(set(self.actions.labels) & set(self.actions.ignored))} "
                             "are both labels and ignored")
        return self

    # ---- derived views (computed once per validated spec) ---------------------------------
    @cached_property
    def _derived(self) -> dict[str, Any]:
        sparse: dict[str, SlotSpec | CrossSpec] = {}
        side: dict[str, str] = {}
        for name, s in self.slots.items():
            sparse[name], side[name] = s, s.side
        for name, c in self.crosses.items():
            sparse[name] = c
            side[name] = "item" if "item" in (self.slots[c.of[0]].side, self.slots[c.of[1]].side) else "user"
        active = sorted((n for n, s in sparse.items() if not s.retired), key=lambda n: sparse[n].number)
        return {"sparse": sparse, "side": side, "active": active}

    @property
    def model_slots(self) -> list[str]:
        """Every slot and cross in use, by number: the trainer's tables and the model's inputs, in order."""
        return self._derived["active"]

    def settings(self, name: str) -> SlotSpec | CrossSpec:
        """A slot's or cross's spec (its embedding settings, resolved against ``[embedding]``)."""
        try:
            return self._derived["sparse"][name]
        except KeyError:
            raise KeyError(f"{name!r} is not a slot of the feature spec; slots: {self.model_slots}") from None

    def number(self, name: str) -> int:
        return self.settings(name).number

    def side(self, name: str) -> str:
        """``user`` or ``item``: the map of the FeatureLog a slot, cross or dense feature goes in."""
        if name in self.dense:
            return self.dense[name].side
        self.settings(name)
        return self._derived["side"][name]

    def sparse_on(self, side: str, retired: bool = False) -> dict[str, int]:
        """name -> number of the slots and crosses logged on one side (in use, or only retired ones)."""
        sp, sd = self._derived["sparse"], self._derived["side"]
        return {n: s.number for n, s in sp.items() if sd[n] == side and s.retired == retired}

    def dense_on(self, side: str) -> list[str]:
        return [n for n, d in self.dense.items() if d.side == side]

    @property
    def labels(self) -> list[str]:
        return self.actions.labels

    @property
    def known_actions(self) -> frozenset[str]:
        return frozenset(self.actions.labels) | frozenset(self.actions.ignored)

    def fid(self, name: str, value: int | str) -> int:
        """The FID of one raw value of a slot (not a cross: see ``cross_fid``)."""
        s = self.settings(name)
        if isinstance(s, CrossSpec):
            raise ValueError(f"{name!r} is a cross: its FIDs come from its sources' FIDs (cross_fid)")
        return fid(s.number, value)

    def cross_fid(self, name: str, fid_a: int, fid_b: int) -> int:
        c = self.crosses[name]
        return cross_fid(c.number, fid_a, fid_b)

    def model_signature(self) -> dict[str, Any]:
        """What a trained model's shape depends on: a snapshot restores only under the same one."""
        return {"slots": [[n, self.number(n), self.settings(n).dim, self.settings(n).optimizer]
                          for n in self.model_slots],
                "dense": [[n, d.normalize, d.mean, d.std] for n, d in self.dense.items()],
                "labels": list(self.labels)}


def read_spec_data(path: Path | str) -> dict[str, Any]:
    """The raw spec of a file: a spec file, or a config file with a ``[features]`` section."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SpecError(str(path), f"cannot read the feature spec: {e}") from None
    if "features" in data and "slots" not in data:
        data = dict(data["features"])
        if "file" in data:
            inner = Path(data.pop("file"))
            base = read_spec_data(inner if inner.is_absolute() else path.parent / inner)
            data = merge(base, data)
    data["file"] = str(path.resolve())
    return data


def load_spec(path: Path | str) -> FeatureSpec:
    """A spec from a file (see ``read_spec_data``); errors name the field."""
    from pydantic import ValidationError

    data = read_spec_data(path)
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or str(path)
        raise SpecError(field, f"{first['msg']} (in {path})") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, tables merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def compatibility(old: FeatureSpec, new: FeatureSpec) -> tuple[list[str], list[str]]:
    """(problems, notes) of changing the contract from ``old`` to ``new``.

    A problem breaks data or state made under ``old`` (compatible iff there is none); a note is
    a consequence worth knowing of a compatible change."""
    problems: list[str] = []
    notes: list[str] = []
    o_sp, n_sp = old._derived["sparse"], new._derived["sparse"]
    o_by_number = {s.number: n for n, s in o_sp.items()}
    for name, o in o_sp.items():
        n = n_sp.get(name)
        if n is None:
            problems.append(f"slot {name!r} (number {o.number}) was removed: keep it with retired = true, "
                            "so that its number is never used again")
            continue
        if n.number != o.number:
            problems.append(f"slot {name!r}: number {o.number} -> {n.number}: every FID of the slot changes; "
                            "add a new slot instead")
        if old.side(name) != new.side(name):
            problems.append(f"slot {name!r}: side {old.side(name)} -> {new.side(name)}: producers log it on "
                            "the old side")
        if isinstance(o, SlotSpec) != isinstance(n, SlotSpec):
            problems.append(f"slot {name!r}: changed between slot and cross")
        elif isinstance(o, SlotSpec) and o.type != n.type:
            problems.append(f"slot {name!r}: type {o.type} -> {n.type}: producers send the old type")
        elif isinstance(o, CrossSpec) and o.of != n.of:
            problems.append(f"cross {name!r}: of {list(o.of)} -> {list(n.of)}: the same FIDs would mean "
                            "another feature; add a new cross instead")
        if o.retired and not n.retired:
            notes.append(f"slot {name!r} is in use again")
        elif n.retired and not o.retired:
            notes.append(f"slot {name!r} retired: no longer trained or archived; messages carrying it have "
                         "it dropped, the client refuses it")
        if not n.retired and not o.retired:
            for f in TABLE_FIELDS:
                if getattr(o, f) != getattr(n, f):
                    problems.append(f"slot {name!r}: {f} {getattr(o, f)} -> {getattr(n, f)}: its trained rows "
                                    "(snapshots, serving) no longer fit; add a new slot instead")
            changed = [f for f in EMBEDDING_FIELDS if f not in TABLE_FIELDS and getattr(o, f) != getattr(n, f)]
            if changed:
                notes.append(f"slot {name!r}: {', '.join(changed)} changed: applies from the trainer's next start")
    for name, n in n_sp.items():
        if name in o_sp:
            continue
        if n.number in o_by_number:
            problems.append(f"slot {name!r}: number {n.number} was {o_by_number[n.number]!r}'s: numbers are "
                            "never reused")
        else:
            notes.append(f"slot {name!r} (number {n.number}) added: archive hours written before have no "
                         "values for it (read as absent); deploy the joiner, archiver and trainer with this spec "
                         "before producers send it")
    for name in old.dense.keys() - new.dense.keys():
        notes.append(f"dense {name!r} removed: producers that still send it have it handled as unknown "
                     f"({new.unknown})")
    for name in new.dense.keys() - old.dense.keys():
        notes.append(f"dense {name!r} added: absent in older data (reads as its default)")
    for name in old.dense.keys() & new.dense.keys():
        if old.dense[name].side != new.dense[name].side:
            problems.append(f"dense {name!r}: side {old.dense[name].side} -> {new.dense[name].side}: producers "
                            "log it on the old side")
        elif old.dense[name] != new.dense[name]:
            notes.append(f"dense {name!r}: default or normalization changed")
    for a in old.known_actions - new.known_actions:
        notes.append(f"action {a!r} no longer in the spec: handled as unknown ({new.unknown})")
    if old.labels != new.labels:
        notes.append(f"labels {old.labels} -> {new.labels}: the model's heads change")
    if old.unknown != new.unknown:
        notes.append(f"unknown features: {old.unknown} -> {new.unknown}")
    if old.model_signature() != new.model_signature():
        notes.append("the model's inputs or heads change: a trainer refuses snapshots of the old spec "
                     "(train a new model, e.g. `train --batch` over the archive, which reads old hours too)")
    return problems, notes
