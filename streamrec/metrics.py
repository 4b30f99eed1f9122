"""The Prometheus endpoint of a stage (join, archive, train), on the address ``metrics.host`` names.

One port rule for every stage (``joiner.metrics_port``, ``archive.metrics_port``,
``trainer.metrics_port``): unset = no endpoint, 0 = a free port (logged, and returned here), N = port N.
Besides ``/metrics`` it answers ``/healthz``: 200 ``ok`` while the stage's ``health`` check passes,
503 otherwise (a liveness probe that needs no Prometheus parsing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

log = logging.getLogger("streamrec.metrics")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's signature
        """Scrapes every few seconds would flood the stage's log."""


def serve_metrics(port: int, host: str, registry: Any = None, health: Callable[[], bool] | None = None) -> Any:
    """Serve ``registry`` (default: the process-wide one) on ``host:port`` from a daemon thread; the server
    (``server.server_port`` is the bound port).

    Loopback (the default ``metrics.host``) keeps the endpoint off the network; a scraper on another
    host (a Kubernetes pod's Prometheus) needs ``0.0.0.0`` or the pod's address."""
    from prometheus_client import REGISTRY, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics_app = make_wsgi_app(REGISTRY if registry is None else registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            ok = health is None or health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"unhealthy\n"]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics (health: /healthz)", host, server.server_port)
    return server
