"""A real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on a free 127.0.0.1 port.

Flink's pull ``PrometheusReporter`` binds every interface (it has no host option), so tests and
machines that must stay on loopback let Flink push instead (``flink.pushgateway``, the
``PrometheusPushGatewayReporter``) to a gateway they run here, and scrape the gateway. ``make setup``
installs the binary with apt. The gateway is stopped by its own pid, checked against its command line.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.procs import free_port, port_open, spawn, stop_pid

BINARY = "prometheus-pushgateway"


def binary() -> str:
    """The gateway's executable; a clear error (what installs it) when it is missing."""
    exe = shutil.which(BINARY)
    if not exe:
        raise FileNotFoundError(f"{BINARY} is not installed: `make setup` installs it (apt-get install {BINARY})")
    return exe


@dataclass
class Pushgateway:
    """One gateway; ``run_dir`` holds its log. The port is picked free at start."""

    run_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """What ``flink.pushgateway`` takes, and where ``/metrics`` shows everything pushed."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.run_dir / "pushgateway.log"

    def _marker(self) -> str:
        return f"--web.listen-address=127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Pushgateway:
        """Start the gateway and wait until it answers ``/-/ready``."""
        exe = binary()
        self.run_dir = Path(self.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.proc = spawn([exe, self._marker()], self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{BINARY} exited with code {self.proc.returncode}; see {self.log}")
            if port_open(self.port):
                try:
                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{BINARY} not ready on {self.url} within {timeout:.0f}s; see {self.log}")

    def metrics(self, timeout: float = 3.0) -> str:
        """The gateway's ``/metrics``: every group pushed to it, plus its own metrics."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout) as r:
            return r.read().decode()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, self._marker(), timeout=timeout)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Pushgateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
