"""Find widgets in a page's widget tree by their ``rt-*`` DOM class (what the browser tests select on)."""

from __future__ import annotations

import ipywidgets as widgets


def descendants(root: widgets.Widget) -> list[widgets.Widget]:
    """``root`` and every widget inside it, depth first."""
    found = [root]
    if isinstance(root, widgets.Box):
        for child in root.children:
            found.extend(descendants(child))
    return found


def with_class(root: widgets.Widget, css_class: str) -> list[widgets.Widget]:
    return [w for w in descendants(root) if css_class in getattr(w, "_dom_classes", ())]
