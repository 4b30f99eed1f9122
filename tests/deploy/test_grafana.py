"""deploy/grafana/streamrec.json queries only metrics the stages export, by the names they export (the Flink
job's, as Flink's Prometheus reporter names them: tests/jobs/test_flink_join.py scrapes those live)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamrec.json"


def exported_names() -> set[str]:
    """Every metric name of the join (its collector over a stand-in engine), the archive and the trainer."""
    import sinks.archive  # noqa: F401 - registers the archive's metrics
    import trainer.metrics  # noqa: F401 - and the trainer's
    from jobs.join_runner import _Metrics

    store = SimpleNamespace(hits=1, misses=1, cached_bytes=1, cache={}, size_bytes=lambda: 1)
    engine = SimpleNamespace(counts=Counter(), dropped=Counter(), dead_reasons=Counter(), store=store, watermark=1)
    join = CollectorRegistry()
    join.register(_Metrics(SimpleNamespace(engine=engine, lag=0)))
    text = generate_latest(join).decode() + generate_latest(REGISTRY).decode()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | set(re.findall(r"^([a-z_]+)[{ ]", text, re.M))
    return {n for n in names if n.startswith("streamrec_")}


def test_the_dashboard_queries_exported_metrics() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\bstreamrec_[a-z_]+", e)}
    exported = exported_names()
    assert len(used) >= 10 and "streamrec_join_cache_hits_total" in exported
    assert used <= exported, sorted(used - exported)
    from jobs.flink.metrics import METRICS, PROMETHEUS_PREFIX

    flink = {n for e in exprs for n in re.findall(r"\bflink_taskmanager_job_task_operator_[a-z_]+", e)}
    assert len(flink) >= 4 and flink <= {PROMETHEUS_PREFIX + m for m in METRICS.values()}, sorted(flink)
