// Live parts of console pages: an element with data-live="URL" is
// replaced every data-poll milliseconds by the HTML fragment at URL, the
// server-rendered current state (e.g. a rollout's progress). Polling stops
// while the tab is hidden and on a 401 (the session ended).
(function () {
  "use strict";
  function start(el) {
    var url = el.getAttribute("data-live");
    var every = parseInt(el.getAttribute("data-poll"), 10) || 2000;
    var busy = false, stopped = false;
    function tick() {
      if (stopped || busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { stopped = true; return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            el.innerHTML = html;
            el.setAttribute("data-updated", String(Date.now()));
          }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    setInterval(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var els = document.querySelectorAll("[data-live]");
    for (var i = 0; i < els.length; i++) start(els[i]);
  });
})();
