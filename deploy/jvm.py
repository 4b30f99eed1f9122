"""What the local JVM daemons (Kafka, HDFS) share: the java binary, their vendored jars, ports kept per run dir.

The jars come from Maven Central through ``deploy/pom.xml`` (``make setup``), one folder per part
under ``.vendor/``. Each daemon instance lives in its own run dir; its ports are picked free at
first start and written there, so a stop + start (an outage in a test) brings the same instance
back, with its data, where its clients expect it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from deploy.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def java_bin() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin/java").exists():
        return str(Path(java_home) / "bin/java")
    found = shutil.which("java")
    if not found:
        raise FileNotFoundError("java not found (Java 17 is needed for Kafka and HDFS)")
    return found


def vendor_dir(part: str) -> Path:
    """``.vendor/<part>`` (or ``$STREAMREC_VENDOR/<part>``), checked to hold jars."""
    home = Path(os.environ.get("STREAMREC_VENDOR", ROOT / ".vendor")) / part
    if not any(home.glob("*.jar")):
        raise FileNotFoundError(f"no {part} jars under {home}: run `make setup` (deploy/pom.xml) in a checkout, or "
                                f"point STREAMREC_VENDOR at a folder holding {part}/ (a wheel has no .vendor)")
    return home


def hadoop_classpath() -> str:
    """Hadoop's shaded client jars (``make setup``) as a classpath for Flink's ``hdfs://`` file
    system (``HADOOP_CLASSPATH``), or "" if they are not there."""
    try:
        return classpath(vendor_dir("hadoop-client") / "*")
    except FileNotFoundError:
        return ""


def classpath(*entries: Path | str) -> str:
    """A java -cp value; a folder of jars is given as ``folder/*``."""
    return os.pathsep.join(str(e) for e in entries)


def kept_ports(run_dir: Path, names: tuple[str, ...], given: dict[str, int] | None = None) -> dict[str, int]:
    """The instance's ports: saved ones if it ran before, else ``given`` ones, the rest picked free."""
    saved = run_dir / "ports.json"
    if saved.exists():
        return {k: int(v) for k, v in json.loads(saved.read_text()).items()}
    ports = {k: v for k, v in (given or {}).items() if v}
    for name in names:
        while name not in ports:
            p = free_port()
            if p not in ports.values():
                ports[name] = p
    return ports


def save_ports(run_dir: Path, ports: dict[str, int]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ports.json").write_text(json.dumps(ports, indent=1) + "\n")
