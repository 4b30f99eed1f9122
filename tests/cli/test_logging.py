"""--log-format json: every line on stderr is one JSON object, librdkafka's own lines included."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.test_failures import STREAMREC


def test_json_logs_carry_the_stage_and_librdkafka(settings, tmp_path: Path) -> None:
    t, j = settings.kafka.topics, settings.joiner
    sets = [f'kafka.bootstrap="{settings.kafka.bootstrap}"', f'kafka.topics.features="{t.features}"',
            f'kafka.topics.actions="{t.actions}"', f'kafka.topics.examples="{t.examples}"',
            f'kafka.topics.dead_letter="{t.dead_letter}"', f'joiner.state_dir="{j.state_dir}"',
            'kafka.consumer.debug="cgrp"']  # librdkafka debug lines, at DEBUG
    cmd = [STREAMREC, "--log-format", "json", "--log-level", "DEBUG"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run([*cmd, "join", "--stop-when-idle", "1"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]  # each line is JSON
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    loggers = {rec["logger"] for rec in records}
    assert "streamrec.join" in loggers and "librdkafka" in loggers, loggers
    assert r.stdout.startswith("join: ")  # the result stays on stdout, apart from the logs


def test_on_a_terminal_a_long_command_shows_live_progress_on_stderr(settings, tmp_path: Path) -> None:
    """The archive under a pseudo-terminal: a live line (spinner, count, status) on stderr, the logs above it."""
    import os
    import pty

    t = settings.kafka.topics
    cmd = [STREAMREC, "--set", f'kafka.bootstrap="{settings.kafka.bootstrap}"', "--set",
           f'kafka.topics.examples="{t.examples}"', "--set", f'kafka.topics.dead_letter="{t.dead_letter}"',
           "--set", f'archive.root="{tmp_path / "archive"}"', "archive", "--stop-when-idle", "2"]
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                         env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.wait(60) == 0, seen.decode(errors="replace")[-3000:]
    text = seen.decode(errors="replace")
    assert "archive" in text and "examples committed" in text, text[-3000:]  # the live line
    assert "\x1b[" in text  # drawn in place with terminal control codes, not printed as log lines
