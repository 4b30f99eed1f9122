"""The Prometheus endpoint of a stage (join, archive, train), on the address ``metrics.host`` names."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("streamrec.metrics")


def serve_metrics(port: int, host: str, registry: Any = None) -> Any:
    """Serve ``registry`` (default: the process-wide one) on ``host:port`` (0 = a free port); the server.

    Loopback (the default ``metrics.host``) keeps the endpoint off the network; a scraper on another
    host (a Kubernetes pod's Prometheus) needs ``0.0.0.0`` or the pod's address."""
    from prometheus_client import REGISTRY, start_http_server

    server, _ = start_http_server(port, addr=host, registry=REGISTRY if registry is None else registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
