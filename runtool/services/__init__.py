"""The services: inventory, local state, data state (read views) and their container."""

from __future__ import annotations

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
