"""Feature ids (FIDs): int64 with the slot number in the high bits and a 48-bit hash below.

As in Monolith, each slot has an id space of its own, so equal raw values in two slots never
meet, and the trainer can route a FID to its slot's table from the id alone. Collisions come
only from the 48-bit hash, never from a table's size.
"""

from __future__ import annotations

import hashlib

import numpy as np

SLOT_BITS = 15
HASH_BITS = 48
HASH_MASK = (1 << HASH_BITS) - 1
MAX_SLOT = (1 << SLOT_BITS) - 1

# Slot names of the data contract and their numbers. Add new slots at the end; never renumber.
SLOTS: dict[str, int] = {
    "user_id": 1,
    "age": 2,
    "gender": 3,
    "occupation": 4,
    "zip": 5,
    "item_id": 6,
    "genre": 7,
    "year": 8,
    "position": 9,
    "user_genre": 10,
}


def slot_number(slot: str) -> int:
    try:
        return SLOTS[slot]
    except KeyError:
        raise KeyError(f"unknown feature slot {slot!r}; known: {sorted(SLOTS)}") from None


def fid(slot: str | int, value: int | str) -> int:
    """The FID of one raw value in one slot (stable across processes and runs)."""
    number = slot if isinstance(slot, int) else slot_number(slot)
    digest = hashlib.blake2b(f"{number}:{value}".encode(), digest_size=8).digest()
    return (number << HASH_BITS) | (int.from_bytes(digest, "little") & HASH_MASK)


def slot_of(fids: np.ndarray | int) -> np.ndarray | int:
    """Slot number(s) carried in the high bits of FID(s)."""
    if isinstance(fids, (int, np.integer)):
        return int(fids) >> HASH_BITS
    return np.asarray(fids, dtype=np.int64) >> HASH_BITS
