"""Feature ids (FIDs): int64 with the slot number in the high bits and a 48-bit hash below.

As in Monolith, each slot has an id space of its own, so equal raw values in two slots never
meet, and the trainer can route a FID to its slot's table from the id alone. Collisions come
only from the 48-bit hash, never from a table's size. Slot numbers belong to the feature spec
(``schemas.spec``); this module only does the arithmetic (and imports nothing heavy: the
client uses it).
"""

from __future__ import annotations

import hashlib
from typing import Any

SLOT_BITS = 15
HASH_BITS = 48
HASH_MASK = (1 << HASH_BITS) - 1
MAX_SLOT = (1 << SLOT_BITS) - 1


def fid(number: int, value: int | str) -> int:
    """The FID of one raw value in slot ``number`` (stable across processes and runs)."""
    digest = hashlib.blake2b(f"{number}:{value}".encode(), digest_size=8).digest()
    return (number << HASH_BITS) | (int.from_bytes(digest, "little") & HASH_MASK)


def cross_fid(number: int, fid_a: int, fid_b: int) -> int:
    """The FID of a cross slot for one pair of source FIDs: a function of the FIDs alone, so a
    stage that has the sources' FIDs (but not their raw values) rebuilds the same cross."""
    return fid(number, f"{fid_a}*{fid_b}")


def slot_of(fids: Any) -> Any:
    """Slot number(s) carried in the high bits of FID(s): an int, or a numpy array of them."""
    return fids >> HASH_BITS
