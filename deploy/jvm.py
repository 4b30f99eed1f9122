"""What the local JVM daemons (Kafka, HDFS) share: the java binary, their vendored jars, ports kept per run dir.

The jars come from Maven Central through ``deploy/pom.xml`` (packaged with the wheel), one folder per
part: ``make setup`` puts them in a checkout's ``.vendor/``, ``streamrec setup`` (``fetch_jars``) in
a user cache, so an installed wheel finds them too. Each daemon instance lives in its own run dir; its
ports are picked free at first start and written there, so a stop + start (an outage in a test) brings
the same instance back, with its data, where its clients expect it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
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


# One folder of jars per Maven profile of pom.xml, each on its own classpath
PARTS = ("kafka", "flink", "hadoop", "hadoop-client")
POM = Path(__file__).with_name("pom.xml")


def user_vendor() -> Path:
    """Where ``streamrec setup`` puts the jars for an installed wheel: ``$XDG_CACHE_HOME/streamrec/vendor``
    (``~/.cache/streamrec/vendor``); they are downloads, safe to delete and fetch again."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamrec" / "vendor"


def vendor_home() -> Path:
    """``$STREAMREC_VENDOR`` if set, else a checkout's ``.vendor`` (``make setup``) if there is one, else
    ``user_vendor()``: the same lookup from a checkout and from an installed wheel."""
    if os.environ.get("STREAMREC_VENDOR"):
        return Path(os.environ["STREAMREC_VENDOR"])
    checkout = ROOT / ".vendor"
    return checkout if checkout.is_dir() else user_vendor()


def vendor_dir(part: str) -> Path:
    """``vendor_home()/<part>``, checked to hold jars."""
    home = vendor_home() / part
    if not any(home.glob("*.jar")):
        raise FileNotFoundError(f"no {part} jars under {home}: run `streamrec setup` (Maven resolves them from "
                                f"deploy/pom.xml into {vendor_home()}), or `make setup` in a checkout, or point "
                                f"STREAMREC_VENDOR at a folder holding {part}/")
    return home


def fetch_jars(dest: Path, parts: tuple[str, ...] = PARTS, offline: bool = False,
               say: Callable[[str], None] = print) -> dict[str, int]:
    """Resolve each part's jars with Maven (``pom.xml``'s profile of that name) into ``dest/<part>``;
    a part already fetched from this very pom (its stamp holds the pom's hash) is skipped. ``offline``:
    from Maven's local repository only (``mvn -o``). Returns the jar count of each part."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FileNotFoundError("Maven (mvn) is needed to fetch the JVM parts (e.g. apt-get install maven)")
    pom_hash = hashlib.sha1(POM.read_bytes()).hexdigest()[:12]  # = setup.sh's stamps: a checkout's .vendor too
    counts = {}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
        out = Path(dest).resolve() / part
        if not (out / f".installed-{pom_hash}").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            cmd = [mvn, "-q", "-B", *(["-o"] if offline else []), "-f", str(POM), "-P", part,
                   "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={out}"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(out, ignore_errors=True)
                log = (r.stdout + r.stderr)[-3000:]
                raise RuntimeError(f"Maven could not resolve {part} ({' '.join(cmd)}):\n{log}")
            (out / f".installed-{pom_hash}").touch()
            jars = list(out.glob("*.jar"))
            say(f"{part}: {len(jars)} jars ({sum(j.stat().st_size for j in jars) / 1e6:.0f} MB) in {out}")
        counts[part] = len(list(out.glob("*.jar")))
    return counts


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
