"""The one Kafka security block (``[kafka.security]``) and what it means to each client.

Every Kafka client of the pipeline takes its security from here: the confluent-kafka (librdkafka)
consumers, producers and admin clients through ``librdkafka()``, the Flink job's Java sources and
sinks through ``java()``. Keeping both mappings side by side is what keeps them in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from streamrec.section import Section

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
LOGIN_MODULES = {
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


def _jaas_quoted(text: str) -> str:
    """A JAAS option value in double quotes (Kafka's parser unescapes backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def no_credentials(props: dict[str, Any]) -> dict[str, Any]:
    """Free-form client properties print as they are: credentials belong in kafka.security."""
    bad = sorted(k for k in props if "password" in k.lower() or "jaas" in k.lower())
    if bad:
        raise ValueError(f"{bad}: credentials go in kafka.security (password is a secret type), not here")
    return props


class KafkaSecurity(Section):
    protocol: Protocol = Field("PLAINTEXT", description="security.protocol of every Kafka client")
    sasl_mechanism: Mechanism = Field("SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols)")
    username: str = Field("", description="SASL user name")
    password: SecretStr | None = Field(
        None, description="SASL password; a secret: prints as **********, reaches child processes through "
                          "STREAMREC_KAFKA__SECURITY__PASSWORD, never their command line"
    )
    ssl_ca_location: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); "
                          "unset = the system's CAs"
    )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.sasl and not self.username:
            raise ValueError(f"protocol {self.protocol} needs kafka.security.username")
        if self.sasl and self.password is None:
            raise ValueError(f"protocol {self.protocol} needs kafka.security.password (in the config file, "
                             "or in the environment as STREAMREC_KAFKA__SECURITY__PASSWORD)")
        return self

    def describe(self) -> str:
        """What a connection attempt used, for error messages (no secret)."""
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        if self.tls and self.ssl_ca_location:
            parts.append(f"CA {self.ssl_ca_location}")
        return ", ".join(parts)

    def librdkafka(self) -> dict[str, str]:
        """confluent-kafka client properties."""
        if self.protocol == "PLAINTEXT":
            return {}
        conf = {"security.protocol": self.protocol}
        if self.sasl:
            conf |= {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.username,
                     "sasl.password": self.password.get_secret_value()}
        if self.tls and self.ssl_ca_location:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        return conf

    def java(self) -> dict[str, str]:
        """Apache Kafka (Java) client properties, for the Flink job's sources and sinks."""
        if self.protocol == "PLAINTEXT":
            return {}
        props = {"security.protocol": self.protocol}
        if self.sasl:
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (
                f"{LOGIN_MODULES[self.sasl_mechanism]} required username={_jaas_quoted(self.username)} "
                f"password={_jaas_quoted(self.password.get_secret_value())};")
        if self.tls and self.ssl_ca_location:
            props |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.ssl_ca_location)}
        return props
