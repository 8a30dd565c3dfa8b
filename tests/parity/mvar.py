"""Parity runner for `mvar` fixtures: M-VAR shares VAR's fixture format and runner (`parity/var.py`)."""
from .var import run  # noqa: F401
