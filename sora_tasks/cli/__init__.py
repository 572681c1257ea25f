"""`sora-video`, the command line: see :mod:`sora_tasks.cli.main`."""

from .main import main

__all__ = ["main"]
