"""The ServiceContainer: one place that builds the services from a configuration."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from runtool.config import RuntoolConfig, load_config
from runtool.models import CoverageSettings

if TYPE_CHECKING:
    from google.cloud import storage

    from runtool.services.analytics import AnalyticsService
    from runtool.services.data_state import DataStateService
    from runtool.services.datasets import DatasetService
    from runtool.services.extraction import ExtractionService
    from runtool.services.inventory import CloudInventoryService
    from runtool.services.kpis import KpiService
    from runtool.services.local_state import LocalStateService
    from runtool.services.pipeline import RunPipeline
    from runtool.services.reports import ReportService
    from runtool.services.transfers import TransferEngine, TransferService

__all__ = ["ServiceContainer", "writable_pipeline"]


class ServiceContainer:
    """Builds each service on first use and wires them together.

    >>> services = ServiceContainer.from_environment()
    >>> services.data_state.runs()

    Each service's module is imported when the service is first built, so a page that only reads (coverage)
    does not load the transfer, extraction and report services and the libraries behind them.
    """

    def __init__(self, config: RuntoolConfig, read_only: bool | None = None) -> None:
        self.config = config
        self.read_only = config.read_only if read_only is None else read_only

    @classmethod
    def from_environment(cls, config_path: Path | None = None, read_only: bool | None = None) -> ServiceContainer:
        """Load the configuration (file + environment) and build the container."""
        return cls(load_config(config_path), read_only=read_only)

    def make_client(self) -> storage.Client:
        from runtool.storage import make_client

        return make_client(self.config.gcp_project, self.config.emulator_host)

    @property
    def coverage_settings(self) -> CoverageSettings:
        return CoverageSettings(self.config.expected_samples_per_bag, self.config.under_labelled_pct)

    @cached_property
    def inventory(self) -> CloudInventoryService:
        from runtool.services.inventory import CloudInventoryService

        inventory = CloudInventoryService(self.config, self.make_client, read_only=self.read_only)
        inventory.listeners.append(self._after_refresh)
        return inventory

    @cached_property
    def local(self) -> LocalStateService:
        from runtool.services.local_state import LocalStateService

        return LocalStateService(self.config)

    @cached_property
    def data_state(self) -> DataStateService:
        from runtool.services.data_state import DataStateService

        return DataStateService(self.inventory, self.local, self.coverage_settings)

    @cached_property
    def transfer_engine(self) -> TransferEngine:
        """What moves planned files (verified, atomic), shared by the transfers and the dataset fetches."""
        from runtool.services.transfers import TransferEngine

        return TransferEngine(self.config, self.make_client)

    @cached_property
    def transfers(self) -> TransferService:
        from runtool.services.transfers import TransferService

        return TransferService(self.transfer_engine, self.inventory, self.local, read_only=self.read_only)

    @cached_property
    def extraction(self) -> ExtractionService:
        from runtool.services.extraction import ExtractionService

        return ExtractionService(self.config, self.local, read_only=self.read_only)

    @cached_property
    def analytics(self) -> AnalyticsService:
        from runtool.services.analytics import AnalyticsService

        return AnalyticsService(self.config, self.local, read_only=self.read_only)

    @cached_property
    def pipeline(self) -> RunPipeline:
        from runtool.services.pipeline import RunPipeline

        return RunPipeline(
            self.config,
            self.data_state,
            self.local,
            self.transfers,
            self.extraction,
            self.analytics,
            self.kpis,
            from_config=writable_pipeline,
            read_only=self.read_only,
        )

    @cached_property
    def kpis(self) -> KpiService:
        from runtool.services.kpis import KpiService

        return KpiService(self.config, self.data_state, read_only=self.read_only)

    @cached_property
    def reports(self) -> ReportService:
        from runtool.services.reports import ReportService

        return ReportService(self.config, self.data_state, self.pipeline, read_only=self.read_only)

    @cached_property
    def datasets(self) -> DatasetService:
        from runtool.services.datasets import DatasetService

        return DatasetService(
            self.config, self.data_state, self.inventory, self.transfer_engine, read_only=self.read_only
        )

    def _after_refresh(self, scope: object) -> None:
        """A full cloud refresh rescans the local roots too, so both sides describe the same moment."""
        if scope is None:
            self.local.scan()


def writable_pipeline(config: RuntoolConfig) -> RunPipeline:
    """A writable run pipeline with its services, built from ``config``: what a process or Dask worker of
    :meth:`RunPipeline.update_many <runtool.services.pipeline.RunPipeline.update_many>` runs each run with."""
    return ServiceContainer(config, read_only=False).pipeline
