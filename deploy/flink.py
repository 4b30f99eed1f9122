"""A local standalone Flink cluster (a JobManager and ``flink.taskmanagers`` TaskManagers from
the PyFlink wheel), and ``flink run`` / ``flink stop`` against it or any other cluster.

``make flink-up`` writes a config under ``flink.run_dir`` (free loopback ports, pid and log dirs
there, ``python.executable``, Hadoop's client on the classpath for ``hdfs://`` checkpoints),
starts the daemons with PyFlink's own scripts and waits until the TaskManagers have
registered. ``make flink-down`` stops only the daemons recorded in that pid dir. ``submit``
runs ``flink run -py jobs/flink_join.py`` with the project shipped as a zip (``-pyfs``), from
any working directory; ``stop`` stops a job with a savepoint for an upgrade or a rescale.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

from deploy.jvm import hadoop_classpath
from deploy.procs import free_port, pid_alive, port_open, stop_pid, with_python_on_path
from jobs.flink.config import FlinkConfig
from streamrec.errors import Unreachable

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).parent / "flink" / "config.yaml.tmpl"
JOB_SCRIPT = ROOT / "jobs" / "flink_join.py"
# script -> the daemon name in its pid file
DAEMONS = {"jobmanager": "standalonesession", "taskmanager": "taskexecutor"}
MARKER = "org.apache.flink"  # in every Flink daemon's command line
# the project's packages, shipped with the job (the TaskManagers need them, not this checkout)
PACKAGES = ("schemas", "joiner", "jobs", "sinks", "trainer", "serving", "replay", "streamrec", "deploy")


def rest(address: str, path: str, timeout: float = 3.0, method: str = "GET", body: dict | None = None) -> dict:
    """A call to a JobManager's REST API at ``host:port``."""
    req = urllib.request.Request(f"http://{address}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def pyflink_home() -> Path:
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise RuntimeError("PyFlink is not installed in this Python: run `make setup`")
    return Path(spec.origin).parent


def ensure_python_jar(home: Path | None = None) -> Path:
    """`flink run` needs flink-python in lib/ (else ClassNotFoundException ExternalPythonProcessOperator)."""
    home = home or pyflink_home()
    found = sorted((home / "lib").glob("flink-python-*.jar"))
    if found:
        return found[0]
    src = sorted((home / "opt").glob("flink-python-*.jar"))
    if not src:
        raise FileNotFoundError(f"no flink-python jar in {home / 'opt'}")
    dst = home / "lib" / src[0].name
    shutil.copy2(src[0], dst)
    return dst


@dataclass
class Cluster:
    """Where a started cluster lives; persisted as ``<run_dir>/cluster.json``."""

    run_dir: Path
    rest_port: int
    rpc_port: int

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "conf"

    @property
    def pid_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def address(self) -> str:
        return f"localhost:{self.rest_port}"

    def env(self, cfg: FlinkConfig, client: bool = False) -> dict[str, str]:
        """Environment of PyFlink's scripts; ``client`` caps the `flink run` client's heap (the
        daemons size their own JVMs from the memory settings)."""
        env = dict(os.environ)
        env.pop("JVM_ARGS", None)
        if client:
            env["JVM_ARGS"] = f"-Xmx{cfg.jvm_heap}"
        env.update(FLINK_CONF_DIR=str(self.conf_dir), FLINK_LOG_DIR=str(self.log_dir),
                   FLINK_PID_DIR=str(self.pid_dir))
        if not env.get("HADOOP_CLASSPATH") and hadoop_classpath():
            env["HADOOP_CLASSPATH"] = hadoop_classpath()
        env.pop("FLINK_HOME", None)
        return with_python_on_path(env)

    def pids(self) -> dict[str, int | None]:
        """The first live pid of each daemon kind (None if there is none)."""
        return {script: next(iter(self.all_pids(script)), None) for script in DAEMONS}

    def all_pids(self, script: str) -> list[int]:
        """Live pids of one daemon kind, from Flink's pid file (a line per daemon started)."""
        out = []
        for f in sorted(self.pid_dir.glob(f"flink-*-{DAEMONS[script]}.pid")):
            for word in f.read_text().split():
                if word.isdigit() and pid_alive(int(word), MARKER):
                    out.append(int(word))
        return out

    def running(self) -> bool:
        return all(p is not None for p in self.pids().values())

    def rest(self, path: str, timeout: float = 3.0) -> dict:
        return rest(self.address, path, timeout)


def _state_file(cfg: FlinkConfig) -> Path:
    return cfg.run_dir / "cluster.json"


def load_cluster(cfg: FlinkConfig) -> Cluster | None:
    try:
        d = json.loads(_state_file(cfg).read_text())
    except (OSError, ValueError):
        return None
    return Cluster(Path(d["run_dir"]), int(d["rest_port"]), int(d["rpc_port"]))


def write_conf(cfg: FlinkConfig, cluster: Cluster) -> None:
    home = pyflink_home()
    for d in (cluster.conf_dir, cluster.log_dir, cluster.pid_dir):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
        shutil.copy2(home / "conf" / name, cluster.conf_dir / name)
    text = Template(TEMPLATE.read_text()).substitute(
        pid_dir=cluster.pid_dir, log_dir=cluster.log_dir, rpc_port=cluster.rpc_port,
        rest_port=cluster.rest_port, task_slots=cfg.task_slots, parallelism=cfg.parallelism,
        jobmanager_memory=cfg.jobmanager_memory, taskmanager_memory=cfg.taskmanager_memory,
        python=cfg.python_executable or sys.executable,
    )
    if cfg.prometheus_ports:  # the reporter is a plugin PyFlink ships (plugins/metrics-prometheus)
        text += ("metrics.reporter.prom.factory.class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory\n"
                 f'metrics.reporter.prom.port: "{cfg.prometheus_ports}"\n')
    if cfg.pushgateway:  # same plugin; every daemon pushes its own group (job "streamrec" + a random suffix)
        text += ("metrics.reporter.push.factory.class: "
                 "org.apache.flink.metrics.prometheus.PrometheusPushGatewayReporterFactory\n"
                 f'metrics.reporter.push.hostUrl: "{cfg.pushgateway}"\n'
                 'metrics.reporter.push.jobName: "streamrec"\n'
                 "metrics.reporter.push.randomJobNameSuffix: true\n"
                 "metrics.reporter.push.deleteOnShutdown: false\n"  # the last values stay for a scrape after a stop
                 f'metrics.reporter.push.interval: "{cfg.push_interval_s} s"\n')
    (cluster.conf_dir / "config.yaml").write_text(text)
    (cluster.conf_dir / "masters").write_text(f"localhost:{cluster.rest_port}\n")
    (cluster.conf_dir / "workers").write_text("localhost\n")


def up(cfg: FlinkConfig, timeout: float = 60.0) -> Cluster:
    """Start the cluster (idempotent: a running one is returned as is)."""
    old = load_cluster(cfg)
    if old is not None and old.running():
        return old
    home = pyflink_home()
    ensure_python_jar(home)
    run_dir = cfg.run_dir.resolve()
    cluster = Cluster(run_dir, rest_port=free_port(), rpc_port=free_port())
    write_conf(cfg, cluster)
    env = cluster.env(cfg)
    for d in ["jobmanager"] + ["taskmanager"] * cfg.taskmanagers:
        subprocess.run(["bash", str(home / "bin" / f"{d}.sh"), "start"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _state_file(cfg).write_text(json.dumps(
        {"run_dir": str(run_dir), "rest_port": cluster.rest_port, "rpc_port": cluster.rpc_port}))
    try:
        _wait_ready(cluster, timeout, cfg.taskmanagers)
    except Exception:
        down(cfg)
        raise
    return cluster


def add_taskmanager(cfg: FlinkConfig) -> int:
    """Start one more TaskManager on the running cluster (a replacement, or more slots); its pid."""
    cluster = load_cluster(cfg)
    if cluster is None or cluster.pids()["jobmanager"] is None:
        raise RuntimeError("no Flink JobManager runs: `make flink-up` first")
    before = set(cluster.all_pids("taskmanager"))
    subprocess.run(["bash", str(pyflink_home() / "bin" / "taskmanager.sh"), "start"], env=cluster.env(cfg),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15  # the script's child becomes the JVM (exec) a moment later
    while not (new := set(cluster.all_pids("taskmanager")) - before):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the TaskManager did not start; see {cluster.log_dir}")
        time.sleep(0.1)
    return new.pop()


def _wait_ready(cluster: Cluster, timeout: float, taskmanagers: int = 1) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if port_open(cluster.rest_port):
            try:
                if len(cluster.rest("/taskmanagers").get("taskmanagers", [])) >= taskmanagers:
                    return
            except OSError:
                pass
        alive = [p for p in cluster.pids().values() if p and pid_alive(p, MARKER)]
        if not alive and time.monotonic() - start > 5:
            raise RuntimeError(f"Flink daemons exited; see {cluster.log_dir}")
        time.sleep(0.2)
    raise TimeoutError(f"Flink cluster not ready on {cluster.rest_url} within {timeout:.0f}s; see {cluster.log_dir}")


def down(cfg: FlinkConfig) -> bool:
    """Stop the daemons named in our pid dir (never any other Flink); True if something was stopped."""
    cluster = load_cluster(cfg)
    if cluster is None:
        return False
    stopped = False
    for script in DAEMONS:
        for pid in cluster.all_pids(script):
            stopped = stop_pid(pid, MARKER, timeout=15) or stopped
        for f in cluster.pid_dir.glob(f"flink-*-{DAEMONS[script]}.pid"):
            f.unlink(missing_ok=True)
    _state_file(cfg).unlink(missing_ok=True)
    return stopped


def status(cfg: FlinkConfig) -> dict:
    cluster = load_cluster(cfg)
    if cluster is None or not cluster.running():
        return {"running": False}
    overview = cluster.rest("/overview")
    return {"running": True, "rest": cluster.rest_url, **overview}


def jobmanager_address(cfg: FlinkConfig, timeout: float = 5.0) -> tuple[str, Cluster | None]:
    """``flink.jobmanager``, else the local cluster's address (and the local cluster); checked to answer,
    because ``flink run`` against a dead address retries for minutes before it says so."""
    if cfg.jobmanager:
        address, cluster = cfg.jobmanager, None
    else:
        cluster = load_cluster(cfg)
        if cluster is None or cluster.pids()["jobmanager"] is None:
            raise Unreachable(f"flink.jobmanager: no Flink cluster to talk to (none set, and no local one runs "
                              f"under flink.run_dir={cfg.run_dir}): set flink.jobmanager=HOST:PORT or "
                              "`streamrec flink up`")
        address = cluster.address
    try:
        rest(address, "/overview", timeout=timeout)
    except OSError as e:  # URLError, connection refused, timeout
        raise Unreachable(f"flink.jobmanager: no Flink JobManager answered at {address} within {timeout:.0f}s "
                          f"({getattr(e, 'reason', e)})") from None
    return address, cluster


def project_zip(cfg: FlinkConfig) -> Path:
    """The project's Python packages as one zip (``flink run -pyfs``), rebuilt on each submit."""
    out = cfg.run_dir.resolve() / "streamrec-project.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for pkg in PACKAGES:
            for f in sorted((ROOT / pkg).rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".avsc", ".json"):
                    z.write(f, f.relative_to(ROOT))
    tmp.replace(out)
    return out


def _client_env(cfg: FlinkConfig, cluster: Cluster | None) -> dict[str, str]:
    if cluster is not None:
        return cluster.env(cfg, client=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FLINK_CONF_DIR", "FLINK_HOME")}
    env["JVM_ARGS"] = f"-Xmx{cfg.jvm_heap}"
    return with_python_on_path(env)


def submit(cfg: FlinkConfig, job_args: list[str], detached: bool = False, timeout: float | None = None,
           from_savepoint: str | None = None, parallelism: int | None = None,
           cwd: Path | None = None, script: Path = JOB_SCRIPT,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``flink run [-d] [-s savepoint] [-p N] [-pyfs project.zip] -py jobs/flink_join.py <job_args>``
    against ``flink.jobmanager`` or the local cluster, from ``cwd`` (any directory). ``env`` is added
    to the client's environment: the job's secrets (``secrets.secret_env``), never in ``job_args``."""
    address, cluster = jobmanager_address(cfg)
    cmd = ["bash", str(pyflink_home() / "bin" / "flink"), "run", "-m", address]
    if detached:
        cmd.append("-d")
    if from_savepoint:
        cmd += ["-s", from_savepoint]
    if parallelism:
        cmd += ["-p", str(parallelism)]
        job_args = [*job_args, "--set", f"flink.parallelism={parallelism}"]
    if cfg.ship_project:
        cmd += ["-pyfs", str(project_zip(cfg))]
    cmd += ["-py", str(script), *job_args]
    return subprocess.run(cmd, env={**_client_env(cfg, cluster), **(env or {})}, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def running_job(address: str, name: str) -> str:
    """The id of the one RUNNING job called ``name`` on the cluster at ``address``."""
    jobs = [j for j in rest(address, "/jobs/overview")["jobs"] if j["name"] == name and j["state"] == "RUNNING"]
    if len(jobs) != 1:
        raise RuntimeError(f"{len(jobs)} running jobs named {name!r} on {address}; pass the job id")
    return jobs[0]["jid"]


def stop(cfg: FlinkConfig, job_id: str | None = None, savepoint_dir: str | None = None, drain: bool = False,
         timeout: float = 300) -> str:
    """Stop a job with a savepoint (REST ``/jobs/<id>/stop``, what ``flink stop`` calls): its sources
    stop, the savepoint is taken and committed, the job ends. Returns the savepoint's path:
    resubmit with ``submit(from_savepoint=...)``, at any parallelism or a new version of the job."""
    from jobs.flink.env import storage_uri

    address, _ = jobmanager_address(cfg)
    job_id = job_id or running_job(address, cfg.job_name)
    target = storage_uri(savepoint_dir or cfg.savepoint_dir)
    trigger = rest(address, f"/jobs/{job_id}/stop", method="POST",
                   body={"targetDirectory": target, "drain": drain})["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rest(address, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            op = status.get("operation", {})
            if "location" in op:
                return op["location"]
            cause = op.get("failure-cause", {}).get("stack-trace", str(op)).splitlines()
            raise RuntimeError("stop with savepoint failed: " + " | ".join(cause[:1] + [c for c in cause
                                                                                   if "Caused by" in c][-1:]))
        time.sleep(0.2)
    raise TimeoutError(f"no savepoint of job {job_id} within {timeout:.0f}s")
