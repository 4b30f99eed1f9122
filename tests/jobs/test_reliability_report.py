"""`make reliability`'s tables: every measured row lands in the table of what it measured."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from jobs.reliability_report import main, render


def test_rows_go_to_the_tables_of_what_they_measured(tmp_path: Path, capsys) -> None:
    rows = [
        {"what": "joiner kill -9", "kills": 5, "examples": 42558, "lost": 0, "identical": True},
        {"what": "hostile input: Flink job", "inputs": 10000, "crashes": 0, "dead_letters": {"malformed": 7}},
        {"what": "sustained load", "seconds": 120.0, "rss_start_mb": 300, "rss_end_mb": 310},
    ]
    tables = render(rows)
    assert [t.title for t in tables] == ["streamrec reliability: kills and outages",
                                        "streamrec reliability: hostile input",
                                        "streamrec reliability: sustained load", None]
    assert [t.row_count for t in tables] == [1, 1, 1, 1]
    kills = tables[0]
    assert [c.header for c in kills.columns] == ["what was done", "kills", "examples", "lost", "identical"]
    assert list(kills.columns[2].cells) == ["42,558"]
    console = Console(width=200, record=True)
    for t in tables:
        console.print(t)
    text = console.export_text()
    assert "malformed" in text and "Flink job" in text and "310" in text

    report = tmp_path / "r.json"
    report.write_text(json.dumps(rows))
    assert main([str(report)]) == 0
    assert "hostile input" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.json")]) == 2
