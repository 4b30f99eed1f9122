"""Batch-training reader: TrainingExample RecordBatches over a dt/hour range, from local or HDFS.

Hours come in order; within an hour the rows are in event-time order (``ts_ms``, then
``example_id``), on-time and late files merged. Each batch is a ``pyarrow.RecordBatch`` with the
schema of ``sinks.table.archive_schema(spec)`` for the reader's feature spec, whatever spec each
file was written under (a slot added since reads as null; numpy-ready:
``batch.column("ts_ms").to_numpy()``, ``sinks.table.slot_arrays(batch, "user_id")`` for a slot's FIDs).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.spec import FeatureSpec
from sinks import layout
from sinks.fs import FileSystem, make_fs
from sinks.table import archive_schema, conform, sort_by_time

HourLike = int | str | datetime


class ArchiveReader:
    def __init__(self, fs: FileSystem, spec: FeatureSpec | list[str]):
        self.fs = fs
        self.schema = archive_schema(spec)

    def hours(self, start: HourLike | None = None, end: HourLike | None = None,
              complete_only: bool = False) -> list[int]:
        """Hour indexes with data in [start, end) (both optional), ascending."""
        lo = layout.parse_hour(start) if start is not None else None
        hi = layout.parse_hour(end) if end is not None else None
        out = []
        for dt in self.fs.list(layout.EXAMPLES):
            for hh in self.fs.list(f"{layout.EXAMPLES}/{dt}"):
                h = layout.hour_from_dir(dt, hh)
                if h is None or (lo is not None and h < lo) or (hi is not None and h >= hi):
                    continue
                if complete_only and not self.is_complete(h):
                    continue
                out.append(h)
        return sorted(out)

    def is_complete(self, hour: int) -> bool:
        return self.fs.exists(f"{layout.hour_dir(hour)}/{layout.SUCCESS}")

    def files(self, hour: int, include_late: bool = True) -> list[str]:
        d = layout.hour_dir(hour)
        return [f"{d}/{n}" for n in self.fs.list(d)
                if layout.is_data_file(n) and (include_late or n.startswith("part-"))]

    def read_hour(self, hour: int, columns: list[str] | None = None, include_late: bool = True) -> pa.Table:
        """One hour as a table in event-time order."""
        need = None if columns is None else list(dict.fromkeys([*columns, "ts_ms", "example_id"]))
        tables = [conform(pq.read_table(io.BytesIO(self.fs.read_bytes(p))), self.schema)
                  for p in self.files(hour, include_late)]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        table = sort_by_time(table if need is None else table.select(need))
        return table if columns is None else table.select(columns)

    def batches(self, start: HourLike | None = None, end: HourLike | None = None, *,
                batch_rows: int = 65_536, columns: list[str] | None = None,
                complete_only: bool = False, include_late: bool = True) -> Iterator[pa.RecordBatch]:
        """RecordBatches of at most ``batch_rows`` rows, hour by hour in [start, end)."""
        for hour in self.hours(start, end, complete_only):
            yield from self.read_hour(hour, columns, include_late).to_batches(max_chunksize=batch_rows)

    def example_ids(self, start: HourLike | None = None, end: HourLike | None = None) -> list[str]:
        """Every archived ``example_id`` in [start, end), duplicates included (reads only that column)."""
        ids: list[str] = []
        for hour in self.hours(start, end):
            for p in self.files(hour):
                ids += pq.read_table(io.BytesIO(self.fs.read_bytes(p)), columns=["example_id"]).column(0).to_pylist()
        return ids

    def count(self, start: HourLike | None = None, end: HourLike | None = None) -> int:
        n = 0
        for hour in self.hours(start, end):
            for p in self.files(hour):
                n += pq.ParquetFile(io.BytesIO(self.fs.read_bytes(p))).metadata.num_rows
        return n


def open_archive(settings: Any) -> ArchiveReader:
    """The reader on the archive that ``settings.archive`` names."""
    return ArchiveReader(make_fs(settings.archive, settings.stack.run_dir), settings.features)
