"""The compiled BLAKE2b equals hashlib's, so spliced ids and sampling equal the Python path's."""

from __future__ import annotations

import hashlib
import random

from joiner.blake2b import digest


def test_blake2b_equals_hashlib_for_every_length_around_the_block_size() -> None:
    rng = random.Random(7)
    lengths = [*range(0, 300), 383, 384, 385, 1000, 4096]
    for n in lengths:
        msg = rng.randbytes(n)
        for size in (1, 8, 16, 32, 64):
            assert digest(msg, size) == hashlib.blake2b(msg, digest_size=size).digest(), (n, size)
