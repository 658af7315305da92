"""runtool: what data the fleet recorded, where the labelling gaps are, and the data you need, safely.

>>> from runtool import ServiceContainer, Filters
>>> services = ServiceContainer.from_environment()
>>> services.data_state.coverage_statistics(Filters(cid="client_001"))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
__version__ = "0.1.0"

# Imported on first use, so `python -m runtool.extract` (in the extractor container) does not pull in the
# services' pandas and google-cloud-storage.
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
    if name not in _HOMES:
        raise AttributeError(f"module 'runtool' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
