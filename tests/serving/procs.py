"""Helpers of the serving tests: stage processes as a user starts them, and JSON over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.procs import spawn

ROOT = Path(__file__).resolve().parents[2]
STREAMREC = str(Path(sys.executable).parent / "streamrec")


def http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    except (urllib.error.URLError, ConnectionError) as e:  # not listening (yet, or any more)
        return 0, str(e)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def wait_until(pred: Callable[[], Any], timeout: float, what: str, procs: list[Stage] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"{what} within {timeout}s")


class Stage:
    """One `streamrec` subcommand in its own process, output in ``log``."""

    def __init__(self, name: str, config: Path, args: list[str], log_dir: Path) -> None:
        self.name, self.log = name, log_dir / f"{name}.log"
        self.cmd = [STREAMREC, "--config", str(config), *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Stage:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = spawn(self.cmd, self.log, env)
        return self

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -9, -15):
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


class Replica(Stage):
    """`streamrec serve` on a free port (read back from its port file)."""

    def __init__(self, name: str, config: Path, log_dir: Path) -> None:
        self.port_file = log_dir / f"{name}.port"
        super().__init__(name, config, ["serve", "--port", "0", "--replica-id", name, "--port-file",
                                        str(self.port_file)], log_dir)

    def start(self) -> Replica:
        self.port_file.unlink(missing_ok=True)
        super().start()
        return self

    @property
    def url(self) -> str:
        port = wait_until(lambda: self.port_file.exists() and self.port_file.read_text(), 60,
                          f"{self.name} listening", [self])
        return f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", self.url + path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return http("POST", self.url + path, body)

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        return wait_until(lambda: (lambda r: r[0] == 200 and r[1])(self.get("/readyz")), timeout,
                          f"{self.name} ready", [self])
