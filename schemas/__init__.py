"""Data contracts: Avro schemas, their single-object codec, and feature ids."""
