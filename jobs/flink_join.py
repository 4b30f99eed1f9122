"""The online joiner as a PyFlink DataStream job (the Flink runtime of ``joiner/core.py``).

    Kafka table (features) --+                                              +-> KafkaSink(examples)
                             +-> key by Kafka key -> connect -> JoinFn -----+
    Kafka table (actions)  --+   (event time = Kafka timestamp,  (decode,   +-> KafkaSink(dead-letter)
                                  bounded out-of-orderness)       join)         (side output)

Producers stamp each log's Kafka timestamp with its ts_ms and key it by request_id (the replay
does), so keying and event time are Java's and the join is the only Python operator.

State: the core's per-request bytes in keyed ValueState on the RocksDB backend, checkpointed
with the sources' offsets; output in Kafka transactions committed with each checkpoint
(``flink.delivery_guarantee``: exactly-once for ``read_committed`` readers), or at-least-once.

Run on a local mini cluster:  python -m jobs.flink_join [--config f.toml] [--set k=v ...]
Submit to a cluster:          flink run -py jobs/flink_join.py [same flags]      (make submit)
A finite run (tests, bench): --stop-offsets offsets.json (exact end offsets recorded when
producing: the run ends where that input ends).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # `flink run -py jobs/flink_join.py` runs this file as a script, so its folder jobs/ comes
    # first on sys.path and jobs/replay.py would shadow the top-level package replay/.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from streamrec.config import ConfigError, Settings, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="jobs.flink_join", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", type=Path, help="TOML config file (default ./streamrec.toml if present)")
    ap.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                    help="override a setting, e.g. --set flink.parallelism=1 (repeatable)")
    ap.add_argument("--stop-offsets", type=Path,
                    help="JSON {topic: {partition: end offset}}: run until both inputs reach them, then finish")
    ap.add_argument("--restore", help="resume from this checkpoint/savepoint path")
    ap.add_argument("--fail-after", type=int, help="TEST: raise once after N elements per subtask")
    ap.add_argument("--fail-flag", help="TEST: the failure fires only while this file exists (deleted)")
    ap.add_argument("--slow-ms", type=float, default=0.0,
                    help="TEST: sleep this long per 100 elements, so a small input runs long enough to stop mid-way")
    return ap.parse_args(argv)


def build(settings: Settings, args: argparse.Namespace):  # noqa: ANN201 - StreamExecutionEnvironment
    """The job graph on a fresh environment."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway
    from pyflink.table import StreamTableEnvironment

    from jobs.flink import kafka
    from jobs.flink.env import local_path, make_env
    from jobs.flink.functions import BYTES, DEAD_LETTERS, STAMPED, JoinFn

    fc, jc, topics = settings.flink, settings.joiner, settings.kafka.topics
    stops = kafka.load_stop_offsets(args.stop_offsets) if args.stop_offsets else None
    env = make_env(fc, restore_from=args.restore)
    bootstrap = settings.kafka.bootstrap
    props = kafka.client_properties(settings.kafka, fc)  # kafka.security + flink.kafka_properties
    jvm = get_gateway().jvm
    py_eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    tenv = StreamTableEnvironment.create(env)
    # ts (the Kafka timestamp) is selected so that it becomes each record's timestamp, which the
    # join checks against the record's ts_ms (the producer contract); Python gets ``v`` only
    ROWS = Types.ROW_NAMED(["rid", "v", "ts"], [Types.STRING(), BYTES, Types.INSTANT()])  # noqa: N806

    # Sources are Kafka tables (Java): key = request_id, event time = the Kafka timestamp (the
    # producer stamps each log with its ts_ms), per-partition watermarks max - lateness - 1 (the
    # core's definition). Java keys the rows by field 0, as DataStream.key_by does after its
    # Python key operator, so the only Python operator is the join, which also decodes.
    def read(role: str, topic: str):  # noqa: ANN202
        tenv.execute_sql(kafka.table_ddl(f"{role}_in", bootstrap, topic, fc.group_id, jc.allowed_lateness_ms,
                                         fc.start_from, None if stops is None else stops.get(topic, {}),
                                         props))
        # a message without a key gets "" (so Flink can key it; the join dead-letters it: key_mismatch)
        rows = tenv.to_data_stream(tenv.sql_query(f"SELECT COALESCE(rid, '') AS rid, v, ts FROM {role}_in"))
        # the Python operator wants a RowTypeInfo (the same rows, a type it can read)
        rows._j_data_stream.getTransformation().setOutputType(ROWS.get_java_type_info())
        j_keyed = rows._j_data_stream.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
        return KeyedStream(j_keyed, BYTES, rows)

    features = read("features", topics.features)
    actions = read("actions", topics.actions)

    join_fn = JoinFn(jc, settings.features, (topics.features, topics.actions), fc.object_cache_size,
                     fc.watermark_poll, args.fail_after, args.fail_flag, local_path(fc.checkpoint_dir), args.slow_ms)
    joined = features.connect(actions).process(join_fn, output_type=STAMPED) \
        .name("join").uid("join")
    wall_clock = WatermarkStrategy.no_watermarks()._j_watermark_strategy \
        .withTimestampAssigner(py_eventtime.CustomTimestampAssigner())
    j_examples = joined._j_data_stream.assignTimestampsAndWatermarks(wall_clock).name("stamp").uid("stamp") \
        .map(py_eventtime.RemoveTimestampMapFunction(), BYTES.get_java_type_info()).name("unstamp").uid("unstamp")
    DataStream(j_examples).sink_to(kafka.sink(bootstrap, topics.examples, fc, props)) \
        .name("examples").uid("sink-examples")
    joined.get_side_output(DEAD_LETTERS).sink_to(kafka.sink(bootstrap, topics.dead_letter, fc, props)) \
        .name("dead-letters").uid("sink-dead-letters")
    return env


def local_environment(settings: Settings) -> None:
    """Caps, log dir and Hadoop classpath for the JVM PyFlink starts for a local mini cluster
    (ignored under `flink run`)."""
    log_dir = (settings.flink.run_dir / "log").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
    os.environ.setdefault("JVM_ARGS", f"-Xmx{settings.flink.jvm_heap}")
    from deploy.jvm import hadoop_classpath

    if not os.environ.get("HADOOP_CLASSPATH") and hadoop_classpath():
        os.environ["HADOOP_CLASSPATH"] = hadoop_classpath()  # hdfs:// checkpoints


def main(argv: list[str] | None = None) -> int:
    """One line on stderr and exit code 2 for a bad setting or a refused Kafka login, 3 if no broker answers
    (checked here, before any JVM starts: the job's Java clients would retry for ever)."""
    from streamrec.kafka import check_access

    args = parse_args(argv)
    try:
        settings = load_config(args.config, args.overrides)
        check_access(settings.kafka)
    except ConfigError as e:  # a bad setting (2), or no broker answered (3: BrokerUnreachable)
        print(e, file=sys.stderr)
        return e.exit_code
    local_environment(settings)
    from jobs.flink.env import local_path

    for location in (settings.flink.checkpoint_dir, settings.flink.savepoint_dir):
        if (path := local_path(location)) is not None:
            path.mkdir(parents=True, exist_ok=True)
    # blocks until a bounded run ends; under `flink run -d` it returns once submitted
    build(settings, args).execute(settings.flink.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
