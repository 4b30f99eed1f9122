"""MovieLens-100K: its feature spec (``features.toml``) and its loader (``dataset``), one example among others."""

from pathlib import Path

SPEC_FILE = Path(__file__).with_name("features.toml")
