"""The page notebooks and the report notebook, shipped inside the package so an installed wheel serves and reports."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["NOTEBOOKS_DIR", "REPORT_NOTEBOOK"]

NOTEBOOKS_DIR = Path(str(files(__name__)))
"""The folder `runtool serve` serves (the package data is a plain folder on disk in every install)."""

REPORT_NOTEBOOK = NOTEBOOKS_DIR / "run_report.ipynb"
"""The notebook `runtool report` executes with papermill."""
