"""A throw-away certificate authority for local TLS listeners (tests), made with the ``openssl`` CLI.

``make_ca`` writes, under a directory: ``ca.pem`` (the CA's certificate: what clients trust) and
``server.pem`` (the server's PKCS#8 private key followed by its certificate, signed by the CA, for
127.0.0.1 and localhost: what Kafka's PEM keystore reads). Keys are unencrypted, so no passphrase
ever goes on a command line; the files are private to this user (0600).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise FileNotFoundError("openssl not found (apt-get install openssl): needed for the TLS test listener")
    out = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr.strip()}")


def make_ca(folder: Path, days: int = 30) -> tuple[Path, Path]:
    """(ca.pem, server.pem) under ``folder``; made once, then reused (a restarted broker keeps its certificate)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, server = folder / "ca.pem", folder / "server.pem"
    if ca.exists() and server.exists():
        return ca, server
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                 "-days", str(days), "-subj", "/CN=streamrec test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                 cwd=folder)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=localhost", cwd=folder)
        (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                           "extendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", str(days), "-extfile", "server.ext", cwd=folder)
        server.write_text((folder / "server.key").read_text() + (folder / "server.crt").read_text())
    finally:
        os.umask(old)
    return ca, server
