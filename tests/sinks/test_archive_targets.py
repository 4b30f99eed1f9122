"""The filesystem interface on a local directory and on the real HDFS, and the test HDFS itself."""

from __future__ import annotations

import psutil
import pytest

from deploy.hdfs import Hdfs
from sinks.config import ArchiveConfig
from sinks.fs import make_fs


def test_fs_contract(target):
    _, fs = target
    assert fs.list("a") == [] and not fs.exists("a/x")
    fs.write_bytes("a/b/x", b"one")
    fs.write_bytes("a/b/x", b"two")  # overwrite
    assert fs.read_bytes("a/b/x") == b"two" and fs.exists("a/b/x")
    fs.rename("a/b/x", "c/d/y")  # parents made
    assert not fs.exists("a/b/x") and fs.read_bytes("c/d/y") == b"two"
    fs.write_bytes("a/z", b"3")
    with pytest.raises(OSError):
        fs.rename("a/z", "c/d/y")  # never over an existing file
    assert fs.read_bytes("c/d/y") == b"two" and fs.exists("a/z")
    assert fs.list("c/d") == ["y"] and fs.list("a") == ["b", "z"]
    fs.delete("a/z")
    fs.delete("a/z")  # gone already: fine
    fs.delete("c", recursive=True)
    assert not fs.exists("c/d/y")
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("nope")


def test_hdfs_daemons_listen_on_loopback_only(hdfs: Hdfs):
    pids = [int((hdfs.run_dir / f"{r}.pid").read_text()) for r in ("namenode", "datanode")]
    addrs = [c.laddr for pid in pids for c in psutil.Process(pid).net_connections("inet")
             if c.status == psutil.CONN_LISTEN]
    assert addrs and all(a.ip in ("127.0.0.1", "::ffff:127.0.0.1") for a in addrs), addrs
    ours = {hdfs.ports[p] for p in ("rpc_port", "http_port", "dn_port", "dn_http_port", "dn_ipc_port")}
    assert ours <= {a.port for a in addrs}


def test_hdfs_target_needs_a_url(tmp_path):
    cfg = ArchiveConfig(target="hdfs")
    with pytest.raises(ValueError, match="archive.hdfs_url"):
        make_fs(cfg, run_dir=tmp_path)


def test_archive_config_names_bad_fields():
    from streamrec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="archive.target"):
        load_config(None, ["archive.target=s3"])
    with pytest.raises(ConfigError, match="archive.roll_age_s"):
        load_config(None, ["archive.roll_age_s=0"])
