"""The built wheel works outside the checkout: installed alone into a fresh venv, run from another
directory, it has its version, its config (the default feature spec) and the daemons' templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel built from a copy of the checkout's files; the (heavy,
    already installed) dependencies are reached through a .pth to this venv's site-packages, which
    does not expose the editable install of the checkout (a .pth inside a .pth path is not read)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    src = tmp / "src"
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(src)], tmp)
    wheel = next((tmp / "dist").glob("streamrec-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-index", str(wheel)], tmp)
    site = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    tmp).stdout.strip())
    (site / "_streamrec_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_the_wheel_alone_has_version_config_and_templates(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    sr = str(installed / "bin" / "streamrec")
    assert run([sr, "--version"], elsewhere, env).stdout.strip() == "streamrec 0.1.0"
    config = json.loads(run([sr, "config"], elsewhere, env).stdout)
    assert config["features"]["slots"] and config["log"] == {"level": "INFO", "format": "text"}
    # the code runs from the venv, not from the checkout, and the package data is there
    where = run([str(installed / "bin" / "python"), "-c",
                 "import cli, deploy, examples.movielens as m; from streamrec.applog import encoder as e\n"
                 "print(cli.__file__, deploy.__file__, m.SPEC_FILE, e._native.__file__)"],
                elsewhere, env).stdout.split()
    assert all(str(installed) in w and str(ROOT) not in w for w in where), where  # the client's C module too
    deploy_dir = Path(where[1]).parent
    for data in ("streamrec.example.toml", "compose/docker-compose.yml", "flink/config.yaml.tmpl",
                 "hdfs/core-site.xml.in", "kafka/server.properties.in", "kafka/log4j2.properties"):
        assert (deploy_dir / data).is_file(), data
    # a command that renders the Kafka templates: a broker from the installed package (jars from the checkout's
    # .vendor, as make setup resolved them), then down again
    env["STREAMREC_VENDOR"] = str(ROOT / ".vendor")
    run_dir = f'stack.run_dir="{tmp_path / "run"}"'
    try:
        up = run([sr, "--set", run_dir, "stack", "up"], elsewhere, env)
        assert "broker up" in up.stdout and "topics:" in up.stdout
        run([sr, "--set", run_dir, "stack", "status"], elsewhere, env)
    finally:
        subprocess.run([sr, "--set", run_dir, "stack", "down"], cwd=elsewhere, env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("daemons", ["hdfs", "flink"])
def test_the_wheel_alone_starts_hdfs_and_flink(daemons: str, installed: Path, tmp_path: Path) -> None:
    """`hdfs up` renders the HDFS templates, `flink up` the Flink one, from the installed package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["STREAMREC_VENDOR"] = str(ROOT / ".vendor")
    sr = [str(installed / "bin" / "streamrec"), "--set", f'stack.run_dir="{tmp_path / "run"}"',
          "--set", f'flink.run_dir="{tmp_path / "flink"}"']
    try:
        up = run([*sr, daemons, "up"], tmp_path, env)
        assert ("hdfs up: WebHDFS http://127.0.0.1:" if daemons == "hdfs" else "Flink cluster up: http://") in up.stdout
        conf = tmp_path / "run" / "hdfs" / "conf" / "core-site.xml" if daemons == "hdfs" \
            else tmp_path / "flink" / "conf" / "config.yaml"
        assert conf.is_file() and "${" not in conf.read_text()  # rendered: no placeholder left
    finally:
        subprocess.run([*sr, daemons, "down"], cwd=tmp_path, env=env, timeout=180)


def tree(path: Path) -> set[Path]:
    """Every path under ``path`` but Python's and numba's caches (``__pycache__``, which an install may fill)."""
    return {p for p in path.rglob("*") if "__pycache__" not in p.parts} if path.exists() else set()


@pytest.mark.slow
def test_the_wheel_alone_runs_the_demo(installed: Path, tmp_path: Path) -> None:
    """`streamrec demo` (embedded join) from the installed package, in a directory outside the checkout:
    the MovieLens data, the feature spec and every template come from the install, each check passes, and
    its outputs land under the configured stack.run_dir, not in the checkout or the venv."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["STREAMREC_VENDOR"] = str(ROOT / ".vendor")
    site = next((installed / "lib").glob("python3*/site-packages"))
    before = {p: tree(p) for p in (ROOT / ".run", site)}
    run_dir = tmp_path / "run"
    r = run([str(installed / "bin" / "streamrec"), "--set", f'stack.run_dir="{run_dir}"', "demo", "--limit", "1500",
             "--down"], elsewhere, env, timeout=900)
    assert "streamrec demo: checks" in r.stderr and "MISMATCH" not in r.stderr, r.stderr[-4000:]
    [demo] = [d for d in (run_dir / "demo").iterdir() if not d.is_symlink()]
    report = json.loads((demo / "report.json").read_text())
    assert report["replay"]["requests"] == 1500 and report["join"]["examples"] > 0
    assert len(report["checks"]) >= 8 and all(c["ok"] for c in report["checks"].values()), report["checks"]
    assert f"report:{demo / 'report.md'}" in "".join(r.stderr.split())  # rich wraps long lines anywhere
    for f in ("report.md", "auc.png", "freshness.png"):
        assert (demo / f).stat().st_size > 0, f
    assert any((demo / "archive").rglob("*.parquet")) and any((demo / "snapshots").iterdir())
    assert (run_dir / "demo" / "latest").resolve() == demo
    assert not any(elsewhere.iterdir())  # nothing relative to the working directory either
    for p, old in before.items():
        assert tree(p) - old == set(), f"the demo wrote into {p}"


@pytest.mark.slow
def test_the_wheel_alone_fetches_its_jars_with_maven(installed: Path, tmp_path: Path) -> None:
    """`streamrec setup` resolves the jars with Maven from the packaged pom.xml into the user cache, where
    `stack up` then finds them without STREAMREC_VENDOR. Offline (mvn -o): from the Maven repository
    `make setup` filled, so the test downloads nothing; the same jars as the checkout's .vendor."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STREAMREC_VENDOR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    sr = str(installed / "bin" / "streamrec")
    run_dir = f'stack.run_dir="{tmp_path / "run"}"'
    missing = subprocess.run([sr, "--set", run_dir, "stack", "up"], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode != 0 and "streamrec setup" in missing.stderr, missing.stderr  # says what to do
    vendor = tmp_path / "cache" / "streamrec" / "vendor"
    out = run([sr, "setup", "--offline", "--part", "kafka", "--part", "flink"], elsewhere, env).stdout
    want = {part: sorted(p.name for p in (ROOT / ".vendor" / part).glob("*.jar")) for part in ("kafka", "flink")}
    for part, jars in want.items():
        assert jars and sorted(p.name for p in (vendor / part).glob("*.jar")) == jars, part
        assert f"{part}: {len(jars)} jars" in out, out
    assert f"jars in {vendor}: kafka {len(want['kafka'])}, flink {len(want['flink'])}" in out, out
    again = run([sr, "setup", "--offline", "--part", "kafka"], elsewhere, env).stdout
    assert "kafka:" not in again and f"jars in {vendor}: kafka " in again  # fetched before: skipped
    try:
        up = run([sr, "--set", run_dir, "stack", "up"], elsewhere, env)
        assert "broker up" in up.stdout
    finally:
        subprocess.run([sr, "--set", run_dir, "stack", "down"], cwd=elsewhere, env=env, timeout=120)
