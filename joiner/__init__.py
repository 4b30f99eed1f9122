"""joiner."""
