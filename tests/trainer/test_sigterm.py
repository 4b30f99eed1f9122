"""SIGTERM stops the online trainer cleanly: the batch in flight is trained on, a final snapshot holds
every example, exit 0, and stdout is one strict JSON summary (the progress bar is on stderr)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.trainer.test_restore import ROOT, SPEC, cli, produce
from trainer import snapshot
from trainer.synthetic import synthetic_examples


def strict_json(text: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_sigterm_takes_a_final_snapshot_and_exits_0(settings, kafka_cfg, tmp_path: Path) -> None:
    records = synthetic_examples(SPEC, 3000, users=100, items=80, seed=3, step_ms=200, keep_rate=0.5)
    produce(kafka_cfg, settings.kafka.topics.examples, records)
    snaps = tmp_path / "snaps"
    # no --stop-when-idle: only a signal ends it
    p = subprocess.Popen(cli(settings, tmp_path, "--online"), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while snapshot.latest(snaps) is None:  # it is in its loop: periodic snapshots every 1500 examples
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
            time.sleep(0.1)
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    assert took < 25, f"stopping took {took:.1f}s"  # within Kubernetes' default grace period (30 s)
    summary = strict_json(out.strip())  # the whole of stdout: one object, no bar, no NaN
    assert summary["stopped_by_signal"] is True
    final = snapshot.latest(snaps)
    assert summary["snapshot"] == str(final)
    state = json.loads((final / "state.json").read_text())
    assert state["examples"] == summary["examples_read"] == len(records)
