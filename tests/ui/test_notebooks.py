"""The page notebooks stay thin: one code cell that opens a page (preheat-aware) and displays it, no outputs."""

from __future__ import annotations

import nbformat
import pytest

import runtool.ui
from runtool.notebooks import NOTEBOOKS_DIR

NOTEBOOKS = NOTEBOOKS_DIR


@pytest.mark.parametrize(
    ("name", "page"),
    [
        ("01_temporal_coverage.ipynb", "CoveragePage"),
        ("02_per_run_analysis.ipynb", "PerRunPage"),
        ("03_download_manager.ipynb", "DownloadManagerPage"),
        ("04_fleet_kpis.ipynb", "FleetKpiPage"),
    ],
)
def test_a_page_notebook_only_displays_its_page(name: str, page: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    (cell,) = notebook.cells
    assert cell.cell_type == "code" and cell.outputs == [] and cell.execution_count is None
    expected = f"from runtool.ui import {page}\nfrom runtool.ui.serving import show_page\n\nshow_page({page});"
    assert cell.source == expected
    assert hasattr(runtool.ui, page)
