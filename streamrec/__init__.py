"""streamrec: glue shared by every stage — the one config object, the CLI, Kafka helpers."""
