"""The demo's report: every stage's counts checked against the reference join (expected vs got),
throughput, AUC vs baseline, freshness, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from jobs.replay import ReplaySummary
from streamrec.config import Settings

console = Console(stderr=True)


def _rate(n: float, seconds: float | None) -> float:
    return n / seconds if seconds else 0.0


def build_report(s: Settings, replay: ReplaySummary, st: dict[str, dict[str, Any]], wall_s: float,
                 join_runtime: str = "join", reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts of every stage, each checked against an independent expectation: the replay's own
    summary or the reference join of the same events (``jobs.demo_reference``), never a stage's
    counters against each other."""
    join, archive, train = st["join"], st["archive"], st["train"]
    ref = reference or {}
    c = dict(join.get("counts", {}))
    ts = train.get("summary", {})
    kinds = ["positives", "negatives_kept", "late"]
    if join_runtime == "flink":
        # Flink's counters stay in the mini cluster; the stage recounted distinct examples by kind
        # and dead letters from the output topics. Sampled-out negatives leave no trace there:
        # shown from the reference, not checked.
        c["negatives_dropped"] = ref.get("negatives_dropped", 0)
    else:
        kinds.insert(2, "negatives_dropped")
    got_dead, want_dead = join.get("dead_reasons", {}), ref.get("dead_letters", {})
    dead = {f"joiner dead letters `{r}` = reference": (got_dead.get(r, 0), want_dead.get(r, 0))
            for r in sorted(got_dead.keys() | want_dead.keys())} or {"joiner dead letters = reference": (0, 0)}
    back = archive.get("read_back", {})
    checks: dict[str, tuple[Any, Any]] = {
        "joiner read every input event": (join.get("consumed", 0), replay.messages),
        **{f"joiner {k.replace('_', ' ')} = reference": (c.get(k, 0), ref.get(k)) for k in kinds},
        **dead,
        "shown items = positives + negatives kept + negatives dropped (reference)": (
            ref.get("positives", 0) + ref.get("negatives_kept", 0) + ref.get("negatives_dropped", 0),
            replay.shown_items),
        "archive: distinct example ids = reference examples": (back.get("distinct"), ref.get("examples")),
        "archive: no example id twice": (back.get("duplicates"), 0),
        "archive: example ids = reference's (sorted-ids sha1)": (back.get("ids_sha1"), ref.get("ids_sha1")),
        "trainer learned from every reference example once": (train.get("examples", 0), ref.get("examples")),
    }
    return {
        "join_runtime": join_runtime,
        "config": {"limit": s.replay.limit, "seed": s.replay.seed, "negative_keep_rate": s.joiner.negative_keep_rate,
                   "window_ms": s.joiner.window_ms, "archive": archive.get("description", s.archive.target)},
        "replay": {"requests": replay.requests, "shown_items": replay.shown_items, "messages": replay.messages,
                   "actions": dict(replay.actions), "bytes": replay.bytes},
        "join": {"events": join.get("consumed", 0), "features": c.get("features", 0), "actions": c.get("actions", 0),
                 "examples": c.get("joined", 0), "positives": c.get("positives", 0),
                 "negatives_kept": c.get("negatives_kept", 0), "negatives_dropped": c.get("negatives_dropped", 0),
                 "late": c.get("late", 0), "dead_letters": join.get("dead_reasons", {})},
        "archive": {k: archive.get(k, 0) for k in ("archived", "late", "duplicates", "files", "commits")},
        "train": {"examples": train.get("examples", 0), "duplicates_dropped": ts.get("duplicates", 0),
                  "auc": ts.get("auc"), "baseline_auc": ts.get("baseline_auc"), "rows": ts.get("rows"),
                  "freshness_p50_s": (ts.get("freshness_p50_ms") or 0) / 1000,
                  "freshness_p99_s": (ts.get("freshness_p99_ms") or 0) / 1000},
        "serving": _serving(st.get("serve", {})),
        "throughput_per_s": {
            "replay messages": _rate(replay.messages, replay.seconds),
            "join events": _rate(join.get("consumed", 0), join.get("run_seconds")),
            "archive examples": _rate(archive.get("archived", 0), archive.get("run_seconds")),
            "train examples": _rate(train.get("examples", 0), train.get("run_seconds")),
        },
        "reference": ref,
        "checks": {k: {"got": a, "want": b, "ok": a is not None and a == b} for k, (a, b) in checks.items()},
        "wall_s": wall_s,
        "freshness": train.get("freshness", []),
    }


def _serving(serve: dict[str, Any]) -> dict[str, Any]:
    st = serve.get("stats") or {}
    ms = (st.get("freshness_p50_ms"), st.get("freshness_p99_ms"))
    return {"freshness_p50_s": None if ms[0] is None else ms[0] / 1000,
            "freshness_p99_s": None if ms[1] is None else ms[1] / 1000,
            "deltas": st.get("freshness_samples", 0), "rows": st.get("rows"), "version": st.get("version")}


def plot_freshness(samples: list[list[int]], path: Path) -> bool:
    if not samples:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = samples[0][0]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot([(t - t0) / 1000 for t, _ in samples], [f / 1000 for _, f in samples], ".-", ms=3)
    ax.set_xlabel("wall time since the first sync (s)")
    ax.set_ylabel("freshness (s)")
    ax.set_title("serving freshness: age of the newest example reflected in the serving PS")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _show(v: Any) -> str:
    """A check's value: counts with thousands separators, digests shortened, absent ones named."""
    if v is None:
        return "missing"
    return f"{v:,}" if isinstance(v, int) else str(v)[:12]


def render_markdown(r: dict[str, Any], run: Path) -> str:
    j, a, t, ref = r["join"], r["archive"], r["train"], r["reference"]
    flink = r["join_runtime"] == "flink"
    lines = [
        "# streamrec demo report", "",
        f"MovieLens-100K, {r['replay']['requests']:,} requests, seed {r['config']['seed']}, "
        f"negative keep rate {r['config']['negative_keep_rate']}, archive: {r['config']['archive']}; "
        f"wall time {r['wall_s']:.0f} s.", "",
        "## Counts", "",
        "| stage | count |", "|---|---|",
        f"| replay: requests / shown items / messages | {r['replay']['requests']:,} / "
        f"{r['replay']['shown_items']:,} / {r['replay']['messages']:,} |",
        *(f"| replay: {k} actions | {v:,} |" for k, v in sorted(r["replay"]["actions"].items())),
        f"| join: events consumed | {j['events']:,} |",
        f"| join: examples (positives + negatives kept + late) | {j['examples']:,} "
        f"({j['positives']:,} + {j['negatives_kept']:,} + {j['late']:,}) |",
        f"| join: negatives dropped by sampling{' (reference: not in Flink output)' if flink else ''} | "
        f"{j['negatives_dropped']:,} |",
        *(f"| join: dead letters `{k}` | {v:,} |" for k, v in sorted(j["dead_letters"].items())),
        f"| reference join: examples (positives + negatives kept + late) / negatives dropped | "
        f"{ref.get('examples', 0):,} ({ref.get('positives', 0):,} + {ref.get('negatives_kept', 0):,} + "
        f"{ref.get('late', 0):,}) / {ref.get('negatives_dropped', 0):,} |",
        *(f"| reference join: dead letters `{k}` | {v:,} |" for k, v in sorted(ref.get("dead_letters", {}).items())),
        f"| archive: examples / late / duplicates dropped / files | {a['archived']:,} / {a['late']:,} / "
        f"{a['duplicates']:,} / {a['files']:,} |",
        f"| train: examples / duplicates dropped / embedding rows | {t['examples']:,} / "
        f"{t['duplicates_dropped']:,} / {t['rows']} |", "",
        "## Checks", "",
        "Expected: the replay's own counts or the reference join of the same events, computed in memory "
        "as the replay streamed (`jobs/demo_reference.py`).", "",
        "| | check | expected | got |", "|---|---|---|---|",
        *(f"| {'✅' if v['ok'] else '❌'} | {k} | {_show(v['want'])} | {_show(v['got'])} |"
          for k, v in r["checks"].items()), "",
        "## Quality and freshness", "",
        f"- progressive click AUC **{_fmt(t['auc'])}** vs popularity baseline {_fmt(t['baseline_auc'])}",
        f"- freshness at the trainer's sync p50 {t['freshness_p50_s']:.2f} s, p99 {t['freshness_p99_s']:.2f} s",
        f"- freshness at the serving replica (example ingest -> its delta applied there) p50 "
        f"{_secs(r['serving']['freshness_p50_s'])} s, p99 {_secs(r['serving']['freshness_p99_s'])} s over "
        f"{r['serving']['deltas']} deltas; the replica holds {r['serving']['rows']} rows at version "
        f"{r['serving']['version']}", "",
        "## Throughput", "",
        *(f"- {k}: {v:,.0f}/s" for k, v in r["throughput_per_s"].items()), "",
        "![AUC over event time](auc.png)", "", "![freshness](freshness.png)", "",
    ]
    return "\n".join(lines)


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def write_report(r: dict[str, Any], run: Path) -> None:
    plot_freshness(r.get("freshness", []), run / "freshness.png")
    (run / "report.json").write_text(json.dumps({k: v for k, v in r.items() if k != "freshness"}, indent=2))
    (run / "report.md").write_text(render_markdown(r, run))
    latest = run.parent / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run.name)
    checks = Table("check", "expected", "got", title="streamrec demo: checks", min_width=72)
    for k, v in r["checks"].items():
        checks.add_row(("[green]ok[/green] " if v["ok"] else "[red]MISMATCH[/red] ") + k, _show(v["want"]),
                       _show(v["got"]))
    console.print(checks)
    table = Table("", "", title="streamrec demo: report", show_header=False, min_width=72)
    t = r["train"]
    table.add_row("progressive click AUC (popularity baseline)", f"{_fmt(t['auc'])} ({_fmt(t['baseline_auc'])})")
    table.add_row("freshness p50 / p99", f"{t['freshness_p50_s']:.2f} s / {t['freshness_p99_s']:.2f} s")
    for k, v in r["throughput_per_s"].items():
        table.add_row(f"throughput: {k}", f"{v:,.0f}/s")
    console.print(table)
    console.print(f"report: {run / 'report.md'} (plots: auc.png, freshness.png)")
