"""Knowing when the viewer's browser has drawn a page, so its heavy parts can come after its first content.

A served page shows its KPIs, captions and controls first; charts and the inventory grid cost the browser a
second or more to draw (bqplot figures, a canvas grid), and Voila draws nothing until it has loaded every widget
model the page holds. :class:`DrawnSignal` is an invisible widget placed last on the page: its view tells the
kernel once the browser has painted the page around it, and the page then builds its heavy parts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import anywidget

__all__ = ["FALLBACK_ENV", "DrawnSignal"]

FALLBACK_ENV = "RUNTOOL_DRAWN_FALLBACK_S"
"""Seconds before a page draws its heavy parts without word from the browser (default 10; for tests)."""

_ESM = """
export default {
  render({ model, el }) {
    el.style.display = "none";
    // The live page is drawing: the static copy sent before it (runtool.ui.snapshot) goes.
    document.querySelectorAll(".rts-snapshot").forEach((copy) => copy.remove());
    // The frame after this one is painted with the page drawn so far; tell the kernel then.
    requestAnimationFrame(() => setTimeout(() => model.send({ event: "drawn" }), 0));
  },
};
"""


class DrawnSignal(anywidget.AnyWidget):
    """Calls ``on_drawn`` once: when a browser has painted the page holding this widget, or after ``fallback_s``.

    The fallback covers a browser whose message never comes (a viewer gone before the first paint, a blocked
    script), so a page is never left without its heavy parts. Call :meth:`arm` when the page is on its way to a
    viewer; before that, nothing waits.
    """

    _esm = _ESM

    def __init__(self, on_drawn: Callable[[], None], fallback_s: float | None = None) -> None:
        super().__init__()
        self._on_drawn = on_drawn
        self._fallback_s = fallback_s if fallback_s is not None else float(os.environ.get(FALLBACK_ENV) or 10.0)
        self._fired = threading.Event()
        self._timer: threading.Timer | None = None
        self.on_msg(self._message)

    def arm(self) -> None:
        """Start the fallback clock (the page is about to be sent to a viewer)."""
        if self._timer is None and not self._fired.is_set():
            self._timer = threading.Timer(self._fallback_s, self.fire)
            self._timer.daemon = True
            self._timer.start()

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def fire(self) -> None:
        """Run ``on_drawn`` now, unless it already ran."""
        if self._fired.is_set():
            return
        self._fired.set()
        if self._timer is not None:
            self._timer.cancel()
        self._on_drawn()

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "drawn":
            self.fire()
