"""Settings of the training-example archive (the dumper `streamrec archive` and the batch reader)."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamrec.section import Section


class ArchiveConfig(Section):
    target: str = Field("local", pattern="^(local|hdfs)$", description="where the archive lives")
    root: Path = Field(Path(".run/archive"), description="archive root for target=local")
    hdfs_root: str = Field("/streamrec/archive", pattern="^/", description="archive root for target=hdfs")
    hdfs_url: str = Field(
        "", description="WebHDFS URL, e.g. http://127.0.0.1:50070; empty = the HDFS `streamrec hdfs up` started"
    )
    hdfs_user: str = Field(
        "streamrec", description="hdfs_auth=simple: the user WebHDFS acts as (the archive's files are its own)"
    )
    hdfs_auth: Literal["simple", "kerberos"] = Field(
        "simple", description="WebHDFS authentication: simple (hdfs_user), or kerberos (SPNEGO with the ticket of "
                              "`kinit` or of a keytab in KRB5_CLIENT_KTNAME; needs `pip install streamrec[kerberos]`)"
    )
    hdfs_timeout_s: float = Field(10.0, gt=0, description="per WebHDFS request")
    roll_bytes: int = Field(64 << 20, gt=0, description="commit once this many bytes (in memory) are buffered")
    roll_age_s: float = Field(30.0, gt=0, description="commit buffered examples at least this often")
    allowed_lateness_ms: int = Field(
        600_000, ge=0, description="an hour closes (_SUCCESS) once the watermark passes its end plus this"
    )
    compression: str = Field("zstd", pattern="^(zstd|snappy|gzip|lz4|none)$")
    row_group_rows: int = Field(65_536, gt=0)
    poll_batch: int = Field(5_000, gt=0, description="messages per consume() call")
    dedup_cache_hours: int = Field(
        72, gt=0, description="hours whose example ids stay in memory; older ones reload from the archive"
    )
    keep_manifests: int = Field(20, ge=1, description="commit manifests kept (the newest is the state)")
    retry_initial_s: float = Field(0.5, gt=0, description="first back-off when the target fails")
    retry_max_s: float = Field(10.0, gt=0, description="back-off cap; the dumper retries until the target is back")
    group: str = Field("streamrec-archive", description="consumer group id (offsets live in the archive)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus endpoint on metrics.host: unset = off, 0 = a free port")
