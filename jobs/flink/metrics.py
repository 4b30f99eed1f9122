"""The Flink join's counters and their names as Prometheus sees them, apart from the job (no PyFlink import),
so the Grafana dashboard's test and a scraper can name them without starting a JVM."""

# The job's counters in the operator's metric group "streamrec" > "join": Flink's Prometheus reporter
# exports each as PROMETHEUS_PREFIX + name, labelled job_name, operator_name, subtask_index, tm_id, ...
METRIC_GROUP = ("streamrec", "join")
PROMETHEUS_PREFIX = "flink_taskmanager_job_task_operator_streamrec_join_"
METRICS = {  # what is counted -> its Flink counter (Prometheus conventions: totals end in _total)
    "input": "input_messages_total",  # every message of either input
    "decoded": "decoded_records_total",  # valid records (the rest are dead letters or dropped actions)
    "examples": "examples_total",  # examples written (with positives, negatives kept and late ones)
    "positives": "positive_examples_total",
    "negatives_kept": "negative_examples_kept_total",
    "negatives_dropped": "negative_examples_dropped_total",  # sampled out: not written
    "late": "late_examples_total",
    "dead_letters": "dead_letters_total",
    "dropped_unknown": "dropped_unknown_total",  # features and actions the feature spec does not know
    "state_reads": "state_reads_total",  # Flink keyed-state reads (object cache misses)
    "state_writes": "state_writes_total",
}
