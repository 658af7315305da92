"""runtool: what data the fleet recorded, where the labelling gaps are, and the data you need, safely.

>>> from runtool import ServiceContainer, Filters
>>> services = ServiceContainer.from_environment()
>>> services.data_state.coverage_statistics(Filters(cid="client_001"))
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # not typing's: importing typing costs more than the rest of this module (see below)
if TYPE_CHECKING:
    from typing import Any

    __version__: str

    from runtool.config import RuntoolConfig, load_config
    from runtool.errors import ReadOnlyError, RuntoolError
    from runtool.models import CoverageSettings, Filters, RunCoordinate
    from runtool.services import ServiceContainer

__all__ = [
    "CoverageSettings",
    "Filters",
    "ReadOnlyError",
    "RunCoordinate",
    "RuntoolConfig",
    "RuntoolError",
    "ServiceContainer",
    "load_config",
]


def _version() -> str:
    """The installed distribution's version, which pip took from pyproject.toml (its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runtool")
    except PackageNotFoundError:
        return _checkout_version()


def _checkout_version() -> str:
    """A checkout put on sys.path without installing it has no metadata: read the same source directly."""
    import tomllib
    from pathlib import Path

    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


# Imported on first use, so `python -m runtool.extract` (in the extractor container) does not pull in the
# services' pandas and google-cloud-storage, and the `runtool` command's entry point (runtool/__main__.py)
# starts handling Ctrl-C within milliseconds: even __version__ (importlib.metadata, ~40 ms) waits for a reader.
_HOMES = {
    "RuntoolConfig": "runtool.config",
    "load_config": "runtool.config",
    "ReadOnlyError": "runtool.errors",
    "RuntoolError": "runtool.errors",
    "CoverageSettings": "runtool.models",
    "Filters": "runtool.models",
    "RunCoordinate": "runtool.models",
    "ServiceContainer": "runtool.services",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name not in _HOMES:
        raise AttributeError(f"module 'runtool' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
