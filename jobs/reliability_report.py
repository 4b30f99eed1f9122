"""`make reliability`'s table: what the reliability tests broke and what came out of it.

The tests marked ``reliability`` record their measurements (``tests/conftest.py: reliability``)
into a JSON file given with ``pytest --reliability-report``; this prints it as one table, and
a second with the dead letters of the hostile-input runs by reason.
Usage: python -m jobs.reliability_report .run/reliability.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

GROUPS = {  # one table each, with the rows that measured any of its columns
    "kills and outages": ("kills", "outages", "examples", "lost", "duplicates", "identical", "equals_clean_run"),
    "hostile input": ("inputs", "crashes"),
    "sustained load": ("seconds", "achieved_rate", "rss_start_mb", "rss_end_mb", "rocksdb_start_mb",
                       "rocksdb_end_mb", "rocksdb_peak_first_half_mb", "rocksdb_peak_second_half_mb", "max_lag"),
}


def _cell(v: object) -> str:
    if v is None:
        return ""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def render(rows: list[dict]) -> list[Table]:
    tables = []
    for title, group in GROUPS.items():
        mine = [r for r in rows if any(c in r for c in group)]
        cols = [c for c in group if any(c in r for r in mine)]
        if not mine:
            continue
        t = Table("what was done", *cols, title=f"streamrec reliability: {title}", title_justify="left")
        for r in mine:
            t.add_row(r["what"], *(_cell(r.get(c)) for c in cols))
        tables.append(t)
    dead = [r for r in rows if "dead_letters" in r]
    if dead:
        reasons = sorted({k for r in dead for k in r["dead_letters"]})
        t = Table("hostile input: dead letters by reason", *(r["what"].split(": ")[-1] for r in dead))
        for k in reasons:
            t.add_row(k, *(f"{r['dead_letters'].get(k, 0):,}" for r in dead))
        tables.append(t)
    return tables


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0] if args else ".run/reliability.json")
    if not path.exists():
        print(f"no reliability report at {path}: run `make reliability`", file=sys.stderr)
        return 2
    console = Console(width=max(Console().width, 150))  # a log file is not 80 columns
    for t in render(json.loads(path.read_text())):
        console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
