"""runtool: what data the fleet recorded, where the labelling gaps are, and the data you need, safely.

>>> from runtool import ServiceContainer
>>> services = ServiceContainer.from_environment()
>>> services.data_state.coverage_statistics(Filters(cid="client_001"))
"""

from __future__ import annotations

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
