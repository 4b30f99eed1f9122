"""Looking for a secret where it must not be: process command lines, files, captured output."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class CmdlineWatch:
    """Reads every process's ``/proc/<pid>/cmdline`` every ``period`` seconds while active.

    ``leaks``: command lines that held the secret (shown with it masked); ``seen``: command lines that
    held ``marker`` (the test's own folder), proof that the watch saw the processes it should."""

    def __init__(self, secret: str, marker: str, period: float = 0.05):
        self.secret, self.marker, self.period = secret.encode(), marker.encode(), period
        self.leaks: dict[int, str] = {}
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cmdline-watch")

    def _scan(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if self.secret in raw:
                self.leaks[int(entry.name)] = raw.replace(self.secret, b"<SECRET>").replace(b"\0", b" ").decode()
            if self.marker in raw:
                self.seen.setdefault(int(entry.name), raw.replace(b"\0", b" ").decode()[:300])

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._scan()

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def saw(self, text: str) -> bool:
        return any(text in c for c in self.seen.values())


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret`` (logs, data, state: all of it)."""
    needle = secret.encode()
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            try:
                if p.is_file() and needle in p.read_bytes():
                    hits.append(p)
            except OSError:
                continue
    return hits
