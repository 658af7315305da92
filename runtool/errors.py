"""The root of runtool's exception hierarchy.

Each module defines its own error class deriving from :class:`RuntoolError`, so callers can catch
everything runtool raises in one place and still tell the concerns apart.
"""

from __future__ import annotations

__all__ = ["ReadOnlyError", "RuntoolError", "UsageError"]


class RuntoolError(Exception):
    """Base class of every error runtool raises on purpose.

    Its message is a sentence that sums the error up; ``details`` (None: the sentence is all) is the rest, for a
    reader who asks (every failed item of a list the sentence counts).
    """

    details: str | None = None


class ReadOnlyError(RuntoolError):
    """A write action was asked of services started in read-only mode."""


class UsageError(RuntoolError):
    """Bad input from the user: a command-line option, a served option (exit code 2)."""
