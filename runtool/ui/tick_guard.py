"""Tick labels that never run into each other, whatever the window's width.

A chart's date and number ticks are chosen in the kernel (``num_ticks``, round steps), which does not know how wide
the viewer's window is: at 760 px the ten dates under a coverage chart ran into each other ("2025-05-292025-06-10").
:class:`TickGuard` is an invisible widget placed on every page; in the browser it watches the page's bqplot axes and,
after each redraw or resize, hides every date or number tick label that would touch the one before it (its tick line
stays). Labels that are names (laser boxes) are never hidden: the charts shorten or page those instead.
"""

from __future__ import annotations

import anywidget

__all__ = ["TickGuard"]

_ESM = """
// Dates, times, numbers and percentages may be thinned out; a label with a letter in it is a name and is kept.
const THINNABLE = /^[-\\u2212+\\d\\s:.,%]+$/;
const GAP_PX = 6;

function thin(root) {
  for (const axis of root.querySelectorAll(".bqplot .axis")) {
    const labels = [...axis.querySelectorAll(".tick text")];
    if (!labels.length || !labels.every((t) => THINNABLE.test(t.textContent.trim()))) continue;
    labels.forEach((t) => { if (t.style.display === "none") t.style.display = ""; });
    let kept = null;
    for (const label of labels) {
      const r = label.getBoundingClientRect();
      if (!r.width) continue;
      const touches = kept && r.left < kept.right + GAP_PX && kept.left < r.right + GAP_PX
        && r.top < kept.bottom && kept.top < r.bottom;
      if (touches) label.style.display = "none";
      else kept = r;
    }
  }
}

export default {
  render({ el }) {
    el.style.display = "none";
    const root = document.body;  // this view may not be in the page yet when it renders
    let pending = false;
    const schedule = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; thin(root); });
    };
    // bqplot redraws an axis by moving its ticks (transform) or replacing them; hiding a label changes neither.
    const observer = new MutationObserver(schedule);
    observer.observe(root, { childList: true, subtree: true, characterData: true, attributes: true,
                             attributeFilter: ["transform"] });
    window.addEventListener("resize", schedule);
    schedule();
    return () => { observer.disconnect(); window.removeEventListener("resize", schedule); };
  },
};
"""


class TickGuard(anywidget.AnyWidget):
    """Hides the date and number tick labels of the page's charts that would touch their neighbour (see module)."""

    _esm = _ESM
