"""Commit manifests: the archive's only mutable state, one immutable JSON file per commit.

A commit is published by renaming its manifest into ``_manifests/`` (atomic on a local disk and on
HDFS). The manifest names the data files of the commit (their temporary and final names), the
Kafka offsets the archive now covers, the watermark, and the hours it marks complete. A crash
before the rename loses only uncommitted work (re-read from Kafka); a crash after it is finished on
restart by replaying the renames ("roll forward"), which are idempotent.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from sinks import layout
from sinks.fs import FileSystem

_NAME = re.compile(r"^(\d{12})\.json$")


@dataclass
class FileEntry:
    tmp: str
    path: str
    rows: int
    hour: int
    late: bool


@dataclass
class Manifest:
    seq: int
    topic: str
    offsets: dict[int, int]  # partition -> next offset to read: everything before it is archived
    from_offsets: dict[int, int]  # where this commit's input started
    watermark_ms: int
    partition_max_ms: dict[int, int]  # largest ts_ms read per partition (the watermark's inputs)
    open_hours: list[int]  # hours with data that are not yet marked complete
    files: list[FileEntry] = field(default_factory=list)
    success: list[int] = field(default_factory=list)  # hours this commit marks complete
    committed_at_ms: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # running counts, for status and tests

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        d = json.loads(data)
        d["offsets"] = {int(k): int(v) for k, v in d["offsets"].items()}
        d["from_offsets"] = {int(k): int(v) for k, v in d["from_offsets"].items()}
        d["partition_max_ms"] = {int(k): int(v) for k, v in d["partition_max_ms"].items()}
        d["files"] = [FileEntry(**f) for f in d["files"]]
        return cls(**d)


def manifest_seqs(fs: FileSystem) -> list[int]:
    return sorted(int(m.group(1)) for n in fs.list(layout.MANIFESTS) if (m := _NAME.match(n)))


def latest(fs: FileSystem) -> Manifest | None:
    seqs = manifest_seqs(fs)
    return Manifest.from_json(fs.read_bytes(layout.manifest_file(seqs[-1]))) if seqs else None
