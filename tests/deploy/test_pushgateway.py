"""The Pushgateway the Flink metrics tests push to: the real ``prometheus-pushgateway`` (``make setup``
installs it), listening on loopback only, keeping what is pushed until it is stopped."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from deploy.pushgateway import Pushgateway


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addr, port = cols[1].split(":")
                raw = bytes.fromhex(addr)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                host = ".".join(map(str, words)) if len(words) == 4 else words.hex()
                found.add((host, int(port, 16)))
    return found


def test_pushgateway_on_loopback_keeps_what_is_pushed(tmp_path: Path) -> None:
    with Pushgateway(tmp_path) as gw:
        assert gw.proc is not None
        pid = gw.proc.pid
        assert listening(pid) == {("127.0.0.1", gw.port)}  # loopback only, the one port

        registry = CollectorRegistry()
        Gauge("streamrec_probe", "a pushed value", ["side"], registry=registry).labels("a").set(42)
        push_to_gateway(gw.url.removeprefix("http://"), job="streamrec-probe", registry=registry,
                        grouping_key={"instance": "t1"})
        samples = [s for f in text_string_to_metric_families(gw.metrics()) for s in f.samples
                   if s.name == "streamrec_probe"]
        assert [(s.labels, s.value) for s in samples] == [
            ({"instance": "t1", "job": "streamrec-probe", "side": "a"}, 42.0)]
    assert not Path(f"/proc/{pid}").exists() or b"pushgateway" not in Path(f"/proc/{pid}/cmdline").read_bytes()
