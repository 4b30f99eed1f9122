"""A clean stop on SIGTERM (Kubernetes, docker stop, systemd) and Ctrl-C for long-running stages."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``request_stop`` (the stage then finishes its unit of
    work and exits as if its input had ended) instead of killing the process; the old handlers come
    back after. Only the main thread may set handlers: elsewhere (a stage run by the demo in a thread)
    this does nothing, and the caller stops the stage itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, lambda *_: request_stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
