"""The ``sandbox`` command: one module per command group, the entry point in :mod:`.main`."""

from sandbox.cli.main import app, main

__all__ = ["app", "main"]
