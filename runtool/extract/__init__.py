"""Bag reading and extraction outputs: one streaming pass per bag, flat tables, a bad bag never poisons a run.

The pieces: :mod:`~runtool.extract.reader` reads one bag into record batches,
:mod:`~runtool.extract.outputs` writes a run's files, and ``python -m runtool.extract`` runs both in a
fresh process (what the Docker backend starts in its container). The service that owns the processed
folder is :class:`runtool.services.extraction.ExtractionService`.
"""

from __future__ import annotations

from runtool.extract.outputs import (
    FORMAT_VERSION,
    METADATA_FILE,
    OUTPUT_FILES,
    TABLE_FILES,
    BagOutcome,
    ExtractionProgress,
    ExtractionStage,
    OutputError,
    RunMetadata,
    extract_bags,
)
from runtool.extract.reader import (
    TABLE_SCHEMAS,
    TOPIC_KINDS,
    BagInfo,
    BagReader,
    BagReadError,
    ReadTick,
    bag_name,
    find_bags,
)

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "OUTPUT_FILES",
    "TABLE_FILES",
    "TABLE_SCHEMAS",
    "TOPIC_KINDS",
    "BagInfo",
    "BagOutcome",
    "BagReadError",
    "BagReader",
    "ExtractionProgress",
    "ExtractionStage",
    "OutputError",
    "ReadTick",
    "RunMetadata",
    "bag_name",
    "extract_bags",
    "find_bags",
]
