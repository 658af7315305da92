"""Date fields typed as ``YYYY-MM-DD``, like every date the app writes.

A browser's date picker shows its locale's format instead (``MM/DD/YYYY`` in an en-US browser), so the
pages use text fields and read them with :func:`parse_iso_date`; a text that is not such a date is said
in words next to the field (:func:`date_field_message`), never raised at the user as a traceback.
"""

from __future__ import annotations

import html
from datetime import date

import ipywidgets as widgets

from runtool.errors import RuntoolError

__all__ = ["DateFieldError", "date_field_message", "iso_date_field", "parse_iso_date"]

PLACEHOLDER = "YYYY-MM-DD"


class DateFieldError(RuntoolError):
    """A date field holds text that is not a ``YYYY-MM-DD`` date."""


def iso_date_field(description: str, width: str, css_class: str) -> widgets.Text:
    """A text field for one date, updated on Enter or when it loses focus (not on every keystroke)."""
    field = widgets.Text(placeholder=PLACEHOLDER, description=description, style={"description_width": "initial"},
                         continuous_update=False, layout=widgets.Layout(width=width))
    field.add_class(css_class)
    return field


def parse_iso_date(text: str, field: str) -> date | None:
    """The ``YYYY-MM-DD`` date typed into the field called ``field``; empty means no limit.

    Raises:
        DateFieldError: the text is not such a date.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise DateFieldError(
            f"“{field}” must be a date written YYYY-MM-DD (e.g. 2025-09-01), not {text!r}."
        ) from exc


def date_field_message(error: DateFieldError | None, consequence: str = "") -> str:
    """The HTML to show next to a date field: the error and what the page does about it, or nothing."""
    if error is None:
        return ""
    text = f"{error} {consequence}".strip()
    return f'<span class="rt-date-error" style="color:#b71c1c">{html.escape(text)}</span>'
