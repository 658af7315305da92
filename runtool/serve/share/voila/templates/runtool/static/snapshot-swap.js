// A page's static first screen (runtool.ui.snapshot) comes as plain HTML in the page: runtoolShowEarly() shows
// it the moment the browser has read it (Voila keeps its cells hidden until its scripts have loaded, and takes
// its spinner away then). The copy goes the moment the page's live widgets are in the document, before the
// browser paints both: it is only there to show content while the widgets load.
(function () {
  "use strict";
  window.runtoolShowEarly = function () {
    const spinner = document.getElementById("loading");
    if (spinner) spinner.remove();
    const cells = document.getElementById("rendered_cells");
    if (cells) cells.style.display = "";
  };
  const observer = new MutationObserver(function () {
    if (!document.querySelector(".rt-page")) return;
    document.querySelectorAll(".rts-early, .rts-snapshot").forEach(function (copy) { copy.remove(); });
    observer.disconnect();
  });
  observer.observe(document, { childList: true, subtree: true });
})();
