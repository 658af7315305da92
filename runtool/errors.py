"""The root of runtool's exception hierarchy.

Each module defines its own error class deriving from :class:`RuntoolError`, so callers can catch
everything runtool raises in one place and still tell the concerns apart.
"""

from __future__ import annotations

__all__ = ["ReadOnlyError", "RuntoolError", "UsageError", "first_and_more"]


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


def first_and_more(failures: list[tuple[str, str]]) -> tuple[str, str]:
    """The first of ``failures`` (name, reason) for a sentence, "name (reason) and N more", and every one of them,
    a line each, for the error's details: a list of hundreds of items is no sentence."""
    (name, reason), more = failures[0], len(failures) - 1
    first = f"{name} ({reason.rstrip('.')})" + (f" and {more} more" if more else "")
    return first, "\n".join(f"{item}: {why}" for item, why in failures)
