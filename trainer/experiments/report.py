"""Each experiment's report: report.md (tables a reader understands without the code), report.json
(everything measured, per seed), plot.png; and the same tables printed with rich."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

Rows = tuple[list[str], list[list[str]]]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            v = seconds / size
            return f"{v:.0f} {unit}" if abs(v - round(v)) < 0.05 else f"{v:.1f} {unit}"
    return f"{seconds:.0f} s"


def pm(mean: float, half: float, digits: int = 4, sign: str = "") -> str:
    """``mean ± half`` (the mean alone when there is no interval); ``sign="+"`` signs the mean."""
    m = f"{mean:{sign}.{digits}f}"
    return m if math.isnan(half) else f"{m} ± {half:.{digits}f}"


# ---- collisionless -------------------------------------------------------------------------------
def collisionless_auc(result: dict[str, Any]) -> Rows:
    head = ["epoch", "collisionless AUC", "hashed AUC", "collisionless − hashed"]
    rows = [[str(r["epoch"]), pm(r["collisionless"], r["collisionless_ci"]), pm(r["hashed"], r["hashed_ci"]),
             pm(r["diff"], r["diff_ci"], sign="+")] for r in result["summary"]]
    return head, rows


def collisionless_tables(result: dict[str, Any]) -> Rows:
    head = ["side", "slot", "distinct ids", "target rate", "measured rate (per seed)", "hashed table rows (per seed)"]
    rows = []
    for side, slot in result["slots"].items():
        tabs = [r["tables"][side] for r in result["runs"]]
        rows.append([side, slot, str(tabs[0]["ids"]), f"{100 * tabs[0]['target']:.2f} %",
                     ", ".join(f"{100 * t['rate']:.2f} %" for t in tabs), ", ".join(str(t["size"]) for t in tabs)])
    return head, rows


def plot_collisionless(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    ep = [r["epoch"] for r in s]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, color in (("collisionless", "tab:blue"), ("hashed", "tab:red")):
        m = [r[arm] for r in s]
        h = [0 if math.isnan(r[f"{arm}_ci"]) else r[f"{arm}_ci"] for r in s]
        a.plot(ep, m, "o-", color=color, label=arm)
        a.fill_between(ep, [x - y for x, y in zip(m, h, strict=True)], [x + y for x, y in zip(m, h, strict=True)],
                       color=color, alpha=0.15)
        for run in result["runs"]:
            a.plot(ep, run["auc"][arm], color=color, alpha=0.25, lw=0.8)
    a.set(xlabel="epoch", ylabel=f"test AUC ({result['label']})", title="mean, 95 % CI band, each seed thin",
          xticks=ep)
    a.legend()
    d = [r["diff"] for r in s]
    b.errorbar(ep, d, yerr=[0 if math.isnan(r["diff_ci"]) else r["diff_ci"] for r in s], fmt="o-", capsize=4)
    b.axhline(0, color="grey", lw=0.8)
    b.set(xlabel="epoch", ylabel="AUC difference", title="collisionless − hashed (paired by seed, 95 % CI)", xticks=ep)
    fig.suptitle(f"DeepFM on MovieLens-100K ({result['ratings']} ratings, {len(result['runs'])} seeds): "
                 "collisionless vs hashed tables")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- sync interval ------------------------------------------------------------------------------
def sync_rows(result: dict[str, Any]) -> Rows:
    head = ["serving model", "sync every T", "= paper's T scaled", "serving AUC", "online − batch (AUC points)",
            "paper Table 2 (Criteo)"]
    rows = []
    for r in sorted(result["summary"], key=lambda r: (r["T_s"] is not None, r["T_s"] or 0)):
        paper = "" if r["paper_delta_points"] is None else f"+{r['paper_delta_points']:.2f}"
        delta = "" if r["T_s"] is None else pm(r["delta_points"], r["delta_ci"], 2, "+")
        rows.append([r["arm"], duration(r["T_s"]), duration(r["paper_T_s"]) if r["paper_T_s"] else "",
                     pm(r["auc"], r["auc_ci"]), delta, paper])
    return head, rows


def plot_sync(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [r for r in result["summary"] if r["T_s"] is not None]
    s.sort(key=lambda r: r["T_s"])
    base = next(r for r in result["summary"] if r["T_s"] is None)
    ci = [0 if math.isnan(r["auc_ci"]) else r["auc_ci"] for r in s]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.errorbar([r["T_s"] / 3600 for r in s], [r["auc"] for r in s], yerr=ci, fmt="o-", capsize=4, label="online")
    a.axhline(base["auc"], color="tab:red", ls="--", label="batch-only (never synced)")
    a.set(xscale="log", xlabel="sync interval T (hours of event time)", ylabel=f"serving AUC ({result['label']})",
          title="serving AUC over the online part")
    a.legend()
    span = result["online_span_s"]
    b.errorbar([r["T_s"] / span for r in s], [r["delta_points"] for r in s],
               yerr=[0 if math.isnan(r["delta_ci"]) else r["delta_ci"] for r in s], fmt="o-", capsize=4,
               label="ours (MovieLens-100K)")
    cfg = result["config"]
    b.plot([t / cfg["paper_span_s"] for t in cfg["paper_intervals_s"]], cfg["paper_delta_auc_points"], "s--",
           color="tab:green", label="paper Table 2 (Criteo)")
    b.set(xscale="log", xlabel="T as a share of the stream's span", ylabel="online − batch (AUC points)",
          title="gain of online training by sync interval")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- output -------------------------------------------------------------------------------------
def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def rich_table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for h in head:
        t.add_column(h)
    for r in rows:
        t.add_row(*r)
    return t


def tables(result: dict[str, Any]) -> list[tuple[str, Rows]]:
    """The titled tables of a result, in report order."""
    if result["experiment"] == "collisionless":
        return [("Test AUC per epoch (mean ± 95 % CI over seeds)", collisionless_auc(result)),
                ("Hashed tables: sized so that the measured collision rate matches the paper's",
                 collisionless_tables(result))]
    return [("Serving AUC over the online part by sync interval (mean ± 95 % CI over seeds)", sync_rows(result))]


def write(result: dict[str, Any], out_dir: Path, intro: str) -> Path:
    """report.json, plot.png and report.md into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(result, indent=1, default=str))
    plot = plot_collisionless if result["experiment"] == "collisionless" else plot_sync
    plot(result, out_dir / "plot.png")
    parts = [f"# {result['experiment']}", "", intro, ""]
    for title, (head, rows) in tables(result):
        parts += [f"## {title}", "", markdown(head, rows), ""]
    parts += ["![plot](plot.png)", "", "Every number per seed is in report.json.", ""]
    md = out_dir / "report.md"
    md.write_text("\n".join(parts))
    return md
