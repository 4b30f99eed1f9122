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

COLUMNS = ("kills", "outages", "examples", "lost", "duplicates", "identical", "equals_clean_run", "inputs",
           "crashes", "seconds", "achieved_rate", "rss_start_mb", "rss_end_mb", "rocksdb_start_mb",
           "rocksdb_end_mb", "max_lag")


def render(rows: list[dict]) -> list[Table]:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    main = Table("what was done to the pipeline", *cols, title="streamrec reliability")
    for r in rows:
        main.add_row(r["what"], *("" if r.get(c) is None else f"{r[c]:,}" if isinstance(r[c], int) and
                                  not isinstance(r[c], bool) else str(r[c]) for c in cols))
    tables = [main]
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
    console = Console()
    for t in render(json.loads(path.read_text())):
        console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
