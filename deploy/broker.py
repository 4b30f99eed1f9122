"""The local broker: a one-node Apache Kafka in KRaft mode (combined broker and controller).

Jars from Maven Central (``deploy/pom.xml``, ``make setup``). Each instance lives in its own run
dir: ``server.properties``, the log dir ``data/`` (durable: a restart, even after ``kill -9``,
brings the topics back), ``ports.json`` (free loopback ports picked at first start, then kept),
``broker.pid`` and ``kafka.log``. Storage is formatted once, with a fresh cluster id.
"""

from __future__ import annotations

import base64
import string
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.jvm import classpath, java_bin, kept_ports, save_ports, vendor_dir
from deploy.procs import kill_pid, pid_alive, port_open, read_pid, spawn, stop_pid

TEMPLATES = Path(__file__).resolve().parent / "kafka"
PORT_NAMES = ("port", "controller_port")


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as ``kafka-storage random-uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass
class Broker:
    """One Kafka node on 127.0.0.1; ``port=0`` picks a free port at first start (then kept)."""

    run_dir: Path
    port: int = 0
    heap: str = "512m"
    ports: dict[str, int] = field(default_factory=dict)
    startup_s: float | None = None  # how long the last start took, format included
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir).resolve()
        self.ports = kept_ports(self.run_dir, PORT_NAMES, {"port": self.port, **self.ports})
        self.port = self.ports["port"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.run_dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    def _marker(self) -> str:
        return f"-Dstreamrec.kafka={self.run_dir}"

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [java_bin(), f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={TEMPLATES / 'log4j2.properties'}", self._marker(),
                "-cp", classpath(vendor_dir("kafka") / "*"), main_class, *args]

    def _write_conf(self) -> Path:
        text = string.Template((TEMPLATES / "server.properties.in").read_text()).substitute(
            **self.ports, data_dir=self.run_dir / "data")
        conf = self.run_dir / "server.properties"
        conf.write_text(text)
        save_ports(self.run_dir, self.ports)
        return conf

    def _format_if_new(self, conf: Path) -> None:
        if (self.run_dir / "data" / "meta.properties").exists():
            return
        out = subprocess.run(self._java("kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
                                        "-t", new_cluster_id(), "-c", str(conf)),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"Kafka storage format failed (exit {out.returncode}): {out.stderr or out.stdout}")

    def running(self) -> bool:
        pid = read_pid(self.pid_file)
        return bool(pid and pid_alive(pid, self._marker()))

    def start(self, timeout: float = 90.0) -> Broker:
        """Format at first start, start the node, wait until it serves metadata. Idempotent."""
        if self.running():
            return self
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        conf = self._write_conf()
        self._format_if_new(conf)
        self.proc = spawn(self._java("kafka.Kafka", str(conf)), self.log)
        self.pid_file.write_text(f"{self.proc.pid}\n")
        try:
            self.wait_ready(time.monotonic() - t0 + timeout)
        except Exception:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def ready(self) -> bool:
        """The node answers a metadata request and lists itself as a broker."""
        from confluent_kafka.admin import AdminClient  # lazily: `deploy` starts without it

        if not port_open(self.port):
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=1).brokers)
        except Exception:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {self.proc.returncode}; see {self.log}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"Kafka not ready on {self.bootstrap} within {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 30.0) -> None:
        """A controlled shutdown (SIGTERM; SIGKILL after ``timeout``); the data stays."""
        pid = read_pid(self.pid_file)
        if pid:
            stop_pid(pid, self._marker(), timeout=timeout)
        self._reap()

    def kill(self) -> None:
        """``kill -9``: no shutdown at all (crash tests)."""
        pid = read_pid(self.pid_file)
        if pid:
            kill_pid(pid, self._marker())
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
