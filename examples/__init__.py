"""Datasets with their feature specs: each one a spec file plus, if the replay can play it, a loader."""
