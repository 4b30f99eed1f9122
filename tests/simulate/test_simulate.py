"""`streamrec simulate --quick` end to end on the real broker: the command starts its own joiner,
online trainer and two `streamrec serve` replicas (separate processes) and drives them with
simulated MovieLens users. Checked from the report and, independently, from the topics:
both arms get windows; users are split disjointly and stably (the replicas' own FeatureLogs say
who served whom); the frozen replica's scores never move while the online one's do after syncs;
every served impression became exactly one training example with its labels (no negative
sampling here); every interval contains its estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from schemas.codec import default_codec
from simulate.report import wilson
from simulate.users import ARMS, FROZEN, ONLINE, arm_of
from streamrec.config import KafkaConfig
from streamrec.kafka import drain

STREAMREC = str(Path(sys.executable).parent / "streamrec")
ROOT = Path(__file__).resolve().parents[2]


def test_wilson_interval_matches_known_values() -> None:
    p, lo, hi = wilson(0, 10)
    assert p == 0 and lo == 0 and abs(hi - 0.2775) < 1e-4  # the textbook rule-of-three-like bound
    p, lo, hi = wilson(50, 100)
    assert p == 0.5 and abs(lo - 0.4038) < 1e-4 and abs(hi - 0.5962) < 1e-4
    assert wilson(3, 0)[1:] == (0.0, 1.0)


def test_arm_split_is_a_stable_hash_of_the_user() -> None:
    arms = [arm_of(u, 5, 0.5) for u in range(2000)]
    assert arms == [arm_of(u, 5, 0.5) for u in range(2000)]
    assert 0.45 < arms.count(ONLINE) / len(arms) < 0.55
    assert arms != [arm_of(u, 6, 0.5) for u in range(2000)]  # the seed re-draws the split


@pytest.mark.slow
def test_simulate_quick_closes_the_loop(tmp_path: Path, kafka_bootstrap: str) -> None:
    cfg = tmp_path / "streamrec.toml"
    cfg.write_text(f"""
[kafka]
bootstrap = "{kafka_bootstrap}"
[stack]
run_dir = "{tmp_path / 'run'}"
[joiner]
negative_keep_rate = 1.0
checkpoint_interval_ms = 500
[simulate]
out_dir = "{tmp_path / 'sim'}"
""")
    out = tmp_path / "report"
    done = subprocess.run([STREAMREC, "--config", str(cfg), "simulate", "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "window 2" in done.stderr and "online" in done.stdout  # progress on stderr, the table on stdout
    rep = json.loads((out / "report.json").read_text())
    assert (out / "plot.png").stat().st_size > 10_000 and "| window |" in (out / "report.md").read_text()
    sim, labels, show = rep["config"], rep["labels"], rep["config"]["show"]
    assert sim["requests"] == rep["requests"] and len(rep["windows"]) == sim["windows"] == 3

    # ---- both arms in every window; rates add up; every interval holds its estimate -------------------
    for w in rep["windows"]:
        for arm in ARMS:
            a = w["arms"][arm]
            assert a["requests"] > 0 and a["impressions"] == a["requests"] * show, (w["window"], arm, a)
    assert sum(a["requests"] for w in rep["windows"] for a in w["arms"].values()) == sim["requests"]
    assert len(rep["rates"]) == 2 * sim["windows"]
    for r in rep["rates"]:
        for lb in labels:
            lo, hi = r[lb]["ci95"]
            assert 0 <= lo <= r[lb]["rate"] <= hi <= 1 and hi - lo < 0.2, r
    for parts in rep["totals"].values():  # each arm, and online − frozen
        for part in parts.values():
            for lb in labels:
                assert part[lb]["lo"] <= part[lb]["rate"] <= part[lb]["hi"], parts
    clicks = sum(w["arms"][arm][labels[0]] for w in rep["windows"] for arm in ARMS)
    assert 0 < clicks < sim["requests"] * show  # users react, and not to everything

    # ---- the split: disjoint, by the hash, and the replicas' own logs agree -----------------------------
    online, frozen = set(rep["users"][ONLINE]), set(rep["users"][FROZEN])
    assert online and frozen and not online & frozen
    assert all(arm_of(u, sim["seed"], sim["online_share"]) == ONLINE for u in online)
    assert all(arm_of(u, sim["seed"], sim["online_share"]) == FROZEN for u in frozen)
    kafka, codec = KafkaConfig(bootstrap=kafka_bootstrap), default_codec()
    topics = rep["topics"]
    served_by: dict[int, set[str]] = defaultdict(set)
    logs = 0
    for m in drain(kafka, [topics["features"]], idle_s=1.0):
        log = codec.decode(m.value())[1]
        served_by[log["user_id"]].add(log["source"])
        logs += 1
        assert len(log["items"]) == show
    assert logs == sim["requests"]  # one FeatureLog per served request (probes are not logged)
    source_arm = {v: k for k, v in rep["sources"].items()}
    for u, sources in served_by.items():
        assert len(sources) == 1, (u, sources)  # a user always lands on the same replica
        assert u in (online if source_arm[sources.pop()] == ONLINE else frozen)

    # ---- the frozen replica's scores never move; the online one's do, with the deltas -------------------
    probes = rep["probes"]
    assert len(probes) == sim["windows"]
    first = probes[0][FROZEN]
    for p in probes[1:]:
        assert p[FROZEN]["scores"] == first["scores"] and p[FROZEN]["version"] == first["version"]
    versions = [p[ONLINE]["version"] for p in probes]
    assert versions == sorted(versions) and versions[-1] > first["version"], versions
    online_scores = {json.dumps(p[ONLINE]["scores"], sort_keys=True) for p in probes}
    assert len(online_scores) > 1, "the online replica's scores never changed during the run"
    assert rep["probe_moves"][FROZEN]["changed"] == 0 and rep["probe_moves"][ONLINE]["changed"] >= 1

    # ---- every served impression is one training example, with the labels the user gave -----------------
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m in drain(kafka, [topics["examples"]], idle_s=1.0):
        ex = codec.decode(m.value())[1]
        per[ex["request_id"]]["examples"] += 1
        for lb in labels:
            per[ex["request_id"]][lb] += int(ex["labels"][lb])
    assert len(per) == sim["requests"]
    assert sum(c["examples"] for c in per.values()) == sim["requests"] * show
    assert all(c["examples"] == show for c in per.values())
    j = rep["joined"]["by_arm"]
    for lb in labels:
        sent = sum(j[arm][f"{lb}_sent"] for arm in ARMS)
        assert sent == sum(c[lb] for c in per.values()) == sum(w["arms"][arm][lb] for w in rep["windows"]
                                                              for arm in ARMS)
    for arm in ARMS:
        assert j[arm]["joined_requests"] == j[arm]["served_requests"] and j[arm]["examples"] == j[arm]["impressions"]
    assert rep["stop_codes"]["trainer"] == 0 and rep["stop_codes"]["joiner"] == 0
