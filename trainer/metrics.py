"""Prometheus metrics of the trainer (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

EXAMPLES = Counter("streamrec_trainer_examples_total", "examples trained on")
DUPLICATES = Counter("streamrec_trainer_duplicates_total", "examples dropped as duplicates by example_id")
UNDECODABLE = Counter("streamrec_trainer_undecodable_total", "messages the trainer could not decode")
STEPS = Counter("streamrec_trainer_steps_total", "worker steps (batches) applied")
SYNCED_ROWS = Counter("streamrec_trainer_synced_rows_total", "touched rows pushed to the serving PS")
SNAPSHOTS = Counter("streamrec_trainer_snapshots_total", "snapshots written")
FRESHNESS = Gauge("streamrec_serving_freshness_seconds",
                  "wall time since the newest example reflected in serving entered the pipeline")
FRESHNESS_EVENT = Gauge("streamrec_serving_event_lag_seconds",
                        "stream time (newest event read) minus event time of the newest example in serving")
FRESHNESS_HIST = Histogram("streamrec_serving_freshness_at_sync_seconds", "freshness right after a sync",
                           buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
AUC = Gauge("streamrec_trainer_window_auc", "progressive AUC of the last closed event-time window")
BASELINE_AUC = Gauge("streamrec_trainer_window_baseline_auc", "popularity baseline AUC, same window")
LOGLOSS = Gauge("streamrec_trainer_window_logloss", "progressive log loss of the last closed window")
ROWS = Gauge("streamrec_trainer_rows", "rows in the training tables")
