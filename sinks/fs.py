"""The one small filesystem interface the archive needs, on a local directory or on HDFS (WebHDFS).

Paths are POSIX strings relative to the archive root. The archive's exactly-once protocol rests on
three operations only: write a whole file under a temporary name, rename it (atomic, never over an
existing file), list a directory. Every failure of the target surfaces as ``OSError`` (the dumper
retries those with back-off); anything else is a bug and propagates.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Protocol

from streamrec.errors import Unreachable
from streamrec.files import fsync_dir


class FileSystem(Protocol):
    """What the archive writer and reader use; implementations: LocalFS, HdfsFS."""

    description: str

    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or overwrite ``path`` with ``data`` (parents created)."""

    def read_bytes(self, path: str) -> bytes: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename; fails if ``dst`` exists (parents of ``dst`` created)."""

    def exists(self, path: str) -> bool: ...

    def list(self, path: str) -> list[str]:
        """Names in directory ``path``, sorted; [] if it does not exist."""

    def delete(self, path: str, recursive: bool = False) -> None:
        """Remove ``path``; no error if it does not exist."""


class LocalFS:
    """A local directory; files and renames are fsynced so a commit survives a power cut too."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.description = f"local:{self.root}"

    def _p(self, path: str) -> Path:
        return self.root / path

    def write_bytes(self, path: str, data: bytes) -> None:
        p = self._p(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read_bytes(self, path: str) -> bytes:
        return self._p(path).read_bytes()

    def rename(self, src: str, dst: str) -> None:
        s, d = self._p(src), self._p(dst)
        d.parent.mkdir(parents=True, exist_ok=True)
        # link + unlink: fails with FileExistsError instead of replacing dst (os.rename would).
        os.link(s, d)
        os.unlink(s)
        fsync_dir(d.parent)

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def list(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._p(path)))
        except FileNotFoundError:
            return []

    def delete(self, path: str, recursive: bool = False) -> None:
        p = self._p(path)
        if p.is_dir():
            if recursive:
                import shutil

                shutil.rmtree(p, ignore_errors=True)
            else:
                p.rmdir()
        else:
            p.unlink(missing_ok=True)


class HdfsFS:
    """HDFS through WebHDFS with the `hdfs` package (no JVM or libhdfs on the client side)."""

    def __init__(self, url: str, root: str, user: str = "streamrec", timeout: float = 10.0,
                 auth: str = "simple"):
        self.root = root.rstrip("/") or "/"
        self.client = _webhdfs_client(url, user, timeout, auth)
        self.url = url
        self.description = f"hdfs:{url}{self.root}"

    def _p(self, path: str) -> str:
        return posixpath.join(self.root, path)

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one client call; every target failure becomes an OSError naming the operation."""
        from hdfs.util import HdfsError
        from requests.exceptions import ConnectionError as NoAnswer
        from requests.exceptions import Timeout

        try:
            return fn(*args, **kwargs)
        except HdfsError as e:
            msg = str(e)
            if getattr(e, "exception", None) == "FileNotFoundException" or "not found" in msg \
                    or "does not exist" in msg:
                raise FileNotFoundError(f"{what}: {msg}") from None
            raise OSError(f"HDFS {what} failed: {msg}") from None
        except (NoAnswer, Timeout) as e:  # nothing answered (an OSError the archive retries: Unreachable is one)
            raise Unreachable(f"archive.hdfs_url: HDFS at {self.url} did not answer ({what}: {type(e).__name__})") \
                from None
        except OSError as e:  # requests' other errors are OSErrors too
            raise OSError(f"HDFS {what} failed: {type(e).__name__}: {e}") from None

    def write_bytes(self, path: str, data: bytes) -> None:
        self._call(f"write {path}", self.client.write, self._p(path), data=data, overwrite=True)

    def read_bytes(self, path: str) -> bytes:
        def read() -> bytes:
            with self.client.read(self._p(path)) as r:
                return r.read()

        return self._call(f"read {path}", read)

    def rename(self, src: str, dst: str) -> None:
        if self.exists(dst):  # WebHDFS would move src *into* an existing directory
            raise FileExistsError(f"rename {src} -> {dst}: destination exists")
        parent = posixpath.dirname(self._p(dst))
        self._call(f"mkdirs {parent}", self.client.makedirs, parent)
        self._call(f"rename {src} -> {dst}", self.client.rename, self._p(src), self._p(dst))

    def exists(self, path: str) -> bool:
        return self._call(f"status {path}", self.client.status, self._p(path), strict=False) is not None

    def list(self, path: str) -> list[str]:
        try:
            return sorted(self._call(f"list {path}", self.client.list, self._p(path)))
        except FileNotFoundError:
            return []

    def delete(self, path: str, recursive: bool = False) -> None:
        self._call(f"delete {path}", self.client.delete, self._p(path), recursive=recursive)


def _webhdfs_client(url: str, user: str, timeout: float, auth: str):  # -> hdfs.Client
    """Simple auth acts as ``user`` (``user.name=``); Kerberos as the principal of the ticket cache,
    through the `hdfs` package's extension, which needs requests-kerberos (an optional extra)."""
    if auth == "simple":
        from hdfs import InsecureClient

        return InsecureClient(url, user=user, timeout=timeout)
    try:
        from hdfs.ext.kerberos import KerberosClient
    except ImportError as e:
        raise ValueError(f"archive.hdfs_auth = \"kerberos\" needs requests-kerberos, which is not installed "
                         f"({e}): pip install 'streamrec[kerberos]'") from None
    return KerberosClient(url, timeout=timeout)


def make_fs(cfg, run_dir: Path | None = None) -> FileSystem:
    """The archive's filesystem from an ``ArchiveConfig`` (``run_dir``: where `hdfs up` left its URL)."""
    if cfg.target == "local":
        return LocalFS(cfg.root)
    url = cfg.hdfs_url
    if not url:
        from deploy.hdfs import url_from_run_dir

        url = url_from_run_dir(Path(run_dir or ".run") / "hdfs") or ""
        if not url:
            raise ValueError(
                "archive.hdfs_url is empty and no HDFS was started with `make hdfs-up`: "
                "set archive.hdfs_url (e.g. --set archive.hdfs_url=http://127.0.0.1:50070)"
            )
    return HdfsFS(url, cfg.hdfs_root, user=cfg.hdfs_user, timeout=cfg.hdfs_timeout_s, auth=cfg.hdfs_auth)
