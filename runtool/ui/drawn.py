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
LOADING_FALLBACK_S = 120.0
"""The same once a browser is loading the page's widgets (this widget's model reached it)."""

_ESM = """
export default {
  initialize({ model }) {
    // Created while the browser loads the page's widgets: the kernel waits longer for "drawn" now.
    model.send({ event: "loading" });
  },
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
    viewer; before that, nothing waits. Once a browser has this widget's model it is loading the page, and
    the fallback waits ``loading_fallback_s`` instead: heavy parts built while a slow browser still loads the
    page's widgets change the widgets it is loading under it (seen as "widget model not found" on busy servers).
    """

    _esm = _ESM

    def __init__(self, on_drawn: Callable[[], None], fallback_s: float | None = None,
                 loading_fallback_s: float = LOADING_FALLBACK_S) -> None:
        super().__init__()
        self._on_drawn = on_drawn
        self._fallback_s = fallback_s if fallback_s is not None else float(os.environ.get(FALLBACK_ENV) or 10.0)
        self._loading_fallback_s = loading_fallback_s
        self._fired = threading.Event()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._loading = False
        self._clock = 0
        self.on_msg(self._message)

    def arm(self) -> None:
        """Start the fallback clock (the page is about to be sent to a viewer)."""
        with self._lock:
            if self._timer is None and not self._fired.is_set():
                self._start_timer()

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    def fire(self) -> None:
        """Run ``on_drawn`` now, unless it already ran."""
        with self._lock:
            if self._fired.is_set():
                return
            self._fired.set()
            if self._timer is not None:
                self._timer.cancel()
        self._on_drawn()

    def _start_timer(self) -> None:
        self._clock += 1
        clock = self._clock
        self._timer = threading.Timer(self._loading_fallback_s if self._loading else self._fallback_s,
                                      lambda: self._timed_out(clock))
        self._timer.daemon = True
        self._timer.start()

    def _timed_out(self, clock: int) -> None:
        with self._lock:
            current = clock == self._clock  # not a clock cancelled while it went off
        if current:
            self.fire()

    def _browser_loading(self) -> None:
        with self._lock:
            if self._loading or self._fired.is_set():
                return
            self._loading = True
            if self._timer is not None:  # armed: the clock starts again, longer
                self._timer.cancel()
                self._start_timer()

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "drawn":
            self.fire()
        elif isinstance(content, dict) and content.get("event") == "loading":
            self._browser_loading()
