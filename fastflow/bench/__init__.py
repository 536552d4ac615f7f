"""The benchmark runner: `python -m fastflow.bench` (see runner.py; cases in cases.py)."""

from .runner import main

__all__ = ["main"]
