"""The archive dumper against the real broker, on a local directory and on the real HDFS."""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from archive_helpers import BASE_MS, SPEC, make_examples, normalize
from confluent_kafka import TopicPartition

from schemas.codec import default_codec
from sinks import layout, manifest
from sinks.archive import Archiver
from sinks.fs import FileSystem
from sinks.reader import ArchiveReader
from sinks.table import to_records
from streamrec.kafka import consumer, drain, producer

HOUR = layout.HOUR_MS


def archived(fs: FileSystem) -> list[dict]:
    out = []
    for batch in ArchiveReader(fs, SPEC).batches(batch_rows=500):
        out.extend(to_records(batch))
    return out


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["example_id"]: r for r in records}


def topic_examples(settings) -> list[dict]:
    codec = default_codec()
    return [codec.decode(m.value(), expect="TrainingExample")[1]
            for m in drain(settings.kafka, [settings.kafka.topics.examples], idle_s=1.0)]


def test_round_trip_equals_topic(target, fast_settings, produce_examples):
    """Archive content == the topic's distinct examples; hours in order, rows in event-time order."""
    name, fs = target
    recs = make_examples(3000, start_ms=BASE_MS + 40 * 60_000, step_ms=3_000)  # 2.5 hours
    produce_examples(recs + recs[100:400])  # 300 duplicates (an at-least-once producer)
    stats = Archiver(fast_settings, fs).run(idle_s=1.5, max_s=60)

    got = archived(fs)
    want = by_id(topic_examples(fast_settings))
    assert len(want) == 3000
    assert Counter(r["example_id"] for r in got).most_common(1)[0][1] == 1, "an example archived twice"
    assert by_id(got) == want
    assert stats.duplicates == 300 and stats.archived == 3000

    # partitions by event hour, sorted by ts within each hour
    reader = ArchiveReader(fs, SPEC)
    hours = reader.hours()
    assert hours == sorted({layout.hour_of(r["ts_ms"]) for r in recs})
    for h in hours:
        ts = reader.read_hour(h, columns=["ts_ms"]).column("ts_ms").to_pylist()
        assert ts == sorted(ts) and all(layout.hour_of(t) == h for t in ts)
    # the newest manifest covers exactly what was produced, per partition
    m = manifest.latest(fs)
    c = consumer(fast_settings.kafka)
    try:
        for p, off in m.offsets.items():
            lo, hi = c.get_watermark_offsets(TopicPartition(fast_settings.kafka.topics.examples, p), 5)
            assert lo <= off
    finally:
        c.close()
    assert sum(m.offsets.values()) == 3300
    assert m.totals["examples"] == 3000 and m.totals["duplicates"] == 300
    # each data file records its commit in the Parquet metadata
    f = reader.files(hours[0])[0]
    meta = pq.ParquetFile(io.BytesIO(fs.read_bytes(f))).schema_arrow.metadata
    assert meta[b"streamrec.topic"].decode() == fast_settings.kafka.topics.examples
    first = manifest.Manifest.from_json(fs.read_bytes(layout.manifest_file(int(meta[b"streamrec.commit"]))))
    assert {int(k): v for k, v in json.loads(meta[b"streamrec.offsets"]).items()} == first.offsets


def test_restart_resumes_and_drops_old_duplicates(target, fast_settings, produce_examples):
    """A second run reads only what is new; re-sent examples committed by the first run are dropped."""
    _, fs = target
    first = make_examples(800, step_ms=2_000, seed=3)
    produce_examples(first)
    s1 = Archiver(fast_settings, fs).run(idle_s=1.0, max_s=60)
    assert s1.archived == 800
    files_before = {h: ArchiveReader(fs, SPEC).files(h) for h in ArchiveReader(fs, SPEC).hours()}

    # a run with nothing new commits nothing
    s_idle = Archiver(fast_settings, fs).run(idle_s=0.8, max_s=30)
    assert s_idle.consumed == 0 and s_idle.commits == 0

    second = make_examples(400, start_ms=BASE_MS + 800 * 2_000, step_ms=2_000, seed=4)
    produce_examples(first[:200] + second)  # 200 re-sent old examples
    s2 = Archiver(fast_settings, fs).run(idle_s=1.0, max_s=60)
    assert s2.consumed == 600 and s2.duplicates == 200 and s2.archived == 400
    got = archived(fs)
    assert len(got) == 1200 and by_id(got) == by_id([normalize(r) for r in first + second])
    for h, files in files_before.items():  # committed files are never rewritten or removed
        assert set(files) <= set(ArchiveReader(fs, SPEC).files(h))


def test_success_only_after_hour_complete(target, fast_settings, produce_examples):
    """_SUCCESS waits for watermark > hour end + lateness; later examples go to a late file."""
    _, fs = target
    lateness = fast_settings.archive.allowed_lateness_ms  # 10 min
    h0 = layout.hour_of(BASE_MS)
    hour0 = make_examples(120, start_ms=BASE_MS, step_ms=30_000, seed=5)  # the whole of hour 0
    early1 = make_examples(10, start_ms=BASE_MS + HOUR + 60_000, step_ms=10_000, seed=6)  # inside lateness
    produce_examples(hour0 + early1)
    Archiver(fast_settings, fs).run(idle_s=1.0, max_s=60)
    reader = ArchiveReader(fs, SPEC)
    assert reader.hours() == [h0, h0 + 1]
    assert not reader.is_complete(h0), "hour closed before the allowed lateness passed"

    # an example still inside the lateness belongs to hour 0 on time
    straggler = make_examples(1, start_ms=BASE_MS + HOUR - 1, seed=7, tag="s")
    closer = make_examples(1, start_ms=BASE_MS + HOUR + lateness, seed=8, tag="c")  # watermark = end + lateness
    produce_examples(straggler + closer)
    Archiver(fast_settings, fs).run(idle_s=1.0, max_s=60)
    assert reader.is_complete(h0) and not reader.is_complete(h0 + 1)
    assert reader.hours(complete_only=True) == [h0]
    assert reader.hours(start=h0 + 1) == [h0 + 1] and reader.hours(end=h0 + 1) == [h0]
    assert sum(b.num_rows for b in reader.batches(h0, h0 + 1, batch_rows=50)) == 121
    hour0_ids = {r["example_id"] for r in to_records(reader.read_hour(h0))}
    assert hour0_ids == {r["example_id"] for r in hour0 + straggler}
    assert all(f.rsplit("/", 1)[1].startswith("part-") for f in reader.files(h0))
    parts = {f: fs.read_bytes(f) for f in reader.files(h0)}

    # a late example for the closed hour: its own late file, committed files untouched
    late = make_examples(1, start_ms=BASE_MS + 5_000, seed=9, tag="l")
    produce_examples(late)
    st = Archiver(fast_settings, fs).run(idle_s=1.0, max_s=60)
    assert st.late == 1
    late_files = [f for f in reader.files(h0) if "/late-" in f]
    assert len(late_files) == 1
    assert [r["example_id"] for r in to_records(pq.read_table(io.BytesIO(fs.read_bytes(late_files[0]))))] == [
        late[0]["example_id"]]
    assert all(fs.read_bytes(f) == data for f, data in parts.items())
    assert reader.is_complete(h0)
    assert json.loads(fs.read_bytes(f"{layout.hour_dir(h0)}/_SUCCESS"))["watermark_ms"] >= (h0 + 1) * HOUR + lateness


def test_bad_messages_go_to_dead_letter(fast_settings, local_fs, produce_examples):
    recs = make_examples(50, seed=10)
    produce_examples(recs[:25])
    p = producer(fast_settings.kafka)
    p.produce(fast_settings.kafka.topics.examples, b"not avro at all", key=b"k")
    p.produce(fast_settings.kafka.topics.examples, default_codec().encode(
        "ActionLog", {"request_id": "r", "item_id": 1, "action": "click", "ts_ms": 1}), key=b"r")
    assert p.flush(10) == 0
    produce_examples(recs[25:])
    st = Archiver(fast_settings, local_fs).run(idle_s=1.0, max_s=60)
    assert st.dead_letters == 2 and st.archived == 50
    assert by_id(archived(local_fs)) == by_id([normalize(r) for r in recs])
    codec = default_codec()
    dead = [codec.decode(m.value(), expect="DeadLetter")[1]
            for m in drain(fast_settings.kafka, [fast_settings.kafka.topics.dead_letter], idle_s=1.0)]
    assert sorted(d["reason"] for d in dead) == ["malformed", "wrong_type"]
    assert {d["source_topic"] for d in dead} == {fast_settings.kafka.topics.examples}


def test_wrong_topic_for_archive_is_refused(fast_settings, local_fs, produce_examples, make_topics):
    produce_examples(make_examples(5, seed=11))
    Archiver(fast_settings, local_fs).run(idle_s=0.8, max_s=30)
    fast_settings.kafka.topics.examples = make_topics(examples=1)["examples"]
    with pytest.raises(Exception, match="kafka.topics.examples"):
        Archiver(fast_settings, local_fs).run(idle_s=0.5, max_s=10)


def test_files_roll_by_size_when_age_is_far(local_fs, fast_settings, produce_examples):
    """``roll_bytes`` alone makes commits: with a roll age far beyond the run, a small byte bound
    still commits one hour in many files, and loses nothing."""
    a = fast_settings.archive
    a.roll_age_s, a.roll_bytes, a.poll_batch = 3600.0, 64 << 10, 100
    recs = make_examples(2000, start_ms=BASE_MS, step_ms=1_000)  # 33 minutes: one hour
    produce_examples(recs)
    stats = Archiver(fast_settings, local_fs).run(idle_s=1.5, max_s=60)
    assert stats.archived == 2000 and by_id(archived(local_fs)) == by_id(topic_examples(fast_settings))
    files = [f for f in local_fs.list(layout.hour_dir(layout.hour_of(BASE_MS))) if f.endswith(".parquet")]
    assert stats.commits >= 4 and len(files) == stats.files >= 4  # by size, not one file per hour
