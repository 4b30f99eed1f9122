"""Single-object encoding: round trips, schema evolution both ways, and clear errors on bad bytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from schemas.codec import MAGIC, Codec, DecodeError, default_codec, load_schema, schema_fingerprint
from schemas.fid import HASH_BITS, cross_fid, fid, slot_of

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


FEATURE_LOG = {
    "request_id": "r1", "user_id": 42, "ts_ms": 1_700_000_000_000,
    "user_sparse": {"user_id": [fid(1, 42)], "age": [fid(2, "2")]},
    "user_dense": {"user_activity": 1.5},
    "items": [
        {"item_id": 7, "position": 0, "sparse": {"item_id": [fid(6, 7)]}, "dense": {"item_popularity": 0.25}},
        {"item_id": 9, "position": 1, "sparse": {"genre": [fid(7, "Drama"), fid(7, "War")]}, "dense": {}},
    ],
    "source": "test",
}
ACTION = {"request_id": "r1", "item_id": 7, "action": "click", "ts_ms": 1_700_000_001_000, "value": 3.5}
EXAMPLE = {
    "example_id": "abc", "request_id": "r1", "item_id": 7, "user_id": 42, "ts_ms": 1, "sparse": {"item_id": [5]},
    "dense": {"x": 0.5}, "labels": {"click": 1, "like": 0}, "sample_rate": 1.0, "late": False,
    "join_delay_ms": 10, "kind": "window",
}
DEAD = {"reason": "malformed", "detail": "x", "source_topic": "features", "partition": 0, "offset": 3,
        "key": b"k", "payload": b"\x00\x01", "ts_ms": 5}


@pytest.mark.parametrize("name,record", [("FeatureLog", FEATURE_LOG), ("ActionLog", ACTION),
                                         ("TrainingExample", EXAMPLE), ("DeadLetter", DEAD)])
def test_round_trip(name: str, record: dict) -> None:
    codec = default_codec()
    data = codec.encode(name, record)
    assert data[:2] == MAGIC
    assert data[2:10] == codec.current[name].fingerprint
    got_name, got = codec.decode(data, expect=name)
    assert got_name == name
    assert json.dumps(got, sort_keys=True, default=repr) == json.dumps(record, sort_keys=True, default=repr)


def test_header_fingerprint_is_the_little_endian_crc64_avro() -> None:
    # Avro spec test vector: the CRC-64-AVRO of "int" is 0x7275d51a3f395c8f, written little-endian.
    assert schema_fingerprint("int") == struct.pack("<Q", 0x7275D51A3F395C8F)


def test_old_writer_read_with_new_reader_fills_defaults() -> None:
    codec = default_codec()
    v1 = load_schema(AVRO / "history" / "FeatureLog.v1.avsc")
    assert v1.fingerprint != codec.current["FeatureLog"].fingerprint
    old = {k: v for k, v in FEATURE_LOG.items() if k != "source"}
    data = codec.encode("FeatureLog", old, schema=v1)
    _, got = codec.decode(data, expect="FeatureLog")
    assert got["source"] == ""  # the default of the field added in v2
    assert got["items"][1]["sparse"]["genre"] == FEATURE_LOG["items"][1]["sparse"]["genre"]


def test_new_writer_read_by_old_reader_skips_new_fields(tmp_path: Path) -> None:
    # A consumer still on v1: its "current" FeatureLog is v1, and it knows v2 as a writer schema.
    old_dir = tmp_path / "avro"
    (old_dir / "history").mkdir(parents=True)
    for f in AVRO.glob("*.avsc"):
        (old_dir / f.name).write_text(f.read_text())
    (old_dir / "FeatureLog.avsc").write_text((AVRO / "history" / "FeatureLog.v1.avsc").read_text())
    old_codec = Codec(old_dir, extra_writers=(AVRO / "FeatureLog.avsc",))
    data = default_codec().encode("FeatureLog", FEATURE_LOG)
    _, got = old_codec.decode(data, expect="FeatureLog")
    assert "source" not in got
    assert got["request_id"] == "r1" and len(got["items"]) == 2


@pytest.mark.parametrize(
    "data,reason,words",
    [
        (b"", "malformed", "shorter than the 10-byte header"),
        (b"\x00\x01" + b"\x00" * 20, "malformed", "bad magic"),
        (MAGIC + b"\xff" * 8 + b"\x00", "unknown_schema", "unknown schema fingerprint ffffffffffffffff"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(DecodeError) as e:
        default_codec().decode(data)
    assert e.value.reason == reason
    assert words in str(e.value)


def test_truncated_and_padded_bodies_are_malformed() -> None:
    codec = default_codec()
    data = codec.encode("FeatureLog", FEATURE_LOG)
    with pytest.raises(DecodeError, match="body unreadable") as e:
        codec.decode(data[:-7])
    assert e.value.reason == "malformed"
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(data + b"\x00\x00")


def test_wrong_record_type_is_reported() -> None:
    codec = default_codec()
    with pytest.raises(DecodeError) as e:
        codec.decode(codec.encode("ActionLog", ACTION), expect="FeatureLog")
    assert e.value.reason == "wrong_type" and "got ActionLog" in str(e.value)


def test_encode_rejects_a_record_missing_a_required_field() -> None:
    with pytest.raises(ValueError, match="cannot encode ActionLog"):
        default_codec().encode("ActionLog", {"request_id": "r"})


def test_fids_keep_slots_apart() -> None:
    a, b = fid(2, "2"), fid(8, "2")  # the same raw value in two slots
    assert a != b
    assert slot_of(a) == 2 and slot_of(b) == 8
    assert fid(2, "2") == a  # stable
    assert 0 < a < 2**63 and a >> HASH_BITS == 2


def test_cross_fids_come_from_the_source_fids_in_their_order() -> None:
    a, b = fid(1, 42), fid(7, "Drama")
    c = cross_fid(10, a, b)
    assert slot_of(c) == 10 and c == cross_fid(10, a, b)
    assert c != cross_fid(10, b, a) and c != cross_fid(11, a, b)
