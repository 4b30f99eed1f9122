"""The one configuration object, loaded from one TOML file and overridable from the command line.

Each stage owns the model of its own section (``joiner.config``, ``trainer.config`` ...) so the
code that reads a setting sits beside the code that defines it; this module only composes them.
Unknown keys are errors, so a typo fails at start with the field's dotted name.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from examples.movielens import SPEC_FILE as MOVIELENS_SPEC
from jobs.flink.config import FlinkConfig
from joiner.config import JoinerConfig
from replay.config import ReplayConfig
from schemas.spec import FeatureSpec, SpecError, load_spec, merge, read_spec_data
from serving.config import ServingConfig
from simulate.config import SimulateConfig
from sinks.config import ArchiveConfig
from streamrec import secrets
from streamrec.errors import ConfigError
from streamrec.kafka_security import KafkaSecurity, no_credentials
from streamrec.logs import LogConfig
from streamrec.section import Section
from trainer.config import TrainerConfig
from trainer.experiments.config import ExperimentsConfig

DEFAULT_CONFIG_FILE = Path("streamrec.toml")
# the feature spec when a config names none: the MovieLens demo's
DEFAULT_FEATURES_FILE = MOVIELENS_SPEC


class TopicsConfig(Section):
    features: str = "features"
    actions: str = "actions"
    examples: str = "examples"
    dead_letter: str = "dead-letter"
    params: str = Field("params", description="parameter deltas, trainer -> serving replicas (one partition)")
    partitions: dict[str, int] = Field(
        default_factory=lambda: {"features": 2, "actions": 2, "examples": 2, "dead_letter": 1, "params": 1},
        description="partition count per topic role (features, actions, examples, dead_letter, params)",
    )
    replication_factor: int = Field(
        1, ge=1, description="replicas of each topic `streamrec topics create` makes (3 on a production cluster)")

    def by_role(self) -> dict[str, str]:
        return {"features": self.features, "actions": self.actions, "examples": self.examples,
                "dead_letter": self.dead_letter, "params": self.params}

    def names(self) -> list[str]:
        return list(self.by_role().values())

    def partition_counts(self) -> dict[str, int]:
        """Topic name -> partition count, for creating the topics."""
        return {name: self.partitions.get(role, 1) for role, name in self.by_role().items()}


class KafkaConfig(Section):
    bootstrap: str = Field(
        "", description="broker list host:port[,host:port]; empty = the local broker `make up` started"
    )
    security: KafkaSecurity = Field(
        default_factory=KafkaSecurity, description="protocol, SASL and TLS of every Kafka client, Flink's included"
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="a command fails at start if no broker answered (or one refused it) within this "
                               "(exit code 3)"
    )
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    producer: dict[str, Any] = Field(
        default_factory=dict, description="extra librdkafka producer settings"
    )
    consumer: dict[str, Any] = Field(
        default_factory=lambda: {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        description="extra librdkafka consumer settings",
    )

    @field_validator("producer", "consumer")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any]) -> dict[str, Any]:
        return no_credentials(v)


class MetricsConfig(Section):
    host: str = Field(
        "127.0.0.1", description="the address the Prometheus endpoints of join, archive and train bind to "
                                 "(0.0.0.0 = every interface, for a scraper on another host)"
    )

    @field_validator("host")
    @classmethod
    def _ip(cls, v: str) -> str:
        ipaddress.ip_address(v)  # ValueError names the field
        return v


class StackConfig(Section):
    run_dir: Path = Path(".run")
    broker_port: int = Field(
        0, ge=0, le=65535, description="the local broker's port; 0 = picked free at the first `make up`, then kept"
    )


def local_broker_dir(stack: StackConfig) -> Path:
    """Where `make up` keeps the local broker (data, ports.json, pid)."""
    return Path(stack.run_dir) / "kafka"


def local_bootstrap(stack: StackConfig) -> str:
    """The address of the broker `make up` started under ``stack.run_dir``, or "" if there is none."""
    try:
        ports = json.loads((local_broker_dir(stack) / "ports.json").read_text())
        return f"127.0.0.1:{int(ports['port'])}"
    except (OSError, ValueError, KeyError):
        return ""


class ClientConfig(Section):
    """The application client (``streamrec.client``): how it produces the two logs."""

    linger_ms: float = Field(20.0, ge=0, description="librdkafka linger.ms: how long a batch waits to fill")
    batch_messages: int = Field(10_000, gt=0, description="librdkafka batch.num.messages")
    queue_max_messages: int = Field(500_000, gt=0, description="messages buffered locally before send() blocks")
    compression: str = Field("lz4", pattern="^(none|gzip|snappy|lz4|zstd)$")
    idempotence: bool = Field(True, description="retries never duplicate or reorder a message (acks=all)")
    delivery_timeout_ms: int = Field(
        120_000, gt=0, description="a message not acknowledged within this (retries included) fails")
    retry_backoff_ms: int = Field(100, ge=1, description="first back-off between retries (librdkafka doubles it)")
    block_timeout_s: float = Field(
        30.0, ge=0, description="send() waits this long for room in a full local queue, then raises BufferError")
    delivery_reports: Literal["errors", "all"] = Field(
        "errors", description="errors: only failed deliveries call back (fast; `delivered` is counted from the "
        "queue); all: every message's on_delivery is called once acknowledged")
    fid_cache_size: int = Field(
        1_000_000, ge=0, description="raw values whose FIDs are kept per slot (hashing is most of a log's cost)")
    stats_interval_ms: int = Field(5_000, ge=0, description="librdkafka statistics (retries, queue) this often")
    request_cache_size: int = Field(
        65_536, ge=1, description="request ids whose Kafka key and action header are kept (a request's actions "
        "follow its feature log within seconds, interleaved with other requests')")
    native: bool = Field(
        True, description="encode on the C paths (streamrec/applog/_native.c) when the install built them, ~2.4x "
        "faster; false: the pure-Python paths alone (same bytes; the fallback where no compiler was)")


class Settings(Section):
    features: FeatureSpec = Field(default_factory=lambda: load_spec(DEFAULT_FEATURES_FILE),
                                  description="the data contract: slots, crosses, dense features, actions")
    stack: StackConfig = Field(default_factory=StackConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    joiner: JoinerConfig = Field(default_factory=JoinerConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    flink: FlinkConfig = Field(default_factory=FlinkConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig,
                                           description="the offline experiments (streamrec experiment ...)")
    simulate: SimulateConfig = Field(default_factory=SimulateConfig,
                                     description="the live loop with an online vs frozen A/B (streamrec simulate)")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], value); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} names no field")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _describe(err: ValidationError) -> str:
    """One line per error, naming the field; the offending value only if it is a plain value outside
    any secret (a section's value would show its secrets, as would a mistyped secret)."""
    secret = [".".join(p) for p in secrets.secret_paths(Settings)]
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        shown = "input" in e and not isinstance(e["input"], dict | list) \
            and not any(s == field or s.startswith(field + ".") for s in secret)
        lines.append(f"  {field}: {e['msg']}" + (f" (got {e['input']!r})" if shown else ""))
    if len(lines) == 1:  # the usual case: one line
        return "invalid configuration: " + lines[0].strip()
    return "invalid configuration:\n" + "\n".join(lines)


def to_overrides(settings: Settings) -> list[str]:
    """``--set`` overrides that rebuild ``settings`` in another process (only what differs from defaults).

    Secrets are left out: pass them in the child's environment (``secrets.child_env``)."""
    out: list[str] = []
    hidden = {".".join(p) for p in secrets.secret_paths(Settings)}

    def walk(prefix: str, value: Any, default: Any) -> None:
        if prefix in hidden:
            return
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v, default.get(k) if isinstance(default, dict) else None)
        elif value != default and value is not None and value != {}:
            out.append(f"{prefix}={json.dumps(value)}")  # JSON scalars and lists are valid TOML values

    defaults = Settings().model_dump(mode="json")
    for section, value in settings.model_dump(mode="json").items():
        # the spec goes whole: its default comes from a file, so a diff against it would not rebuild it
        walk(section, value, None if section == "features" else defaults[section])
    if settings.features.file is None:
        out.append('features.file=""')  # an inline spec: no file under it
    return out


def _feature_data(features: Any) -> Any:
    """The config file's ``[features]`` as a whole spec: the file it names (``file``) with the
    section's keys on top; without ``file`` the section is the whole spec (``file = ""`` says
    so explicitly); without a section, the default spec (MovieLens's)."""
    if features is None:
        return read_spec_data(DEFAULT_FEATURES_FILE)
    if not isinstance(features, dict):
        return features  # let validation name the problem
    features = dict(features)
    file = features.pop("file", None)
    if not file:
        return features
    return merge(read_spec_data(file), features)


def load_config(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Settings:
    """Read ``path`` (default ``streamrec.toml`` if present), apply overrides, validate."""
    data: dict[str, Any] = {}
    file = Path(path) if path is not None else DEFAULT_CONFIG_FILE
    if path is not None and not file.exists():
        raise ConfigError(f"config file {file} does not exist")
    if file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {file}: {e}") from e
        features = data.get("features")
        if isinstance(features, dict) and isinstance(features.get("file"), str) and features["file"]:
            spec_file = Path(features["file"])  # relative to the config file that names it
            features["file"] = str(spec_file if spec_file.is_absolute() else file.parent / spec_file)
    secrets.apply_env(Settings, data)  # file < environment < --set
    parsed = [parse_override(text) for text in overrides]
    for keys, value in parsed:  # another spec file first (relative to the working directory) ...
        if keys == ["features", "file"]:
            data["features"] = {**(data.get("features") or {}), "file": value}
    try:
        data["features"] = _feature_data(data.get("features"))
    except SpecError as e:
        raise ConfigError(f"invalid configuration: features.file: {e}") from None
    for keys, value in parsed:  # ... then every override on top of the whole spec
        if keys != ["features", "file"]:
            _apply(data, keys, value)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    if not settings.kafka.bootstrap:
        settings.kafka.bootstrap = local_bootstrap(settings.stack)
    return settings


def settings_from_json(text: str) -> Settings:
    """Settings sent as ``model_dump_json`` (secrets redacted there), secrets from the environment."""
    data = json.loads(text)
    secrets.apply_env(Settings, data)
    return Settings.model_validate(data)


def public_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``overrides`` without those that set a secret (for a child's command line; the secret goes in
    its environment). Warns on stderr: a secret given with --set is on this command line too."""
    out = []
    for text in overrides:
        if secrets.holds_secret(Settings, *parse_override(text)):
            print("warning: a secret given with --set shows in this process's command line; "
                  "set it in the config file or the environment (STREAMREC_KAFKA__SECURITY__PASSWORD)",
                  file=sys.stderr)
        else:
            out.append(text)
    return out
