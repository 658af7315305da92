// Tells the viewer when this page's kernel is gone (stopped by the server, culled, crashed or restarted):
// the page's controls no longer answer, and only a reload brings them back. And asks the server to stop the kernel
// when the viewer leaves before Voila's scripts could.
(function () {
  "use strict";
  const Native = window.WebSocket;
  const KERNEL_CHANNEL = /\/api\/kernels\/[^/]+\/channels/;
  const LOST = /"execution_state":\s*"(dead|restarting|autorestarting)"/;
  let leaving = false;
  // Once the kernel restarted or died, the page's state is gone for good, even if a socket reconnects.
  let lost = false;
  window.addEventListener("beforeunload", function () { leaving = true; });

  function notice(show) {
    let box = document.getElementById("rt-session-notice");
    if (!show) {
      if (box && !lost) box.remove();
      return;
    }
    if (box || leaving) return;
    box = document.createElement("div");
    box.id = "rt-session-notice";
    box.setAttribute("role", "alert");
    // Above the page and taking its own room (fixed over it, it hid the header), kept in view on scrolling.
    box.style.cssText = "position:sticky;top:0;z-index:10000;padding:10px 16px;" +
      "background:#fde8e8;color:#7f1d1d;border-bottom:2px solid #b91c1c;font:14px system-ui,sans-serif";
    box.textContent = "This page's session has ended (the server stopped it, or it failed): its controls no " +
      "longer answer, and what it was still drawing will not come. Reload the page to start a new one.";
    document.body.prepend(box);
  }

  function watched(url, protocols) {
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    if (KERNEL_CHANNEL.test(String(url))) {
      socket.addEventListener("open", function () { notice(false); });
      socket.addEventListener("close", function () { notice(true); });
      socket.addEventListener("message", function (event) {
        // Status messages are small; the check skips the large widget messages.
        if (event.data instanceof ArrayBuffer && event.data.byteLength < 2048 &&
            LOST.test(new TextDecoder().decode(event.data))) {
          lost = true;
          notice(true);
        }
      });
    }
    return socket;
  }
  // Voila asks for the kernel's model before it opens the kernel's channel, and opens no channel when the kernel
  // is gone (crashed, or stopped by the server, while the page loaded): the page's static first screen stayed up,
  // its controls drawn disabled, with no word. A kernel the server no longer has ends the session too.
  const KERNEL_MODEL = /\/api\/kernels\/[^/?#]+(?:[?#]|$)/;
  const nativeFetch = window.fetch;
  if (nativeFetch) {
    window.fetch = function (input, init) {
      const url = typeof input === "string" ? input : String((input && input.url) || input);
      const method = String((init && init.method) || (input && input.method) || "GET").toUpperCase();
      const answer = nativeFetch.apply(this, arguments);
      if (method === "GET" && KERNEL_MODEL.test(url)) {
        answer.then(function (response) {
          if (response.status === 404) {
            lost = true;
            notice(true);
          }
        }, function () { notice(true); });
      }
      return answer;
    };
  }

  // A viewer can leave before Voila's scripts have loaded (the static first screen shows at once, and its links
  // work): Voila sets its "shut this page's kernel down" beacon on leave only once it has the kernel's model, so
  // such a kernel held a place under the server's cap for minutes. Unless Voila's own beacon went out, this page
  // sends it on leaving. Whether Voila's went is what counts, not whether Voila had the model: a link clicked as
  // the page loaded fires "beforeunload" at once, but the page runs on until the next one arrives (seconds on a
  // busy server), and Voila then got the model and set its beacon after the only "beforeunload" it would see.
  let shutdownAsked = false;
  const shutdownPath = "voila/api/shutdown/";
  if (navigator.sendBeacon) {
    const nativeBeacon = navigator.sendBeacon;
    navigator.sendBeacon = function (url) {
      const sent = nativeBeacon.apply(this, arguments);
      if (sent && String(url).indexOf(shutdownPath) !== -1) shutdownAsked = true;
      return sent;
    };
  }
  window.addEventListener("pagehide", function () {
    const config = document.getElementById("jupyter-config-data");
    if (shutdownAsked || !config || !navigator.sendBeacon) return;
    let page;
    try {
      page = JSON.parse(config.textContent);
    } catch (error) {
      return;
    }
    if (!page.kernelId) return;
    const xsrf = document.cookie.match(/\b_xsrf=([^;]*)\b/);
    const form = new FormData();
    form.append("_xsrf", xsrf ? xsrf[1] : "");
    navigator.sendBeacon((page.baseUrl || "/") + shutdownPath + encodeURIComponent(page.kernelId), form);
  });

  watched.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (name) { watched[name] = Native[name]; });
  window.WebSocket = watched;
})();
