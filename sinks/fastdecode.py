"""TrainingExample Avro bodies -> Arrow columns in one compiled pass (the archive's hot path).

Decoding message by message with fastavro builds a Python dict per example and then the Arrow
columns from the dicts; that was ~2/3 of the dumper's CPU. Here a numba kernel walks all bodies
of a batch once (the current TrainingExample schema's binary layout, field by field) and writes
positions and numbers into flat arrays; numpy/pyarrow turn those into the columns of
``sinks.table.archive_schema(spec)`` without a Python object per example.

Only messages written with the *current* TrainingExample schema take this path; any other writer
schema, a body that does not parse exactly (bounds, trailing bytes), a string that is not
UTF-8, or a map with a repeated key (Avro readers keep the last value) returns ``None`` and the
caller falls back to ``schemas.codec`` (which names the dead-letter reason, or reads the map as
fastavro does). Tests check it against the codec on random records.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from schemas.codec import HEADER_LEN, default_codec
from sinks.table import EXTRA, FIDS, slot_names

# field order of TrainingExample.avsc (checked against the schema in header())
FIELDS = ("example_id", "request_id", "item_id", "user_id", "ts_ms", "sparse", "dense", "labels",
          "sample_rate", "late", "join_delay_ms", "kind")
_TYPES = ["string", "string", "long", "long", "long",
          "{'type': 'map', 'values': {'type': 'array', 'items': 'long'}}", "{'type': 'map', 'values': 'float'}",
          "{'type': 'map', 'values': 'int'}", "float", "boolean", "long", "string"]


def header() -> bytes | None:
    """The 10-byte header of the current TrainingExample schema; None (codec only) if its fields
    are no longer the ones this decoder knows (a test fails then, so the decoder gets updated)."""
    schema = default_codec().current["TrainingExample"]
    names = tuple(f["name"] for f in schema.parsed["fields"])
    types = [str(f["type"]) for f in schema.parsed["fields"]]
    if names != FIELDS or types != _TYPES:
        logging.getLogger("streamrec.archive").warning(
            "TrainingExample schema changed; fast decoding off until sinks/fastdecode.py follows")
        return None
    return schema.header


@njit(cache=True, nogil=True)
def _long(buf, p, end):  # zig-zag varint; p = -1 on error
    acc = np.uint64(0)
    shift = np.uint64(0)
    while True:
        if p >= end or shift > np.uint64(63):
            return np.int64(0), -1
        b = buf[p]
        p += 1
        acc |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            break
        shift += np.uint64(7)
    return np.int64(acc >> np.uint64(1)) ^ -np.int64(acc & np.uint64(1)), p


@njit(cache=True, nogil=True)
def _parse(buf, starts, ends, longs, strs, f32pos, late, sp, fids, dn, lb, lbv):
    """Fill the output arrays; returns (ok, sparse entries, fids, dense entries, label entries)."""
    nsp = 0
    nfid = 0
    ndn = 0
    nlb = 0
    for i in range(starts.shape[0]):
        p = starts[i]
        end = ends[i]
        for k in range(12):
            if k == 0 or k == 1 or k == 11:  # strings
                n, p = _long(buf, p, end)
                if p < 0 or n < 0 or p + n > end:
                    return False, 0, 0, 0, 0
                s = 0 if k == 0 else (1 if k == 1 else 2)
                strs[i, s, 0] = p
                strs[i, s, 1] = n
                p += n
            elif k == 2 or k == 3 or k == 4 or k == 10:  # longs
                v, p = _long(buf, p, end)
                if p < 0:
                    return False, 0, 0, 0, 0
                longs[i, 0 if k == 2 else (1 if k == 3 else (2 if k == 4 else 3))] = v
            elif k == 5 or k == 6 or k == 7:  # maps
                while True:
                    count, p = _long(buf, p, end)
                    if p < 0:
                        return False, 0, 0, 0, 0
                    if count == 0:
                        break
                    if count < 0:
                        count = -count
                        _, p = _long(buf, p, end)  # block size in bytes
                        if p < 0:
                            return False, 0, 0, 0, 0
                    for _e in range(count):
                        n, p = _long(buf, p, end)
                        if p < 0 or n < 0 or p + n > end:
                            return False, 0, 0, 0, 0
                        kp = p
                        p += n
                        if k == 5:  # slot -> array<long>
                            sp[nsp, 0] = i
                            sp[nsp, 1] = kp
                            sp[nsp, 2] = n
                            sp[nsp, 3] = nfid
                            while True:
                                c, p = _long(buf, p, end)
                                if p < 0:
                                    return False, 0, 0, 0, 0
                                if c == 0:
                                    break
                                if c < 0:
                                    c = -c
                                    _, p = _long(buf, p, end)
                                    if p < 0:
                                        return False, 0, 0, 0, 0
                                for _j in range(c):
                                    v, p = _long(buf, p, end)
                                    if p < 0:
                                        return False, 0, 0, 0, 0
                                    fids[nfid] = v
                                    nfid += 1
                            sp[nsp, 4] = nfid - sp[nsp, 3]
                            nsp += 1
                        elif k == 6:  # name -> float
                            if p + 4 > end:
                                return False, 0, 0, 0, 0
                            dn[ndn, 0] = i
                            dn[ndn, 1] = kp
                            dn[ndn, 2] = n
                            dn[ndn, 3] = p
                            p += 4
                            ndn += 1
                        else:  # task -> int
                            v, p = _long(buf, p, end)
                            if p < 0:
                                return False, 0, 0, 0, 0
                            lb[nlb, 0] = i
                            lb[nlb, 1] = kp
                            lb[nlb, 2] = n
                            lbv[nlb] = v
                            nlb += 1
            elif k == 8:  # float
                if p + 4 > end:
                    return False, 0, 0, 0, 0
                f32pos[i] = p
                p += 4
            else:  # k == 9: boolean
                if p >= end or buf[p] > 1:
                    return False, 0, 0, 0, 0
                late[i] = buf[p]
                p += 1
        if p != end:
            return False, 0, 0, 0, 0
    return True, nsp, nfid, ndn, nlb


def _strings(buf: np.ndarray, pos: np.ndarray, lens: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lens) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    idx = np.repeat(pos - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
    data = buf[idx]
    return pa.StringArray.from_buffers(len(lens), pa.py_buffer(offsets), pa.py_buffer(data))


def _floats(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return buf[pos[:, None] + np.arange(4)].copy().view("<f4").reshape(-1)


def _gather(values: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return values[np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])]


def _utf8(arr: pa.Array) -> bool:
    """``from_buffers`` does not check the bytes: a full validation does."""
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _unique_keys(rec: np.ndarray, keys: pa.Array) -> bool:
    """No record has a key twice in this map."""
    if len(rec) < 2:
        return True
    pairs = pa.table({"r": pa.array(rec), "k": keys})
    return pairs.group_by(["r", "k"]).aggregate([]).num_rows == len(rec)


def _map(n: int, rec: np.ndarray, keys: pa.Array, items: pa.Array) -> pa.MapArray:
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rec, minlength=n), out=offsets[1:])
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items)


def decode_table(bodies: list[bytes], schema: pa.Schema) -> pa.Table | None:
    """Messages (header + body, current TrainingExample schema) -> table with ``schema``
    (``sinks.table.archive_schema``); None = use the codec."""
    n = len(bodies)
    lens = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=n)
    ends = np.cumsum(lens)
    starts = ends - lens + HEADER_LEN
    buf = np.frombuffer(b"".join(bodies), dtype=np.uint8)
    total = len(buf)
    longs = np.empty((n, 4), np.int64)
    strs = np.empty((n, 3, 2), np.int64)
    f32pos = np.empty(n, np.int64)
    late = np.empty(n, np.uint8)
    sp = np.empty((total // 2 + 1, 5), np.int64)  # every entry takes >= 2 bytes
    fids = np.empty(total + 1, np.int64)  # every FID takes >= 1 byte
    dn = np.empty((total // 5 + 1, 4), np.int64)
    lb = np.empty((total // 2 + 1, 3), np.int64)
    lbv = np.empty(total // 2 + 1, np.int64)
    ok, nsp, nfid, ndn, nlb = _parse(buf, starts, ends, longs, strs, f32pos, late, sp, fids, dn, lb, lbv)
    if not ok:
        return None
    sp, fids, dn, lb, lbv = sp[:nsp], fids[:nfid], dn[:ndn], lb[:nlb], lbv[:nlb]

    cols: dict[str, pa.Array] = {
        "example_id": _strings(buf, strs[:, 0, 0], strs[:, 0, 1]),
        "request_id": _strings(buf, strs[:, 1, 0], strs[:, 1, 1]),
        "item_id": pa.array(longs[:, 0]), "user_id": pa.array(longs[:, 1]), "ts_ms": pa.array(longs[:, 2]),
        "sample_rate": pa.array(_floats(buf, f32pos)), "late": pa.array(late.astype(bool)),
        "join_delay_ms": pa.array(longs[:, 3]), "kind": _strings(buf, strs[:, 2, 0], strs[:, 2, 1]),
    }
    dense_keys, label_keys = _strings(buf, dn[:, 1], dn[:, 2]), _strings(buf, lb[:, 1], lb[:, 2])
    slot_keys = _strings(buf, sp[:, 1], sp[:, 2])
    strings = (cols["example_id"], cols["request_id"], cols["kind"], dense_keys, label_keys, slot_keys)
    if not all(map(_utf8, strings)) or not (_unique_keys(dn[:, 0], dense_keys) and _unique_keys(lb[:, 0], label_keys)):
        return None
    if lbv.size and (lbv.min() < -(2**31) or lbv.max() >= 2**31):
        return None
    # sparse: one list column per known slot; a slot twice in one map -> let the codec decide
    slots = slot_names(schema)
    slot = pc.index_in(slot_keys, value_set=pa.array(slots, pa.string())).to_numpy(
        zero_copy_only=False)
    known = ~np.isnan(slot) if slot.dtype.kind == "f" else np.ones(nsp, bool)
    slot_i = np.where(known, np.nan_to_num(slot), -1).astype(np.int64)
    for j, name in enumerate(slots):
        m = slot_i == j
        rec = sp[m, 0]
        if len(np.unique(rec)) != len(rec):
            return None
        lengths = np.zeros(n, np.int32)
        lengths[rec] = sp[m, 4]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        present = np.zeros(n, bool)
        present[rec] = True
        values = pa.array(_gather(fids, sp[m, 3], sp[m, 4]), pa.int64())
        cols["sparse_" + name] = pa.ListArray.from_arrays(pa.array(offsets), values, FIDS, mask=pa.array(~present))
    if known.all():
        cols["sparse_extra"] = pa.nulls(n, EXTRA)
    else:
        rows: list = [None] * n
        for e in np.nonzero(~known)[0]:
            r, kp, kl, vs, vl = (int(x) for x in sp[e])
            rows[r] = (rows[r] or []) + [(bytes(buf[kp:kp + kl]).decode(), fids[vs:vs + vl].tolist())]
        cols["sparse_extra"] = pa.array(rows, EXTRA)
    cols["dense"] = _map(n, dn[:, 0], dense_keys, pa.array(_floats(buf, dn[:, 3])))
    cols["labels"] = _map(n, lb[:, 0], label_keys, pa.array(lbv.astype(np.int32)))
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
