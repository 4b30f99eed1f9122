"""Config section ``flink`` -> a Flink ``Configuration`` and a ready ``StreamExecutionEnvironment``.

Everything the job needs from Flink is set here in one place: connector jars, Python thread
mode, the RocksDB state backend with file checkpoints retained on cancellation (so a run can
be resumed from its last checkpoint), the restart strategy and the Python bundle sizes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

from deploy.jvm import vendor_dir
from deploy.procs import with_python_on_path
from jobs.flink.config import FlinkConfig

ROOT = Path(__file__).resolve().parents[2]


def jar_urls(cfg: FlinkConfig) -> list[str]:
    """Absolute file:// URLs of the job's jars (relative paths are taken from the project root; a
    folder stands for the jars in it); none configured: the ``flink`` jars of `streamrec setup` or
    `make setup` (``deploy.jvm.vendor_dir``), wherever the package is installed."""
    urls = []
    for jar in cfg.jars or [vendor_dir("flink")]:
        path = jar if jar.is_absolute() else ROOT / jar
        found = sorted(path.glob("*.jar")) if path.is_dir() else [path] if path.exists() else []
        if not found:
            raise FileNotFoundError(f"flink.jars: no jar at {path}; run `streamrec setup` (or `make setup`)")
        urls += [p.resolve().as_uri() for p in found]
    return urls


def storage_uri(location: str) -> str:
    """A checkpoint/savepoint location as Flink wants it: URIs as given, local paths as file:// URIs."""
    return location if "://" in location else Path(location).resolve().as_uri()


def local_path(location: str) -> Path | None:
    """The local folder of a location, or None if it is remote (hdfs://, s3://)."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    return None if "://" in location else Path(location).resolve()


def flink_configuration(cfg: FlinkConfig, restore_from: str | None = None) -> dict[str, str]:
    """The job-level Flink settings as plain strings (also written into the standalone conf)."""
    conf = {
        "pipeline.jars": ";".join(jar_urls(cfg)),
        "python.execution-mode": cfg.execution_mode,
        "python.executable": cfg.python_executable or sys.executable,
        "python.client.executable": sys.executable,
        "python.fn-execution.bundle.size": str(cfg.bundle_size),
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        "python.state.cache-size": str(cfg.state_cache_size),
        "state.backend.type": cfg.state_backend,
        "execution.checkpointing.dir": storage_uri(cfg.checkpoint_dir),
        "execution.checkpointing.savepoint-dir": storage_uri(cfg.savepoint_dir),
        "table.exec.source.idle-timeout": f"{cfg.source_idle_timeout_ms} ms",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(cfg.restart_attempts),
        "restart-strategy.fixed-delay.delay": f"{cfg.restart_delay_ms} ms",
        # pemja keeps Python classes alive across the JVM's user classloader: harmless, but
        # Flink's leak check would fail the job at the end of a local run.
        "classloader.check-leaked-classloader": "false",
    }
    if restore_from:
        conf["execution.state-recovery.path"] = restore_from
    return conf


def make_env(cfg: FlinkConfig, restore_from: str | None = None) -> StreamExecutionEnvironment:
    os.environ.update(with_python_on_path(dict(os.environ)))  # before the JVM starts: it inherits PATH
    conf = Configuration()
    for k, v in flink_configuration(cfg, restore_from).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    if cfg.checkpoint_interval_ms > 0:
        # Aligned (exactly-once) barriers keep keyed state, source offsets and the sinks'
        # transactions consistent.
        env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env
