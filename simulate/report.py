"""The simulation's report: per window and arm, each label's rate per impression with a 95 % Wilson
interval (right for rates near 0, where the normal interval leaves [0, 1]); the probe that shows
which model moved; the join check. Written as report.json, report.md and plot.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from simulate.users import ARMS

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(k/n, lower, upper) of the Wilson score interval; (nan, 0, 1) without trials."""
    if n <= 0:
        return math.nan, 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, max(0.0, centre - half), min(1.0, centre + half)


def rates(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per window and arm: requests, impressions, versions served, each label's rate and CI."""
    rows = []
    for w in report["windows"]:
        for arm in ARMS:
            a = w["arms"][arm]
            row = {"window": w["window"], "arm": arm, "wall_s": w["wall_s"], "requests": a["requests"],
                   "impressions": a["impressions"], "versions": [min(a["versions"], default=0),
                                                                 max(a["versions"], default=0)]}
            for lb in report["labels"]:
                p, lo, hi = wilson(a[lb], a["impressions"])
                row[lb] = {"count": a[lb], "rate": p, "ci95": [lo, hi]}
            rows.append(row)
    return rows


def probe_moves(report: dict[str, Any]) -> dict[str, Any]:
    """Per arm: how many probe rounds changed the probe's scores (largest change, versions seen)."""
    out = {}
    for arm in ARMS:
        seen = [p[arm] for p in report["probes"]]
        changed, biggest = 0, 0.0
        for a, b in zip(seen, seen[1:], strict=False):
            d = max(abs(a["scores"][i][lb] - b["scores"][i][lb]) for i in a["scores"] for lb in a["scores"][i])
            changed += d > 0
            biggest = max(biggest, d)
        out[arm] = {"rounds": len(seen), "changed": changed, "max_abs_change": biggest,
                    "versions": [s["version"] for s in seen]}
    return out


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["window", "arm", "requests", "impressions", *(f"{lb} rate [95 % CI]" for lb in report["labels"]),
            "model versions"]
    out = []
    for r in report["rates"]:
        cells = [f"{r[lb]['rate']:.4f} [{r[lb]['ci95'][0]:.4f}, {r[lb]['ci95'][1]:.4f}]" for lb in report["labels"]]
        v = r["versions"]
        out.append([str(r["window"]), r["arm"], str(r["requests"]), str(r["impressions"]), *cells,
                    str(v[0]) if v[0] == v[1] else f"{v[0]}–{v[1]}"])
    return head, out


def difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): the normal (Wald) interval of a difference of two independent rates,
    fine at these counts (thousands of impressions, rates well inside (0, 1))."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    half = z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p1 - p2, p1 - p2 - half, p1 - p2 + half


def totals(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each arm over the whole run, and over its second half (after the online model had time to learn)."""
    out: dict[str, dict[str, Any]] = {}
    half = len(report["windows"]) // 2
    for arm in ARMS:
        for part, ws in (("all", report["windows"]), ("second half", report["windows"][half:])):
            n = sum(w["arms"][arm]["impressions"] for w in ws)
            out.setdefault(arm, {})[part] = {"impressions": n, **{lb: dict(zip(
                ("rate", "lo", "hi"), wilson(sum(w["arms"][arm][lb] for w in ws), n), strict=True))
                for lb in report["labels"]}}
    for part, ws in (("all", report["windows"]), ("second half", report["windows"][half:])):
        n = {arm: sum(w["arms"][arm]["impressions"] for w in ws) for arm in ARMS}
        k = {lb: {arm: sum(w["arms"][arm][lb] for w in ws) for arm in ARMS} for lb in report["labels"]}
        out.setdefault("online − frozen", {})[part] = {"impressions": n["online"] + n["frozen"], **{lb: dict(zip(
            ("rate", "lo", "hi"), difference(k[lb]["online"], n["online"], k[lb]["frozen"], n["frozen"]),
            strict=True)) for lb in report["labels"]}}
    return out


def rich_table(report: dict[str, Any]) -> Table:
    head, rows = table_rows(report)
    t = Table(title="simulate: rates per impression by window and arm (95 % Wilson CI)")
    for h in head:
        t.add_column(h, justify="left" if h in ("arm",) else "right")
    for row in rows:
        t.add_row(*row, style="cyan" if row[1] == "online" else None)
    return t


def markdown(report: dict[str, Any]) -> str:
    head, rows = table_rows(report)
    cfg, j = report["config"], report["joined"]
    lines = [
        "# streamrec simulate: online vs frozen", "",
        f"{report['requests']:,} feed requests in {report['wall_s']:.0f} s of wall time; each ranks "
        f"{cfg['candidates']} candidates and shows the top {cfg['show']}. Users are split by a hash of their id: "
        f"{len(report['users']['online'])} online, {len(report['users']['frozen'])} frozen. Both arms started from "
        f"the same model, batch-trained on the first {100 * cfg['batch_share']:.0f} % of MovieLens-100K by time; "
        "the online arm's replica applies the trainer's deltas, the frozen arm's never does. A shown item the user "
        "rated later (a rating no model saw) earns " + ", ".join(
            f"{lb} at rating ≥ {cfg['min_rating'][lb]:g}" for lb in report["labels"]) + "; an unrated one " + ", ".join(
            f"{lb} with probability {cfg['base_rate'][lb]:g}" for lb in report["labels"]) + ".", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), "",
        "## Whole run", "",
        "| arm | part | impressions | " + " | ".join(f"{lb} rate [95 % CI]" for lb in report["labels"]) + " |",
        "|---|---|---|" + "---|" * len(report["labels"]),
    ]
    for arm, parts in report["totals"].items():
        for part, t in parts.items():
            lines.append(f"| {arm} | {part} | {t['impressions']} | " + " | ".join(
                f"{t[lb]['rate']:.4f} [{t[lb]['lo']:.4f}, {t[lb]['hi']:.4f}]" for lb in report["labels"]) + " |")
    pm = report["probe_moves"]
    lines += ["", "Rates: Wilson 95 % intervals; online − frozen: the normal interval of a difference of rates.",
              "", "## Did the models move?", "",
              f"A fixed probe request (user {report['probe']['user_id']}, {len(report['probe']['item_ids'])} popular "
              "items, not logged) was scored by both replicas at each window's end.", ""]
    for arm in ARMS:
        lines.append(f"- {arm}: scores changed in {pm[arm]['changed']} of {pm[arm]['rounds'] - 1} rounds (largest "
                     f"change {pm[arm]['max_abs_change']:.4f}); model versions {pm[arm]['versions']}")
    lines += ["", "## Every served impression joined?", "",
              f"{j['examples']:,} examples on the examples topic for {j['impressions']:,} shown items "
              f"(negatives kept at joiner.negative_keep_rate = {report['settings']['joiner.negative_keep_rate']}; "
              "a request whose shown items were all dropped negatives has no example).", "",
              "| arm | requests served | requests joined | impressions | examples | " + " | ".join(
                  f"{lb} sent / joined" for lb in report["labels"]) + " |", "|---|---|---|---|---|" +
              "---|" * len(report["labels"])]
    for arm, a in j["by_arm"].items():
        lines.append(f"| {arm} | {a['served_requests']} | {a['joined_requests']} | {a['impressions']} | "
                     f"{a['examples']} | " + " | ".join(f"{a[lb + '_sent']} / {a[lb + '_joined']}"
                                                        for lb in report["labels"]) + " |")
    lines += ["", "![rates per window](plot.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["labels"]
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 4.2), squeeze=False)
    for ax, lb in zip(axes[0], labels, strict=True):
        for arm, color, dx in (("online", "tab:blue", -0.06), ("frozen", "tab:gray", 0.06)):
            rs = [r for r in report["rates"] if r["arm"] == arm]
            x = [r["window"] + dx for r in rs]
            y = [r[lb]["rate"] for r in rs]
            err = [[r[lb]["rate"] - r[lb]["ci95"][0] for r in rs], [r[lb]["ci95"][1] - r[lb]["rate"] for r in rs]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=arm)
        ax.set_xlabel("window (equal numbers of requests, in time order)")
        ax.set_ylabel(f"{lb} rate per impression")
        ax.set_title(f"{lb} rate, 95 % Wilson CI")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], run: Path) -> None:
    """Add the derived tables to ``report`` and write report.json, report.md, plot.png into ``run``."""
    report["rates"] = rates(report)
    report["totals"] = totals(report)
    report["probe_moves"] = probe_moves(report)
    (run / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (run / "report.md").write_text(markdown(report))
    plot(report, run / "plot.png")
