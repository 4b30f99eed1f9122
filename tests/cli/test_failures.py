"""Every command fails fast (within 10 s) with one line on stderr and its documented exit code
(``streamrec.errors``), against real services or a free port with nothing listening."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.procs import free_port
from streamrec import errors

STREAMREC = str(Path(sys.executable).parent / "streamrec")
BOUND_S = 10.0  # the bound for failing fast


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [ln for ln in (self.stdout + self.stderr).splitlines() if ln.strip()]


def streamrec(tmp: Path, *args: str, sets: tuple[str, ...] = ()) -> Result:
    """Run the console script from ``tmp`` (no streamrec.toml there), run state under ``tmp``."""
    cmd = [STREAMREC, "--set", f'stack.run_dir="{tmp / "run"}"', "--set", f'flink.run_dir="{tmp / "flink"}"',
           "--set", f'archive.root="{tmp / "archive"}"', "--set", f'trainer.snapshot_dir="{tmp / "snaps"}"',
           "--set", f'joiner.state_dir="{tmp / "joiner"}"']
    for s in sets:
        cmd += ["--set", s]
    t0 = time.monotonic()
    r = subprocess.run([*cmd, *args], cwd=tmp, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    return Result(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def one_line(r: Result, code: int) -> str:
    assert r.code == code and len(r.lines) == 1, f"exit {r.code}, output:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    assert r.seconds < BOUND_S, f"took {r.seconds:.1f}s"
    return r.lines[0]


@pytest.mark.parametrize("args", [["join"], ["archive"], ["train", "--online"], ["replay", "movielens"],
                                  ["topics", "create"]], ids=lambda a: " ".join(a))
def test_broker_unreachable(args: list[str], tmp_path: Path) -> None:
    r = streamrec(tmp_path, *args, sets=(f'kafka.bootstrap="127.0.0.1:{free_port()}"',))
    line = one_line(r, errors.UNREACHABLE)
    assert "no broker at 127.0.0.1:" in line and "kafka.bootstrap" in line, line


@pytest.mark.parametrize("args,role", [(["join"], "features"), (["archive"], "examples"),
                                       (["train", "--online"], "examples")], ids=lambda a: str(a))
def test_topic_missing(args: list[str], role: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    r = streamrec(tmp_path, *args, sets=(f'kafka.bootstrap="{kafka_bootstrap}"',
                                         f'kafka.topics.{role}="no-such-topic-{os.getpid()}"'))
    line = one_line(r, errors.MISSING_INPUT)
    assert f"kafka.topics.{role}" in line and "does not exist" in line, line


def test_train_batch_on_an_empty_range_fails_and_writes_no_snapshot(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    r = streamrec(tmp_path, "train", "--batch", "2026-01-01T00..2026-01-02T00")
    line = one_line(r, errors.MISSING_INPUT)
    assert "no archived examples" in line and "2026-01-01T00..2026-01-02T00" in line, line
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())


def test_hdfs_unreachable(tmp_path: Path) -> None:
    r = streamrec(tmp_path, "train", "--batch", "2026-01-01T00..2026-01-02T00",
                  sets=('archive.target="hdfs"', f'archive.hdfs_url="http://127.0.0.1:{free_port()}"'))
    line = one_line(r, errors.UNREACHABLE)
    assert "archive.hdfs_url" in line and "did not answer" in line, line


def test_archive_to_an_hdfs_that_does_not_answer(kafka_bootstrap: str, make_topics, tmp_path: Path) -> None:
    t = make_topics(examples=1, dead_letter=1)
    r = streamrec(tmp_path, "archive", sets=(f'kafka.bootstrap="{kafka_bootstrap}"',
                                             f'kafka.topics.examples="{t["examples"]}"',
                                             f'kafka.topics.dead_letter="{t["dead_letter"]}"', 'archive.target="hdfs"',
                                             f'archive.hdfs_url="http://127.0.0.1:{free_port()}"'))
    line = one_line(r, errors.UNREACHABLE)  # at start; outages of a running archive are retried instead
    assert "archive.hdfs_url" in line and "did not answer" in line, line


@pytest.mark.parametrize("where", ["no local cluster", "jobmanager not answering"])
def test_flink_submit_without_a_cluster(where: str, tmp_path: Path) -> None:
    sets = (f'flink.jobmanager="127.0.0.1:{free_port()}"',) if where == "jobmanager not answering" else ()
    line = one_line(streamrec(tmp_path, "flink", "submit", sets=sets), errors.UNREACHABLE)
    assert "flink.jobmanager" in line, line


def test_stack_status_is_honest_when_the_broker_is_not_running(tmp_path: Path) -> None:
    line = one_line(streamrec(tmp_path, "stack", "status"), errors.UNREACHABLE)
    assert "not running" in line, line


@pytest.mark.parametrize("args,field", [
    (["--set", "joiner.window_ms=soon", "config"], "joiner.window_ms"),
    (["--set", "kafka.no_such_field=1", "config"], "kafka.no_such_field"),
    (["--log-format", "xml", "config"], "log.format"),
    (["demo", "--set", "trainer.batch_size=-3"], "trainer.batch_size"),  # --set after `demo` (make demo ARGS=)
])
def test_bad_config_names_the_field(args: list[str], field: str, tmp_path: Path) -> None:
    line = one_line(streamrec(tmp_path, *args), errors.CONFIG)
    assert field in line, line


def test_a_bug_is_one_line_and_its_traceback_only_with_debug(tmp_path: Path) -> None:
    (tmp_path / "archive").write_text("a file where the archive's directory should be")
    line = one_line(streamrec(tmp_path, "archive-ls"), errors.INTERNAL)
    assert "unexpected error" in line and "--debug" in line, line
    r = streamrec(tmp_path, "--debug", "archive-ls")
    assert r.code != 0 and "Traceback" in r.stderr and "NotADirectoryError" in r.stderr, r.stderr[-2000:]


def test_version() -> None:
    r = subprocess.run([STREAMREC, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("streamrec ") and r.stdout.split()[1][0].isdigit()


def test_make_demo_passes_set_to_streamrec(tmp_path: Path) -> None:
    """`make demo SET="k=v"` and `make demo ARGS="--set k=v"` reach the config (a bad value names its
    field); ``-o setup``: the venv is there already."""
    root = Path(__file__).resolve().parents[2]
    for how in ('SET=trainer.batch_size=-3', 'ARGS=--set trainer.batch_size=-3'):
        r = subprocess.run(["make", "-s", "-o", "setup", "demo", how], cwd=root, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0 and "trainer.batch_size" in r.stderr, (how, r.stdout, r.stderr)


def test_every_exit_code_is_documented() -> None:
    """The README's table and `streamrec --help` list every code of ``streamrec.errors``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    help_text = subprocess.run([STREAMREC, "--help"], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "300"}).stdout
    for code in errors.EXIT_CODES:
        assert f"\n| {code} |" in readme, code
        assert f" {code} " in help_text.split("Exit codes:")[1], code
