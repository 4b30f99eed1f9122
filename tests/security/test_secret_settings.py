"""Secret settings: redacted when shown, left off command lines, carried by the environment; the
security block's meaning to librdkafka and to Java; the metrics bind address; HDFS user and Kerberos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from deploy.hdfs import Hdfs
from sinks.config import ArchiveConfig
from sinks.fs import make_fs
from streamrec.config import ConfigError, load_config, public_overrides, settings_from_json, to_overrides
from streamrec.kafka_security import KafkaSecurity
from streamrec.metrics import serve_metrics
from streamrec.secrets import child_env, secret_env

STREAMREC = str(Path(sys.executable).parent / "streamrec")
ENV = "STREAMREC_KAFKA__SECURITY__PASSWORD"
SASL = ['kafka.security.protocol="SASL_SSL"', 'kafka.security.username="alice"']


def test_streamrec_config_prints_no_secret(tmp_path: Path, secret: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[kafka.security]\nprotocol = "SASL_PLAINTEXT"\nusername = "alice"\npassword = "{secret}"\n')
    f.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    for cmd, env_ in (([f"--config={f}", "config"], env),  # from the file
                      (["--set", 'kafka.security.protocol="SASL_SSL"', "--set", 'kafka.security.username="a"',
                        "config"], {**env, ENV: secret})):  # from the environment
        out = subprocess.run([STREAMREC, *cmd], cwd=tmp_path, env=env_, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert secret not in out.stdout + out.stderr
        assert json.loads(out.stdout)["kafka"]["security"]["password"] == "**********"


def test_the_environment_carries_secrets_and_overrides_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "from-env")
    s = load_config(None, [*SASL, 'kafka.bootstrap="h:1"'])
    assert s.kafka.security.password.get_secret_value() == "from-env"
    assert load_config(None, [*SASL, 'kafka.security.password="from-set"']).kafka.security.password \
        .get_secret_value() == "from-set"  # --set wins over the environment
    ov = to_overrides(s)
    assert not any("password" in o or "from-env" in o for o in ov) and 'kafka.security.username="alice"' in ov
    assert secret_env(s) == {ENV: "from-env"} and child_env(s, {"PATH": "/bin"}) == {"PATH": "/bin", ENV: "from-env"}
    # another process: the overrides plus the environment rebuild the same settings
    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match="kafka.security.password"):
        load_config(None, ov)
    monkeypatch.setenv(ENV, "from-env")
    assert load_config(None, ov) == s
    # the demo's stage processes: JSON (redacted) through a pipe, secrets through the environment
    assert "from-env" not in s.model_dump_json() and settings_from_json(s.model_dump_json()) == s


def test_secrets_given_with_set_stay_off_a_childs_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    given = ['kafka.bootstrap="h:1"', 'kafka.security.password="p1"', 'kafka.security={password="p2"}',
             'kafka.security={username="alice"}', 'kafka.security.username="bob"']
    assert public_overrides(given) == [given[0], given[3], given[4]]
    assert "STREAMREC_KAFKA__SECURITY__PASSWORD" in capsys.readouterr().err  # and says where it should go


def test_errors_name_the_field_and_never_show_a_secret(tmp_path: Path) -> None:
    pw = 'kafka.security.password="hunter2-secret"'
    for overrides, field in (([SASL[0], pw], "kafka.security.username"),
                             ([*SASL, "kafka.security.password=987654321"], "kafka.security.password"),
                             ([*SASL, 'kafka.security.sasl_mechanism="GSSAPI"', pw], "kafka.security.sasl_mechanism"),
                             (['kafka.security.protocol="TLS"'], "kafka.security.protocol"),
                             (['metrics.host="localhost"'], "metrics.host")):
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert field in str(e.value) and "hunter2-secret" not in str(e.value) and "987654321" not in str(e.value)
    f = tmp_path / "c.toml"  # credentials in the free-form client properties are refused
    for section, key in (("kafka.consumer", "sasl.password"), ("kafka.producer", "ssl.key.password"),
                         ("flink.kafka_properties", "sasl.jaas.config")):
        f.write_text(f'[{section}]\n"{key}" = "hunter2-secret"\n')
        with pytest.raises(ConfigError, match=rf"{section}.*kafka.security") as e:
            load_config(f)
        assert "hunter2-secret" not in str(e.value)


def test_one_block_means_the_same_to_librdkafka_and_to_java(tmp_path: Path) -> None:
    assert KafkaSecurity().librdkafka() == {} and KafkaSecurity().java() == {}
    sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", username="al\"ice",
                        password='p"w\\x', ssl_ca_location=tmp_path / "ca.pem")
    assert sec.librdkafka() == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                                "sasl.username": 'al"ice', "sasl.password": 'p"w\\x',
                                "ssl.ca.location": str(tmp_path / "ca.pem")}
    assert sec.java() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                            'username="al\\"ice" password="p\\"w\\\\x";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(tmp_path / "ca.pem")}
    plain = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u", password="p")
    assert plain.java()["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule")
    assert "ssl.truststore.location" not in plain.java() and "ssl.ca.location" not in plain.librdkafka()
    # the Flink job's properties: the block's, then flink.kafka_properties
    from jobs.flink.kafka import client_properties

    s = load_config(None, [*SASL, 'kafka.security.password="p"'])
    s.flink.kafka_properties = {"security.protocol": "SASL_SSL", "client.dns.lookup": "use_all_dns_ips"}
    props = client_properties(s.kafka, s.flink)
    assert props["sasl.jaas.config"].endswith('password="p";') and props["client.dns.lookup"] == "use_all_dns_ips"


def test_metrics_bind_to_metrics_host_loopback_by_default() -> None:
    assert load_config(None).metrics.host == "127.0.0.1"
    server = serve_metrics(0, "127.0.0.2")
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.2"
        with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        server.shutdown()
        server.server_close()


def test_the_hdfs_user_owns_what_the_archive_writes(hdfs: Hdfs) -> None:
    fs = make_fs(ArchiveConfig(target="hdfs", hdfs_url=hdfs.url, hdfs_root="/sec/owner", hdfs_user="carol"))
    fs.write_bytes("x/probe.bin", b"1")
    assert hdfs.client().status("/sec/owner/x/probe.bin")["owner"] == "carol"


def test_kerberos_is_an_option_that_says_what_it_needs() -> None:
    cfg = ArchiveConfig(target="hdfs", hdfs_url="http://127.0.0.1:1", hdfs_auth="kerberos")
    try:
        import requests_kerberos  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"archive.hdfs_auth.*requests-kerberos.*streamrec\[kerberos\]"):
            make_fs(cfg)
    else:  # the extra is installed: the archive talks SPNEGO (no KDC here to log in to)
        from hdfs.ext.kerberos import KerberosClient

        assert isinstance(make_fs(cfg).client, KerberosClient)
    with pytest.raises(ConfigError, match="archive.hdfs_auth"):
        load_config(None, ['archive.hdfs_auth="ntlm"'])
