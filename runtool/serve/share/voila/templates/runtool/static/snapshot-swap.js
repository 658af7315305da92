// A page's static first screen (runtool.ui.snapshot) goes the moment its live widgets are in the document,
// before the browser paints both: the copy is only there to show content while the widgets load.
(function () {
  "use strict";
  const observer = new MutationObserver(function () {
    if (!document.querySelector(".rt-page")) return;
    document.querySelectorAll(".rts-snapshot").forEach(function (copy) { copy.remove(); });
    observer.disconnect();
  });
  observer.observe(document, { childList: true, subtree: true });
})();
