"""Data contracts: Avro schemas, their single-object codec, the feature spec (``spec``) and feature ids."""
