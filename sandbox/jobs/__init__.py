"""Asynchronous jobs: the store, the runner registry, the runner and the desk routes call."""
