"""The two logs an application writes, as typed builders of raw values.

Raw values are what the application has (``"de"``, ``42``, ``["drama", "war"]``): the client
turns them into FIDs as the feature spec says (``LogEncoder``). These classes only hold them;
nothing is checked until a log is encoded, where every error names its field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RawValue = int | str | Sequence[int | str]  # one value, or several (a multi-valued slot)


@dataclass(slots=True)
class Item:
    """One item shown in the request, with its item-side features."""

    item_id: int
    sparse: Mapping[str, RawValue] = field(default_factory=dict)
    dense: Mapping[str, float] = field(default_factory=dict)
    position: int | None = None  # default: its index in the request


@dataclass(slots=True)
class FeatureLog:
    """One served request: the user-side features and every shown item with its own.

    ``request_id`` is the Kafka key and ``ts_ms`` (serving time, ms since the epoch) the Kafka
    timestamp of the message: the client sets both, the join relies on them. Cross slots of the
    spec are computed by the client from their two sources, never given here.
    """

    request_id: str
    user_id: int
    ts_ms: int
    user: Mapping[str, RawValue] = field(default_factory=dict)
    user_dense: Mapping[str, float] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    source: str = ""  # who logged it (an application name)

    def add_item(self, item_id: int, sparse: Mapping[str, RawValue] | None = None,
                 dense: Mapping[str, float] | None = None, position: int | None = None) -> FeatureLog:
        """Append a shown item; returns the log, so calls chain."""
        self.items.append(Item(item_id, sparse or {}, dense or {}, position))
        return self


@dataclass(slots=True)
class ActionLog:
    """What the user did with one shown item (``action`` is a label or an ignored action of the spec)."""

    request_id: str
    item_id: int
    action: str
    ts_ms: int
    value: float | None = None  # e.g. watch time

    def record(self) -> dict[str, Any]:
        """The ActionLog record of these values, unchecked (its fields are the record's; a dict
        built by hand: ``dataclasses.asdict`` takes 40x as long)."""
        return {"request_id": self.request_id, "item_id": self.item_id, "action": self.action, "ts_ms": self.ts_ms,
                "value": self.value}
