"""Opening a page from the kernel: for clicks on canvases (the inventory grid) that cannot hold a link.

ipydatagrid draws its cells on a canvas, and its only link cell (``HyperlinkRenderer``) opens on a Ctrl/⌘-click
alone; a plain click selects the row. The grid reports the click to the kernel, which answers through
:class:`PageOpener` (an invisible widget): its browser side follows the link in the same tab, as a link with
``target="_self"`` would.
"""

from __future__ import annotations

import anywidget

__all__ = ["PageOpener"]

_ESM = """
function listen(model) {
  // Once per model: initialize runs when the model is made, render again when its view is drawn (a model made
  // before this module had loaded may only ever get the latter).
  if (model.__rtOpenerListens) return;
  model.__rtOpenerListens = true;
  model.on("msg:custom", (message) => {
    // Relative links resolve against the page (/voila/render/...), as the page's own <a href> do.
    if (message && typeof message.open === "string") window.location.assign(new URL(message.open, document.baseURI));
  });
}

export default {
  initialize({ model }) {
    listen(model);
  },
  render({ model, el }) {
    el.style.display = "none";
    listen(model);
  },
};
"""


class PageOpener(anywidget.AnyWidget):
    """Sends the browser showing it to a relative URL of the app (``02_per_run_analysis.ipynb?...``)."""

    _esm = _ESM

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []
        """Every URL asked for, oldest first (for tests and scripts)."""

    def go(self, url: str) -> None:
        """Follow ``url`` in the browser (``open`` is the widget's own: it opens the comm)."""
        self.opened.append(url)
        self.send({"open": url})
