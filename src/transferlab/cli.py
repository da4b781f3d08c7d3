"""The console script's historical entry point; the CLI lives in :mod:`transferlab.apps.cli`."""

from .apps.cli import app, main

__all__ = ["app", "main"]
