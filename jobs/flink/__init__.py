"""PyFlink plumbing for the join job (``jobs/flink_join.py``).

Kept import-light: ``jobs.flink.config`` is read by the root config without loading PyFlink;
the other modules import PyFlink and are only loaded by the job itself.
"""
