"""The ``netmon`` command line."""

from netmon.cli.main import app, main

__all__ = ["app", "main"]
