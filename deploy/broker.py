"""The local broker: a one-node Apache Kafka in KRaft mode (combined broker and controller).

Jars from Maven Central (``deploy/pom.xml``, ``make setup``). Each instance lives in its own run
dir: ``server.properties``, the log dir ``data/`` (durable: a restart, even after ``kill -9``,
brings the topics back), ``ports.json`` (free loopback ports picked at first start, then kept),
``broker.pid`` and ``kafka.log``. Storage is formatted once, with a fresh cluster id.

Secured (``scram_users``, ``tls``): a SASL_PLAINTEXT listener with SCRAM-SHA-256/512 next to
PLAINTEXT, and with ``tls`` a SASL_SSL one too (a PEM keystore signed by a throw-away CA,
``deploy/tls.py``). PLAINTEXT stays, on loopback, for inter-broker traffic and for setting the
broker up: the SCRAM users are created through it with the Admin API once the node is up, not at
format time (``kafka-storage format --add-scram`` would put each password on a command line).
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
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 8192


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as ``kafka-storage random-uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass
class Broker:
    """One Kafka node on 127.0.0.1; ``port=0`` picks a free port at first start (then kept).

    ``scram_users`` (name -> password): a SASL_PLAINTEXT listener (``sasl_bootstrap``) where these
    users log in with SCRAM-SHA-256 or -512; ``tls``: also a SASL_SSL one (``ssl_bootstrap``,
    clients trust ``ca_file``)."""

    run_dir: Path
    port: int = 0
    heap: str = "512m"
    ports: dict[str, int] = field(default_factory=dict)
    scram_users: dict[str, str] = field(default_factory=dict, repr=False)
    tls: bool = False
    startup_s: float | None = None  # how long the last start took, format included
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tls and not self.scram_users:
            raise ValueError("Broker(tls=True) serves SASL_SSL: give scram_users too")
        self.run_dir = Path(self.run_dir).resolve()
        names = ("port", "controller_port") + (("sasl_port",) if self.scram_users else ()) \
            + (("ssl_port",) if self.tls else ())
        self.ports = kept_ports(self.run_dir, names, {"port": self.port, **self.ports})
        self.port = self.ports["port"]

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener (SCRAM)."""
        return f"127.0.0.1:{self.ports['sasl_port']}"

    @property
    def ssl_bootstrap(self) -> str:
        """The SASL_SSL listener (SCRAM over TLS)."""
        return f"127.0.0.1:{self.ports['ssl_port']}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the SASL_SSL listener's certificate (PEM)."""
        return self.run_dir / "tls" / "ca.pem"

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

    def _listeners(self) -> dict[str, str]:
        """server.properties lines for the client listeners and their security."""
        names = {"PLAINTEXT": "port", "SASL_PLAINTEXT": "sasl_port", "SASL_SSL": "ssl_port"}
        names = {n: p for n, p in names.items() if p in self.ports}
        security = []
        if self.scram_users:
            security.append(f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}")
            for listener in names.keys() - {"PLAINTEXT"}:
                for mech in SCRAM_MECHANISMS:
                    security.append(f"listener.name.{listener.lower()}.{mech.lower()}.sasl.jaas.config="
                                    "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        if self.tls:
            from deploy.tls import make_ca

            _, server = make_ca(self.ca_file.parent)
            security += ["ssl.keystore.type=PEM", f"ssl.keystore.location={server}", "ssl.client.auth=none"]
        return {"listeners": ",".join(f"{n}://127.0.0.1:{self.ports[p]}" for n, p in names.items()),
                "protocol_map": ",".join(f"{n}:{n}" for n in names), "security": "\n".join(sorted(security))}

    def _write_conf(self) -> Path:
        text = string.Template((TEMPLATES / "server.properties.in").read_text()).substitute(
            controller_port=self.ports["controller_port"], data_dir=self.run_dir / "data", **self._listeners())
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
            self._add_scram_users(timeout)
        except Exception:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def client_config(self, user: str | None = None, tls: bool = False) -> dict[str, object]:
        """A ``KafkaConfig`` as a dict: the PLAINTEXT listener, or with ``user`` the SASL_PLAINTEXT one
        (SASL_SSL with ``tls``) logged in as that user with SCRAM-SHA-512."""
        if user is None:
            return {"bootstrap": self.bootstrap}
        return {"bootstrap": self.ssl_bootstrap if tls else self.sasl_bootstrap,
                "security": {"protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                             "username": user, "password": self.scram_users[user],
                             **({"ssl_ca_location": str(self.ca_file)} if tls else {})}}

    def _add_scram_users(self, timeout: float) -> None:
        """Create (or update) the SCRAM users through the PLAINTEXT listener, then wait until each can
        log in on the SASL listener (the credentials travel through the metadata log first)."""
        if not self.scram_users:
            return
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        from streamrec.config import KafkaConfig
        from streamrec.kafka import KafkaAccessError, admin, check_access

        client = admin(KafkaConfig(bootstrap=self.bootstrap))  # kept until the futures are done
        for mech in SCRAM_MECHANISMS:  # one request per mechanism: the broker takes one change per user
            info = ScramCredentialInfo(ScramMechanism[mech.replace("-", "_")], SCRAM_ITERATIONS)
            upserts = [UserScramCredentialUpsertion(name, info, pw.encode()) for name, pw in self.scram_users.items()]
            for fut in client.alter_user_scram_credentials(upserts).values():
                fut.result(timeout)
        deadline = time.monotonic() + timeout
        for name in self.scram_users:
            while True:
                try:
                    check_access(KafkaConfig.model_validate(self.client_config(name)), timeout=2)
                    break
                except KafkaAccessError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def ready(self) -> bool:
        """The node answers a metadata request and lists itself as a broker."""
        from streamrec.config import KafkaConfig  # lazily: `deploy` starts without confluent-kafka
        from streamrec.kafka import admin

        if not port_open(self.port):
            return False
        client = admin(KafkaConfig(bootstrap=self.bootstrap), log_level=0)
        try:
            return bool(client.list_topics(timeout=1).brokers)
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
