"""Sinks: the training-example archive.

- ``archive``: the dumper (`streamrec archive`): examples topic -> Parquet hour partitions, exactly once.
- ``reader``: batch-training reader (RecordBatches per hour in event-time order).
- ``table``: the Parquet schema (TrainingExample flattened: one FID list column per slot of the feature spec).
- ``fs``: the filesystem interface, local directory or HDFS over WebHDFS.
- ``layout`` / ``manifest``: where files live, and the commit manifests that make it exactly once.
"""
