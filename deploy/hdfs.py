"""A real single-node HDFS (Hadoop 3 NameNode + DataNode, WebHDFS) on free 127.0.0.1 ports.

For tests and `make hdfs-up`: the jars come from Maven Central (``deploy/pom.xml``, .vendor/hadoop).
Each instance lives in its own run dir (conf/, data/, logs, pid files, ports.json); the ports are
picked free at first start and kept, so a stop + start (an outage in a test) brings the same
cluster back with its data. Daemons are stopped by their own pids, checked against their command line.
"""

from __future__ import annotations

import json
import shutil
import string
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.jvm import classpath, java_bin, kept_ports, save_ports, vendor_dir
from deploy.procs import pid_alive, read_pid, spawn, stop_pid

TEMPLATES = Path(__file__).resolve().parent / "hdfs"
PORT_NAMES = (
    "rpc_port", "http_port", "secondary_http_port", "https_port",
    "dn_port", "dn_http_port", "dn_https_port", "dn_ipc_port",
)
NAMENODE = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE = "org.apache.hadoop.hdfs.server.datanode.DataNode"
# Hadoop reflects into JDK internals that Java 17 closes by default.
JAVA_OPENS = [
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
]
# HttpServer2 looks up webapps/<name> on the classpath; the Maven jars do not carry the UI
WEBAPPS = ("hdfs", "datanode", "secondary", "journal", "static")


@dataclass
class Hdfs:
    """One NameNode + one DataNode; ``run_dir`` holds everything of this instance."""

    run_dir: Path
    heap: str = "-Xmx256m"
    user: str = "streamrec"
    block_size: int = 8 << 20
    ports: dict[str, int] = field(default_factory=dict)
    startup_s: float | None = None  # how long the last start took, format included
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        self.ports = kept_ports(self.run_dir, PORT_NAMES, self.ports)

    # ---- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The WebHDFS base URL (what `hdfs.InsecureClient` takes)."""
        return f"http://127.0.0.1:{self.ports['http_port']}"

    @property
    def fs_uri(self) -> str:
        return f"hdfs://127.0.0.1:{self.ports['rpc_port']}"

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "conf"

    def client(self):  # -> hdfs.InsecureClient (imported lazily: deploy must not need it to start)
        from hdfs import InsecureClient

        return InsecureClient(self.url, user=self.user)

    # ---- life cycle -----------------------------------------------------------------------
    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        values = {**self.ports, "data_dir": str(self.run_dir / "data"), "user": self.user,
                  "block_size": self.block_size}
        for name in ("core-site.xml", "hdfs-site.xml"):
            text = string.Template((TEMPLATES / f"{name}.in").read_text()).substitute(values)
            (self.conf_dir / name).write_text(text)
        shutil.copy(TEMPLATES / "log4j.properties", self.conf_dir / "log4j.properties")
        for app in WEBAPPS:
            (self.run_dir / "res" / "webapps" / app).mkdir(parents=True, exist_ok=True)
        (self.run_dir / "res/webapps/hdfs/index.html").write_text("streamrec test HDFS\n")
        save_ports(self.run_dir, self.ports)

    def _cmd(self, main_class: str, *args: str) -> list[str]:
        cp = classpath(self.conf_dir, self.run_dir / "res", vendor_dir("hadoop") / "*")
        return [java_bin(), self.heap, *JAVA_OPENS, "-Djava.net.preferIPv4Stack=true",
                f"-Dhadoop.log.dir={self.run_dir / 'logs'}", f"-Dstreamrec.hdfs={self.run_dir}",
                "-cp", cp, main_class, *args]

    def _format_if_new(self) -> None:
        if (self.run_dir / "data/nn/current").exists():
            return
        log = self.run_dir / "format.log"
        with open(log, "wb") as out:
            rc = subprocess.run(self._cmd(NAMENODE, "-format", "-force", "-nonInteractive"),
                                stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            raise RuntimeError(f"HDFS NameNode format failed (exit {rc}); see {log}")

    def _pid_file(self, role: str) -> Path:
        return self.run_dir / f"{role}.pid"

    def _marker(self) -> str:
        return f"-Dstreamrec.hdfs={self.run_dir}"

    def running(self, role: str) -> bool:
        pid = read_pid(self._pid_file(role))
        return bool(pid and pid_alive(pid, self._marker()))

    def _start_role(self, role: str) -> None:
        if self.running(role):
            return
        main = NAMENODE if role == "namenode" else DATANODE
        proc = spawn(self._cmd(main), self.run_dir / f"{role}.log")
        self._procs[role] = proc
        self._pid_file(role).write_text(f"{proc.pid}\n")

    def start(self, timeout: float = 90.0) -> Hdfs:
        """Format at first start, start both daemons, wait until a DataNode is live and safe mode is off."""
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._format_if_new()
        try:
            self._start_role("namenode")
            self._start_role("datanode")
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _jmx(self, bean: str) -> dict:
        url = f"{self.url}/jmx?qry=Hadoop:service=NameNode,name={bean}"
        with urllib.request.urlopen(url, timeout=2) as r:
            beans = json.load(r).get("beans", [])
        return beans[0] if beans else {}

    def ready(self) -> bool:
        try:
            live = self._jmx("FSNamesystemState").get("NumLiveDataNodes", 0)
            safemode = self._jmx("NameNodeInfo").get("Safemode", "?")
        except OSError:
            return False
        return live >= 1 and safemode == ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for role, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"HDFS {role} exited with code {proc.returncode}; "
                                       f"see {self.run_dir / (role + '.log')}")
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"HDFS not ready within {timeout:.0f}s; see {self.run_dir}/*.log")

    def stop_role(self, role: str) -> None:
        pid = read_pid(self._pid_file(role))
        if pid:
            stop_pid(pid, self._marker(), timeout=15)
        proc = self._procs.pop(role, None)
        if proc is not None:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._pid_file(role).unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the DataNode, then the NameNode (data and ports stay for a later start)."""
        self.stop_role("datanode")
        self.stop_role("namenode")

    def __enter__(self) -> Hdfs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- `streamrec hdfs up|down|status` (make hdfs-up / hdfs-down) ------------------------------
def state_file(run_dir: Path) -> Path:
    return Path(run_dir) / "hdfs.json"


def up(run_dir: Path) -> Hdfs:
    h = Hdfs(run_dir).start()
    state_file(run_dir).write_text(json.dumps({"url": h.url, "fs": h.fs_uri, "user": h.user}) + "\n")
    return h


def down(run_dir: Path) -> bool:
    if not (Path(run_dir) / "ports.json").exists():
        return False
    h = Hdfs(run_dir)
    was = h.running("namenode") or h.running("datanode")
    h.stop()
    state_file(run_dir).unlink(missing_ok=True)
    return was


def url_from_run_dir(run_dir: Path) -> str | None:
    """The WebHDFS URL of the HDFS that `streamrec hdfs up` started under ``run_dir``, if any."""
    try:
        return json.loads(state_file(run_dir).read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
