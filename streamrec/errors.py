"""The failures a command reports in one line, each with its documented exit code.

Stages raise these because they know what failed and which setting names it; the CLI, at the top,
prints the message on one line and exits with ``exit_code``. Anything else that escapes a command is
a bug: one line too, with exit code ``INTERNAL`` and the traceback only under ``--debug``.
The table is in the README ("Exit codes"); ``EXIT_CODES`` is its source.
"""

from __future__ import annotations

OK = 0
VERDICT = 1  # the command ran and its answer is "no": a demo check failed, an incompatible spec
CONFIG = 2  # a bad setting, option or config file (the message names the field)
UNREACHABLE = 3  # a broker, HDFS or Flink cluster did not answer, or the local stack is not running
MISSING_INPUT = 4  # a topic is missing, an input range is empty, no snapshot to restore
INTERNAL = 70  # a bug (EX_SOFTWARE): rerun with --debug for the traceback
INTERRUPTED = 130  # 128 + SIGINT: the demo stopped by Ctrl-C or SIGTERM (its stages stopped cleanly, no report)

EXIT_CODES = {
    OK: "success, including a clean stop on SIGTERM or Ctrl-C",
    VERDICT: "the command ran and says no: a demo check failed, `features check` found an incompatible change",
    CONFIG: "bad configuration, option or config file; a refused Kafka login or TLS handshake",
    UNREACHABLE: "a service did not answer: Kafka broker, HDFS, Flink cluster (or the local one is not running)",
    MISSING_INPUT: "the input is not there: a topic is missing, an input range is empty, no snapshot to restore",
    INTERNAL: "an unexpected error (a bug): one line; `--debug` shows the traceback",
    INTERRUPTED: "`demo` stopped by Ctrl-C or SIGTERM before its end: its stages stopped cleanly, no report",
}


class StreamrecError(Exception):
    """A failure with a clear one-line message and its exit code."""

    exit_code = INTERNAL


class ConfigError(StreamrecError, ValueError):
    """A config file or override that cannot be used; the message names the field."""

    exit_code = CONFIG


class Unreachable(StreamrecError, ConnectionError):
    """A service (broker, HDFS, Flink cluster) did not answer within its timeout."""

    exit_code = UNREACHABLE


class MissingInput(StreamrecError, LookupError):
    """What a command reads is not there: a topic, the examples of an hour range, a snapshot."""

    exit_code = MISSING_INPUT


def one_line(e: BaseException) -> str:
    """The message on one line: multi-line messages (a config with several bad fields) joined by '; '."""
    parts = [p.strip() for p in str(e).splitlines() if p.strip()]
    return "; ".join(parts) or type(e).__name__
