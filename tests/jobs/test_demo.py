"""`streamrec demo` end to end on a MovieLens slice: every stage matches the reference join, AUC beats the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.procs import port_open
from jobs.demo import run_demo
from streamrec.config import load_config


@pytest.mark.slow
def test_demo_report_is_consistent(tmp_path: Path) -> None:
    s = load_config(None, [f'stack.run_dir="{tmp_path}"', "replay.limit=20000"])
    report = run_demo(s, down=True, timeout_s=900)

    assert not (tmp_path / "kafka" / "broker.pid").exists()  # --down stopped our broker
    assert not port_open(int(s.kafka.bootstrap.rsplit(":", 1)[1]))
    for name, check in report["checks"].items():
        assert check["ok"], f"{name}: {check}"
    j, r, ref, checks = report["join"], report["replay"], report["reference"], report["checks"]
    assert r["requests"] == 20_000 and r["shown_items"] == 200_000
    # the expected outcome is the reference join of the same replay, and every stage was checked against it
    assert ref["examples"] == ref["positives"] + ref["negatives_kept"] + ref["late"] == j["examples"] > 0
    for k in ("positives", "negatives_kept", "negatives_dropped", "late"):
        assert checks[f"joiner {k.replace('_', ' ')} = reference"]["want"] == ref[k]
    assert checks["trainer learned from every reference example once"]["want"] == ref["examples"]
    # the archive check read the ids back from the Parquet files: a real digest, the reference's
    digest = checks["archive: example ids = reference's (sorted-ids sha1)"]
    assert len(digest["got"]) == 40 and digest["got"] == ref["ids_sha1"]
    assert checks["archive: distinct example ids = reference examples"]["got"] == ref["examples"]
    assert checks["archive: no example id twice"]["got"] == 0
    # sampling kept about r of the negatives
    negatives = j["negatives_kept"] + j["negatives_dropped"]
    assert negatives > 0 and abs(j["negatives_kept"] / negatives - s.joiner.negative_keep_rate) < 0.01
    assert j["late"] > 0  # the heavy delay tail produced late positives
    assert report["train"]["auc"] > report["train"]["baseline_auc"]
    # a serving replica applied the trainer's deltas: it holds every row training holds, and measured freshness
    sv = report["serving"]
    assert sv["rows"] == report["train"]["rows"] and sv["deltas"] > 0
    assert 0 <= sv["freshness_p50_s"] <= sv["freshness_p99_s"] < 120
    run = sorted((tmp_path / "demo").glob("2*"))[-1]
    for f in ("report.md", "report.json", "auc.png", "freshness.png"):
        assert (run / f).stat().st_size > 0, f
    assert json.loads((run / "report.json").read_text())["checks"] == report["checks"]
    assert "progressive click AUC" in (run / "report.md").read_text()
