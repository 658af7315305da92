"""The services: inventory, local state, data state (read views) and their container."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtool.services.container import ServiceContainer
    from runtool.services.data_state import DataStateService
    from runtool.services.inventory import (
        CacheInfo,
        CloudInventoryService,
        InventoryError,
        InventorySnapshot,
        RefreshCancelled,
        RefreshProgress,
    )
    from runtool.services.local_state import (
        ExportInfo,
        ExportTrackingError,
        LocalRun,
        LocalStateService,
        read_export_tracking,
    )
    from runtool.services.transfers import (
        CONFLICT_MODES,
        TransferError,
        TransferPlan,
        TransferProgress,
        TransferResult,
        TransferService,
    )

__all__ = [
    "CONFLICT_MODES",
    "CacheInfo",
    "CloudInventoryService",
    "DataStateService",
    "ExportInfo",
    "ExportTrackingError",
    "InventoryError",
    "InventorySnapshot",
    "LocalRun",
    "LocalStateService",
    "RefreshCancelled",
    "RefreshProgress",
    "ServiceContainer",
    "TransferError",
    "TransferPlan",
    "TransferProgress",
    "TransferResult",
    "TransferService",
    "read_export_tracking",
]

# Imported on first use: a page kernel needs the container and the read views, not the transfer engine and
# the cloud client behind it until the viewer acts (see "Issue 8 (c)" in docs/performance.md).
_HOMES = {
    "ServiceContainer": "runtool.services.container",
    "DataStateService": "runtool.services.data_state",
    "CacheInfo": "runtool.services.inventory",
    "CloudInventoryService": "runtool.services.inventory",
    "InventoryError": "runtool.services.inventory",
    "InventorySnapshot": "runtool.services.inventory",
    "RefreshCancelled": "runtool.services.inventory",
    "RefreshProgress": "runtool.services.inventory",
    "ExportInfo": "runtool.services.local_state",
    "ExportTrackingError": "runtool.services.local_state",
    "LocalRun": "runtool.services.local_state",
    "LocalStateService": "runtool.services.local_state",
    "read_export_tracking": "runtool.services.local_state",
    "CONFLICT_MODES": "runtool.services.transfers",
    "TransferError": "runtool.services.transfers",
    "TransferPlan": "runtool.services.transfers",
    "TransferProgress": "runtool.services.transfers",
    "TransferResult": "runtool.services.transfers",
    "TransferService": "runtool.services.transfers",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'runtool.services' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
