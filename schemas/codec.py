"""Avro single-object encoding (magic ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body).

Every message names its writer schema by fingerprint, so a consumer decodes old and new
messages without a registry service: it knows the current schemas and the ones kept under
``avro/history``, and resolves any of them into the current reader schema (Avro's rules:
fields added with defaults are filled, removed fields are skipped).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
AVRO_DIR = Path(__file__).parent / "avro"
RECORD_NAMES = ("FeatureLog", "ActionLog", "TrainingExample", "DeadLetter")

class DecodeError(ValueError):
    """A message that cannot be read; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as written after the magic
    text: str  # the .avsc as read: kept, since the file may be gone later (a job's shipped copy)

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def schema_fingerprint(raw: Any) -> bytes:
    """The 8 header bytes: CRC-64-AVRO of the parsing canonical form, little-endian.

    fastavro's hex string is already in that byte order.
    """
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))


def load_schema(path: Path) -> Schema:
    text = path.read_text()
    raw = json.loads(text)
    parsed = fastavro.parse_schema(raw)  # keeps the "parsed" hint: readers then skip re-parsing
    return Schema(raw["name"], parsed, schema_fingerprint(raw), text)


class Codec:
    """Encodes with the current schemas; decodes any known writer schema into the current reader.

    Pass ``extra_writers`` (older or foreign schema files) to read messages written with them.
    """

    def __init__(self, avro_dir: Path = AVRO_DIR, extra_writers: tuple[Path, ...] = ()):
        self.current: dict[str, Schema] = {}
        for name in RECORD_NAMES:
            self.current[name] = load_schema(avro_dir / f"{name}.avsc")
        self.writers: dict[bytes, Schema] = {s.fingerprint: s for s in self.current.values()}
        for path in [*sorted((avro_dir / "history").glob("*.avsc")), *extra_writers]:
            s = load_schema(path)
            self.writers.setdefault(s.fingerprint, s)

    def encode(self, name: str, record: dict[str, Any], schema: Schema | None = None) -> bytes:
        schema = schema or self.current[name]
        buf = io.BytesIO()
        buf.write(schema.header)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"cannot encode {name}: {e}") from e
        return buf.getvalue()

    def writer_of(self, data: bytes) -> Schema:
        if len(data) < HEADER_LEN:
            raise DecodeError("malformed", f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MAGIC:
            raise DecodeError("malformed", f"bad magic {data[:2].hex()} (expected c301)")
        writer = self.writers.get(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise DecodeError("unknown_schema", f"unknown schema fingerprint {data[2:HEADER_LEN].hex()}")
        return writer

    def decode(self, data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """Return (record name, record read with the current reader schema of that name)."""
        writer = self.writer_of(data)
        if expect is not None and writer.name != expect:
            raise DecodeError("wrong_type", f"expected {expect}, got {writer.name}")
        reader = self.current.get(writer.name)
        if reader is None:
            raise DecodeError("unknown_schema", f"no current schema for {writer.name}")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer is reader:
                record = fastavro.schemaless_reader(buf, writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as e:  # fastavro raises many types on corrupt input
            raise DecodeError("malformed", f"{writer.name} body unreadable: {type(e).__name__}: {e}") from None
        if buf.tell() != len(data):
            raise DecodeError("malformed", f"{len(data) - buf.tell()} trailing bytes after {writer.name}")
        return writer.name, record


@cache
def default_codec() -> Codec:
    return Codec()
