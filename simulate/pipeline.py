"""The pipeline a simulation runs against, each stage a `streamrec` process of its own: the embedded
joiner, the online trainer (publishing deltas), and two model servers, one per arm.

The online arm's replica follows the params topic; the frozen arm's is started with
``serving.follow_deltas = false`` on a private copy of the starting snapshot, so it serves the
batch-trained model unchanged for the whole run. The children get the run's settings as
``--set`` overrides (secrets in their environment), and are stopped by their own pids.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.procs import spawn
from streamrec.config import Settings, to_overrides
from streamrec.secrets import child_env


def _streamrec() -> str:
    beside = Path(sys.executable).parent / "streamrec"  # the venv's console script
    return str(beside) if beside.exists() else (shutil.which("streamrec") or "streamrec")


class Process:
    """One stage: ``streamrec --set ... <args>``, output in ``<logs>/<name>.log``."""

    def __init__(self, name: str, settings: Settings, args: list[str], logs: Path, extra: Sequence[str] = ()) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        sets = [a for o in [*to_overrides(settings), *extra] for a in ("--set", o)]
        self.cmd = [_streamrec(), *sets, *args]
        self.env = child_env(settings)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self.proc = spawn(self.cmd, self.log, self.env)
        return self

    def check(self) -> None:
        """Raise if the stage died (a dead stage would silently freeze the loop)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n{self.tail()}")

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a clean end: final sync, snapshot, flushed logs), SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


class Server(Process):
    """`streamrec serve` on a free port, with one keep-alive HTTP connection to it."""

    def __init__(self, name: str, settings: Settings, logs: Path, extra: Sequence[str] = ()) -> None:
        self.port_file = logs / f"{name}.port"
        super().__init__(name, settings, ["serve", "--port", "0", "--replica-id", name, "--port-file",
                                          str(self.port_file)], logs, extra)
        self._conn: http.client.HTTPConnection | None = None

    def connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not listening within {timeout:.0f}s; see {self.log}")
            time.sleep(0.2)
        self._conn = http.client.HTTPConnection("127.0.0.1", int(self.port_file.read_text()), timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._conn is not None, "connect() first"
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):  # a keep-alive connection the server closed: reconnect once
            try:
                self._conn.request(method, path, data, {"content-type": "application/json"})
                r = self._conn.getresponse()
                return r.status, json.loads(r.read() or b"null")
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            status, body = self.call("GET", "/readyz")
            if status == 200:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {timeout:.0f}s: {body}; see {self.log}")
            time.sleep(0.3)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self._conn is not None:
            self._conn.close()
        return super().stop(timeout)
