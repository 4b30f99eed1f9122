"""Logging of every command and stage: one level and one format (``log.level``, ``log.format``).

``text`` is for a terminal; ``json`` writes one object per line (``ts``, ``level``, ``logger``,
``message``, ``exc`` if any) for a log shipper (Loki, Elasticsearch, Cloud Logging), which then
needs no parsing rules. Logs always go to stderr: stdout is for a command's result (JSON summaries
must stay parseable). librdkafka's lines arrive through the ``librdkafka`` logger
(``streamrec.kafka``), so they follow the same level and format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from pydantic import Field

from streamrec.section import Section


class LogConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the lowest level logged (--log-level)")
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line; json: one JSON object per line (--log-format)")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, UTC timestamps with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out = {"ts": ts, "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def stderr_console() -> Any:
    """The one rich console on stderr: progress bars and (on a terminal) text logs share it, so a log
    line prints above a live bar instead of through it."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True)
    return _CONSOLE


_CONSOLE: Any = None


def setup_logging(cfg: LogConfig) -> None:
    """Replace the root logger's handlers with one on stderr in ``cfg``'s format and level."""
    handler: logging.Handler
    if cfg.format == "text" and sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=stderr_console(), show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if cfg.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.level)
    # libraries that log every call at INFO (WebHDFS requests, matplotlib's font cache)
    for noisy in ("hdfs", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
