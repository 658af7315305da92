"""The page notebooks execute cleanly (nbval) against the demo fleet in a real kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtool.notebooks import NOTEBOOKS_DIR
from tests.conftest import SeededFleet, write_toml

NOTEBOOKS = NOTEBOOKS_DIR
PAGES = sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb"))


def test_there_are_four_pages() -> None:
    assert PAGES == ["01_temporal_coverage.ipynb", "02_per_run_analysis.ipynb", "03_download_manager.ipynb",
                     "04_fleet_kpis.ipynb"]


@pytest.mark.parametrize("notebook", PAGES)
def test_notebook_runs_with_nbval(notebook: str, demo_fleet: SeededFleet, tmp_path: Path) -> None:
    config = write_toml(demo_fleet.config.with_overrides(cache_dir=tmp_path / "cache"), tmp_path / "runtool.toml")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-q", str(NOTEBOOKS / notebook)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "RUNTOOL_CONFIG": str(config), "QUERY_STRING": "cid=client_001"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
