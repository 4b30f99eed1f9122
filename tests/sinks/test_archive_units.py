"""Pure logic of the archive: Parquet mapping, hour layout, the dedup index. No services."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from archive_helpers import SPEC, make_examples, normalize
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import default_codec
from schemas.spec import FeatureSpec, merge
from sinks import layout
from sinks.archive import SeenIds
from sinks.fastdecode import decode_table
from sinks.fastdecode import header as fast_header
from sinks.table import archive_schema, conform, label_array, slot_arrays, sort_by_time, to_records, to_table

SCHEMA = archive_schema(SPEC)
slot_names = st.sampled_from([*SPEC.model_slots, "other_slot", "x"])
example = st.fixed_dictionaries({
    "example_id": st.text(min_size=1, max_size=8), "request_id": st.text(max_size=8),
    "item_id": st.integers(-2**63, 2**63 - 1), "user_id": st.integers(-2**63, 2**63 - 1),
    "ts_ms": st.integers(0, 2**45),
    "sparse": st.dictionaries(slot_names, st.lists(st.integers(-2**63, 2**63 - 1), max_size=4), max_size=5),
    "dense": st.dictionaries(st.text(max_size=4), st.floats(width=32, allow_nan=False), max_size=3),
    "labels": st.dictionaries(st.sampled_from(["click", "like", "share"]), st.integers(0, 1)),
    "sample_rate": st.floats(0.125, 1.0, width=32), "late": st.booleans(),
    "join_delay_ms": st.integers(0, 10**9), "kind": st.sampled_from(["window", "late"]),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(example, max_size=20))
def test_table_round_trip_any_examples(records):
    """Every field survives, incl. absent vs empty slots and slots outside the contract."""
    table = to_table(records, SCHEMA)
    assert table.schema.equals(SCHEMA) and table.num_rows == len(records)
    assert to_records(table) == records


def test_table_round_trip_realistic():
    recs = [normalize(r) for r in make_examples(500)]
    assert to_records(to_table(recs, SCHEMA)) == recs


def test_slot_arrays_are_numpy_offsets_and_fids_even_on_a_slice():
    recs = [normalize(r) for r in make_examples(50, seed=2)]
    batch = to_table(recs, SCHEMA).to_batches()[0].slice(7, 20)
    offsets, fids = slot_arrays(batch, "genre")
    assert isinstance(fids, np.ndarray) and fids.dtype == np.int64
    assert len(offsets) == 21 and offsets[0] == 0
    for i, r in enumerate(recs[7:27]):
        assert fids[offsets[i]:offsets[i + 1]].tolist() == r["sparse"].get("genre", [])


def test_label_array_per_task():
    recs = [normalize(r) for r in make_examples(30, seed=3)]
    recs[4]["labels"] = {"click": 1}  # no "like"
    batch = to_table(recs, SCHEMA).to_batches()[0]
    assert label_array(batch, "click").tolist() == [r["labels"]["click"] for r in recs]
    assert label_array(batch, "like", missing=-1).tolist() == [r["labels"].get("like", -1) for r in recs]
    assert label_array(batch, "share").tolist() == [0] * 30


def test_files_of_an_older_or_newer_spec_read_under_this_one():
    """A slot added since a file was written reads as null there; one the reader's spec lacks is left out."""
    recs = [normalize(r) for r in make_examples(5)]
    older = FeatureSpec.model_validate(merge(SPEC.model_dump(), {"slots": {"year": {"retired": True}}}))
    newer = FeatureSpec.model_validate(merge(SPEC.model_dump(), {"slots": {"device": {"number": 30, "side": "user"}}}))
    old_table = to_table(recs, archive_schema(older))
    assert "sparse_year" not in old_table.column_names
    assert [r["sparse"]["year"] for r in to_records(old_table)] == [r["sparse"]["year"] for r in recs]  # in extra
    fixed = conform(old_table.drop_columns(["sparse_extra"]), SCHEMA)
    assert fixed.schema.equals(SCHEMA)
    assert fixed.column("sparse_year").null_count == 5 and fixed.column("sparse_extra").null_count == 5
    newer_table = to_table(recs, archive_schema(newer))
    assert newer_table.column("sparse_device").null_count == 5
    back = conform(newer_table, SCHEMA)
    assert back.schema.equals(SCHEMA) and to_records(back) == recs


def test_sort_by_time_orders_by_ts_then_id():
    t = pa.table({"ts_ms": [3, 1, 3, 2], "example_id": ["b", "z", "a", "y"]})
    out = sort_by_time(t)
    assert out.column("ts_ms").to_pylist() == [1, 2, 3, 3]
    assert out.column("example_id").to_pylist() == ["z", "y", "a", "b"]


def test_hour_layout_and_parsing():
    ts = int(datetime(2026, 11, 24, 5, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)
    h = layout.hour_of(ts)
    assert layout.hour_dir(h) == "examples/dt=2026-11-24/hour=05"
    assert layout.hour_of(ts + 1) == h + 1
    for text in ("2026-11-24T05", "2026-11-24/05", "dt=2026-11-24/hour=05", "examples/dt=2026-11-24/hour=05",
                 datetime(2026, 11, 24, 5, 30)):
        assert layout.parse_hour(text) == h
    assert layout.parse_hour("2026-11-24") == h - 5
    assert layout.hour_from_dir("dt=2026-11-24", "hour=05") == h
    assert layout.hour_from_dir("_tmp", "x") is None
    with pytest.raises(ValueError, match="not an hour"):
        layout.parse_hour("yesterday")
    end = (h + 1) * layout.HOUR_MS
    assert not layout.closed(h, end + 599_999, 600_000) and layout.closed(h, end + 600_000, 600_000)
    assert layout.data_file(h, 12, late=True).endswith("/late-0000000012.parquet")


def test_seen_ids_reload_evicted_hours_but_never_pinned_ones():
    loads = []
    stored = {1: {"a"}, 2: set(), 3: set()}

    def load(hour):
        loads.append(hour)
        return set(stored[hour])

    pinned = {2}
    seen = SeenIds(load, max_hours=1, pinned=lambda: pinned)
    assert not seen.add(1, "a")  # committed before: a duplicate
    assert seen.add(2, "b")  # new, buffered (pinned)
    assert seen.add(3, "c")  # evicts hour 1 (not pinned) but keeps 2
    assert not seen.add(2, "b")  # still known without a reload
    assert loads == [1, 2, 3]
    assert not seen.add(1, "a") and loads[-1] == 1  # hour 1 reloaded from "files"


@settings(max_examples=60, deadline=None)
@given(st.lists(example, min_size=1, max_size=30))
def test_fast_decoder_equals_codec_then_to_table(records):
    """The compiled Avro -> Arrow pass gives exactly the codec's records, column for column."""
    codec = default_codec()
    data = [codec.encode("TrainingExample", r) for r in records]
    fast = decode_table(data, SCHEMA)
    assert fast is not None
    assert fast.equals(to_table([codec.decode(d)[1] for d in data], SCHEMA))


def test_fast_decoder_refuses_what_it_cannot_read_exactly():
    codec = default_codec()
    data = [codec.encode("TrainingExample", normalize(r)) for r in make_examples(20, seed=4)]
    assert fast_header() == data[0][:10]  # the decoder knows the current schema
    assert decode_table(data, SCHEMA) is not None
    assert decode_table([*data[:5], data[5][:-3], *data[6:]], SCHEMA) is None  # truncated body
    assert decode_table([*data[:5], data[5] + b"\x00", *data[6:]], SCHEMA) is None  # trailing bytes


def test_fast_decoder_leaves_repeated_map_keys_and_bad_utf8_to_the_codec():
    """A dense map with a key twice reads last-wins (as fastavro and Apache Avro read it), never
    two entries; a string that is not UTF-8 is not written (the codec refuses the message)."""
    codec = default_codec()
    rec = normalize(make_examples(1, seed=5)[0])
    rec["dense"] = {"zzdense": 1.0}
    data = codec.encode("TrainingExample", rec)
    entry = b"\x0ezzdense" + data[data.index(b"\x0ezzdense") + 8:][:4]
    at = data.index(entry)
    assert data[at - 1:at] == b"\x02"  # a one-entry block
    twice = data[:at - 1] + b"\x04" + entry + b"\x0ezzdense" + b"\x00\x00\x00\x40" + data[at + len(entry):]
    assert codec.decode(twice)[1]["dense"] == {"zzdense": 2.0}  # fastavro: the last one wins
    assert decode_table([data, twice], SCHEMA) is None  # the fast path gives it to the codec ...
    table = to_table([codec.decode(d)[1] for d in (data, twice)], SCHEMA)
    assert table.column("dense").to_pylist()[1] == [("zzdense", 2.0)]
    rid = rec["request_id"].encode()
    bad = data.replace(rid, rid[:-1] + b"\xff", 1)
    assert decode_table([data, bad], SCHEMA) is None
    with pytest.raises(Exception, match="utf-8|UTF-8|decode"):
        codec.decode(bad)
