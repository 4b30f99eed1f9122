"""Start-up times of the local stack: Apache Kafka (KRaft) and HDFS (NameNode + DataNode).

For each: a first start (storage / NameNode formatted), a restart after a clean stop, and (Kafka)
a restart after kill -9, each until the service answers (Kafka: a metadata request listing the
broker; HDFS: a live DataNode and safe mode off). Each is run ``--runs`` times and the median is
printed, with its ratio to the baseline measured in the same run: a JVM on the same classpath
that runs a trivial main of the same project (Kafka's ``StorageTool random-uuid``, Hadoop's
``VersionInfo``) and exits, i.e. the part of a start that is the JVM and class loading.
Usage: python bench/bench_stack.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.broker import Broker  # noqa: E402
from deploy.hdfs import Hdfs  # noqa: E402
from deploy.jvm import classpath, java_bin, vendor_dir  # noqa: E402


def jvm_start(part: str, main_class: str, *args: str) -> float:
    t = time.monotonic()
    subprocess.run([java_bin(), "-cp", classpath(vendor_dir(part) / "*"), main_class, *args],
                   capture_output=True, check=True)
    return time.monotonic() - t


def kafka_times(tmp: Path) -> dict[str, float]:
    b = Broker(tmp / "kafka")
    b.start()
    first = b.startup_s
    b.stop()
    b.start()
    warm = b.startup_s
    b.kill()
    b.start()
    crashed = b.startup_s
    b.stop()
    return {"kafka first start (format + start)": first, "kafka restart after stop": warm,
            "kafka restart after kill -9": crashed}


def hdfs_times(tmp: Path) -> dict[str, float]:
    h = Hdfs(tmp / "hdfs")
    h.start()
    first = h.startup_s
    h.stop()
    h.start()
    warm = h.startup_s
    h.stop()
    return {"hdfs first start (format + start)": first, "hdfs restart after stop": warm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    samples: dict[str, list[float]] = {}
    base: dict[str, list[float]] = {"kafka": [], "hdfs": []}
    for i in range(a.runs):
        base["kafka"].append(jvm_start("kafka", "kafka.tools.StorageTool", "random-uuid"))
        base["hdfs"].append(jvm_start("hadoop", "org.apache.hadoop.util.VersionInfo"))
        with tempfile.TemporaryDirectory(prefix=f"bench-stack-{i}-") as tmp:
            for k, v in {**kafka_times(Path(tmp)), **hdfs_times(Path(tmp))}.items():
                samples.setdefault(k, []).append(v)
    jvm = {part: statistics.median(v) for part, v in base.items()}
    print(f"baseline (a JVM on the same classpath running a trivial main, median of {a.runs}): "
          f"kafka {jvm['kafka']:.2f}s, hdfs {jvm['hdfs']:.2f}s")
    for k, v in samples.items():
        med = statistics.median(v)
        print(f"{k:38s} {med:6.2f}s  ({med / jvm[k.split()[0]]:4.1f}x the baseline; "
              f"range {min(v):.2f}-{max(v):.2f}s)")


if __name__ == "__main__":
    main()
