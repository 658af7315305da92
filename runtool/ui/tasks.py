"""Long work off the kernel's main thread.

A widget callback runs on the kernel's main thread; while it runs, the kernel answers no other widget
message and the page freezes. Pages therefore hand slow work (a bucket scan, later transfers) to a
:class:`BackgroundTask`, which runs it in a daemon thread and reports back through callbacks that
update widgets (ipywidgets sends state changes from any thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BackgroundTask", "TaskBusyError"]

T = TypeVar("T")


class TaskBusyError(RuntimeError):
    """A task was started while the previous one still runs."""


class BackgroundTask(Generic[T]):
    """One job at a time in a daemon thread, with a cancel flag the job is expected to poll."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._working = False
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the job itself still runs (false already while its callbacks run, so they see it done)."""
        return self._working

    def start(
        self,
        work: Callable[[threading.Event], T],
        on_done: Callable[[T], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        """Run ``work(cancel)``, then ``on_done(result)`` or ``on_error(exception)``, in a new thread.

        Raises:
            TaskBusyError: the previous job has not finished.
        """
        with self._lock:
            if self._working:
                raise TaskBusyError(f"{self.name} is already running")
            self._working = True
            self.cancel = threading.Event()
            cancel = self.cancel

            def run() -> None:
                try:
                    result = work(cancel)
                except Exception as exc:  # handed to on_error, which shows it
                    self._working = False
                    on_error(exc)
                    return
                self._working = False
                on_done(result)

            self._thread = threading.Thread(target=run, name=self.name, daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the current job and its callbacks; True when they are done."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
