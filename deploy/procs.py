"""Start and stop local daemons by their own pid, with pid and log files under the run dir.

``make down`` must stop only what ``make up`` started, so every daemon is tracked by the pid
file we wrote and checked against its command line before it is signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not open 127.0.0.1:{port} within {timeout:.0f}s; see {log}")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a daemon in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )


def pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker`` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pid(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; only if the process is still ours."""
    if not pid_alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def kill_pid(pid: int, marker: str) -> bool:
    """``kill -9`` (no shutdown hook runs), only if the process is still ours; waits until it is gone."""
    if not pid_alive(pid, marker):
        return False
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid, marker):  # a zombie's cmdline is empty: gone as far as we care
        time.sleep(0.01)
    return True


def with_python_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's bin dir first on PATH.

    PyFlink's embedded (thread-mode) Python, pemja, finds its site-packages through the
    ``python`` on PATH: without an activated venv it would pick the system one and fail with
    "No module named 'pemja'".
    """
    bin_dir = os.path.dirname(sys.executable)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    return {**env, "PATH": os.pathsep.join([bin_dir, *parts])}
