"""Where things live in the archive (relative to its root).

    examples/dt=YYYY-MM-DD/hour=HH/part-<seq>.parquet   on-time examples of that event-time hour (UTC)
    examples/dt=YYYY-MM-DD/hour=HH/late-<seq>.parquet   examples that came after the hour had closed
    examples/dt=YYYY-MM-DD/hour=HH/_SUCCESS             the hour is complete (watermark passed it + lateness)
    _manifests/<seq>.json                              one per commit: files, Kafka offsets, watermark
    _tmp/                                              files in progress, renamed into place on commit

An hour is identified by its index ``ts_ms // 3_600_000`` (hours since the epoch, UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

HOUR_MS = 3_600_000
EXAMPLES = "examples"
MANIFESTS = "_manifests"
TMP = "_tmp"
SUCCESS = "_SUCCESS"
_DIR_RE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


def hour_of(ts_ms: int) -> int:
    return ts_ms // HOUR_MS


def hour_dir(hour: int) -> str:
    t = datetime.fromtimestamp(hour * 3600, UTC)
    return f"{EXAMPLES}/dt={t:%Y-%m-%d}/hour={t:%H}"


def hour_label(hour: int) -> str:
    t = datetime.fromtimestamp(hour * 3600, UTC)
    return f"{t:%Y-%m-%dT%H}"


def parse_hour(value: int | str | datetime) -> int:
    """An hour index from an index, a datetime (naive = UTC), or text: '2026-11-24T05', '2026-11-24/05',
    'dt=2026-11-24/hour=05', or a date alone ('2026-11-24' = its hour 00)."""
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        t = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(t.timestamp()) // 3600
    text = value.strip()
    m = _DIR_RE.match(text.removeprefix(EXAMPLES + "/"))
    if m:
        text = f"{m.group(1)}T{m.group(2)}"
    text = text.replace("/", "T")
    for fmt in ("%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()) // 3600
        except ValueError:
            continue
    raise ValueError(f"not an hour: {value!r} (expected e.g. 2026-11-24T05 or dt=2026-11-24/hour=05)")


def hour_from_dir(dt_name: str, hour_name: str) -> int | None:
    """'dt=2026-11-24', 'hour=05' -> hour index (None if the names are not partition names)."""
    m = _DIR_RE.match(f"{dt_name}/{hour_name}")
    return parse_hour(f"{m.group(1)}T{m.group(2)}") if m else None


def data_file(hour: int, seq: int, late: bool) -> str:
    return f"{hour_dir(hour)}/{'late' if late else 'part'}-{seq:010d}.parquet"


def is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and name.startswith(("part-", "late-"))


def manifest_file(seq: int) -> str:
    return f"{MANIFESTS}/{seq:012d}.json"


def closed(hour: int, watermark_ms: int, lateness_ms: int) -> bool:
    """An hour is closed once the watermark is past its end plus the allowed lateness."""
    return watermark_ms >= (hour + 1) * HOUR_MS + lateness_ms
