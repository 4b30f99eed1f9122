"""The local Kafka-protocol broker: Tansu (a Rust broker shipped in a PyPI wheel), memory storage.

Memory storage means a restart loses topics: right for tests and the demo; a durable
cluster uses Apache Kafka (``deploy/cluster``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deploy.procs import free_port, spawn, stop_pid, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def tansu_binary() -> Path:
    path = Path(os.environ.get("TANSU_BIN", ROOT / ".vendor/bin/tansu"))
    if not path.exists():
        raise FileNotFoundError(f"Tansu broker binary not found at {path}: run `make setup`")
    return path


@dataclass
class Broker:
    """One Tansu broker on 127.0.0.1; ``port=0`` picks a free port."""

    run_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.run_dir / f"tansu-{self.port}.log"

    def start(self, timeout: float = 15.0) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        env.setdefault("RUST_LOG", "warn")
        self.proc = spawn(
            [str(tansu_binary()), "broker", "--cluster-id", "streamrec",
             "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.log, env,
        )
        try:
            wait_for_port(self.port, self.proc, timeout, "Tansu broker", self.log)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid, "tansu", timeout=5)
            self.proc.wait(5)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
