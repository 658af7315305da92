"""A page kernel imports what the page shows, not what its actions or the other pages need.

Each viewer gets a kernel of its own, so every module a page imports at open costs memory once per viewer
(docs/performance.md, "Issue 8 (c)"). These tests run in fresh interpreters, as a kernel is, and fail when
a top-level import brings one of the heavy modules below back into a page.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.ui.query import COVERAGE, DOWNLOAD_MANAGER, FLEET_KPIS, PER_RUN, PageLink, selection_query
from tests.conftest import write_toml
from tests.ui.conftest import FLEET, LB01

# Needed by no page until the viewer acts (a refresh, a transfer, an extraction, a report), if ever.
NO_PAGE = (
    "google.cloud.storage",
    "google.api_core",
    "google.auth",
    "requests",
    "matplotlib",
    "dask",
    "distributed",
    "docker",
    "papermill",
    "nbconvert",
    "scipy",
    "runtool.analysis.figures",
)
HEAVY: dict[PageLink, tuple[str, ...]] = {
    COVERAGE: (
        *NO_PAGE,
        "ipydatagrid",
        "rosbags",
        "runtool.extract",
        "runtool.services.analytics",
        "runtool.services.datasets",
        "runtool.services.extraction",
        "runtool.services.reports",
        "runtool.services.transfers",
    ),
    PER_RUN: (*NO_PAGE, "ipydatagrid", "rosbags", "runtool.services.datasets"),
    DOWNLOAD_MANAGER: (
        *NO_PAGE,
        "rosbags",
        "runtool.extract",
        "runtool.services.analytics",
        "runtool.services.extraction",
        "runtool.services.reports",
    ),
    FLEET_KPIS: (
        *NO_PAGE,
        "ipydatagrid",
        "rosbags",
        "runtool.extract",
        "runtool.services.datasets",
        "runtool.services.extraction",
        "runtool.services.reports",
        "runtool.services.transfers",
    ),
}
PAGE_CLASSES = {
    COVERAGE: ("runtool.ui.coverage", "CoveragePage"),
    PER_RUN: ("runtool.ui.per_run", "PerRunPage"),
    DOWNLOAD_MANAGER: ("runtool.ui.download_manager", "DownloadManagerPage"),
    FLEET_KPIS: ("runtool.ui.fleet_kpis", "FleetKpiPage"),
}
PAGES = pytest.mark.parametrize("page", list(HEAVY), ids=lambda page: page.notebook)

# Prints, as JSON, every module the interpreter holds after running the code in argv[1].
_RUN_AND_LIST = "import json, sys\nexec(sys.argv[1], {})\nprint(json.dumps(sorted(sys.modules)))"


def _modules_after(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST, code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _heavy_in(modules: set[str], page: PageLink) -> list[str]:
    """The heavy modules (or any of their submodules) among ``modules``."""
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY[page]))


@PAGES
def test_importing_a_page_leaves_out_what_it_does_not_show(page: PageLink) -> None:
    module, page_class = PAGE_CLASSES[page]
    modules = _modules_after(f"import runtool.ui\nruntool.ui.{page_class}")

    assert module in modules
    assert _heavy_in(modules, page) == []


def test_importing_runtool_ui_imports_no_page() -> None:
    modules = _modules_after("import runtool.ui")

    assert not {module for module, _ in PAGE_CLASSES.values()} & modules
    assert not {"pandas", "bqplot", "ipydatagrid"} & {m.split(".")[0] for m in modules}


@PAGES
def test_an_open_page_leaves_out_what_it_does_not_show(
    page: PageLink, services: ServiceContainer, tmp_path: Path
) -> None:
    """The page's own notebook, run as Voila runs it (query in QUERY_STRING), over a scanned inventory."""
    notebook = json.loads(files("runtool.notebooks").joinpath(page.notebook).read_text(encoding="utf-8"))
    cells = ast.parse("\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"))
    # The notebook ends by showing its page (show_page returns it): keep it, to check the page was built.
    shown = cells.body[-1]
    assert isinstance(shown, ast.Expr)
    cells.body[-1] = ast.Assign(targets=[ast.Name("page", ast.Store())], value=shown.value)
    code = ast.unparse(ast.fix_missing_locations(cells)) + "\nassert page.widget.children, 'the page built nothing'"
    query = selection_query(FLEET[0].coordinate.to_filters() if page is PER_RUN else Filters(cid=LB01.split("/")[0]))
    env = {**os.environ, "RUNTOOL_CONFIG": str(write_toml(services.config, tmp_path / "runtool.toml")),
           "QUERY_STRING": query}
    env.pop("VOILA_PREHEAT", None)
    modules = _modules_after(code, env, tmp_path)

    assert _heavy_in(modules, page) == []
