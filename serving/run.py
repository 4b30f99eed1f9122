"""`streamrec serve`: one serving replica process (HTTP on uvicorn, deltas on a thread)."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Fewer, shorter collector pauses (a p99 matter): what exists at start is never collected, and the
    young generation is collected less often (a request makes thousands of short-lived objects)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def serve(settings: Any, port_file: Path | None = None) -> None:
    """Bind, start the delta loop (bootstrap first), answer HTTP until SIGINT/SIGTERM; flush the logs."""
    import torch
    import uvicorn

    from serving.app import create_app
    from serving.replica import Replica
    from streamrec.kafka import check_access

    cfg = settings.serving
    torch.set_num_threads(cfg.torch_threads)
    check_access(settings.kafka)
    client = None
    if cfg.log_features:
        from streamrec.applog import Client

        if cfg.log_ack:
            settings.client.delivery_reports = "all"  # each log's ack answers its request
        client = Client(settings, **{"linger.ms": cfg.log_linger_ms})
    replica = Replica(settings)
    app = create_app(settings, replica, client)
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    sock.listen(2048)  # connections queue from here on, before uvicorn accepts them
    host, port = sock.getsockname()[:2]
    name = cfg.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    print(f"serving {name} on http://{host}:{port} (params {settings.kafka.topics.params}, "
          f"snapshots {replica.snapshot_dir})", flush=True)
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    replica.start()
    tune_gc()
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop=loop, http="httptools",
                                           access_log=False, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        replica.stop()
        if client is not None:
            left = client.flush(30)
            failed = client.metrics()["failed"]
            if left or failed:
                log.error("feature logs not delivered: %d still queued, %d failed", left, failed)
