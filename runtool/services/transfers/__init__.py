"""Transfers between the buckets and the local roots: plan → preview → execute the previewed plan.

- :mod:`~runtool.services.transfers.plan`: the plan model (:class:`TransferPlan`, :class:`BulkPlan`) and the
  planning of each operation (:class:`TransferPlanner`);
- :mod:`~runtool.services.transfers.engine`: the engine that moves planned files (lock, temporary file, verify,
  rename), needing only the configuration and a storage client; the transfer service, dataset fetches and the
  executor's workers all use it;
- :mod:`~runtool.services.transfers.service`: :class:`TransferService`, which executes one run's plan or many
  (bulk, on the executor) and refreshes the state of the runs they changed.
"""

from __future__ import annotations

from runtool.services.conflicts import CONFLICT_MODES, ConflictMode
from runtool.services.transfers.engine import (
    ALREADY_DOWNLOADED,
    ALREADY_UPLOADED,
    PART_MARKER,
    FileOutcome,
    TransferEngine,
    TransferProgress,
    TransferResult,
    execute_run_plan,
)
from runtool.services.transfers.plan import BulkPlan, PlannedFile, TransferError, TransferPlan, TransferPlanner
from runtool.services.transfers.service import BULK_RUNS_AT_ONCE, BulkResult, TransferService

__all__ = [
    "ALREADY_DOWNLOADED",
    "ALREADY_UPLOADED",
    "BULK_RUNS_AT_ONCE",
    "CONFLICT_MODES",
    "PART_MARKER",
    "BulkPlan",
    "BulkResult",
    "ConflictMode",
    "FileOutcome",
    "PlannedFile",
    "TransferEngine",
    "TransferError",
    "TransferPlan",
    "TransferPlanner",
    "TransferProgress",
    "TransferResult",
    "TransferService",
    "execute_run_plan",
]
