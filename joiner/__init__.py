"""The online join, engine-agnostic (no Kafka, no Flink imports).

- ``core``: the per-request state machine and the join rules (both runtimes drive it).
- ``store``: the embedded runtime's state: a cache bounded in bytes, then RocksDB (rocksdict),
  timers indexed by event time, state + offsets saved in one WriteBatch.
- ``engine``: the embedded runtime without I/O: bytes in, bytes out, watermarks, dead letters.
- ``validate``: input against the feature spec (dead letters naming the field, unknown features dropped).
- ``memory``: the join in memory, one event at a time (the demo's reference, tests).
- ``fastcodec`` / ``splice``: the hot path (Avro read/write without dicts where possible).
- ``config``: ``JoinerConfig``, every tunable of the join.
"""
