// Live refresh: every few seconds, fetch this page again and swap in its [data-refresh] part.
// Parsed HTML is inert (scripts in it never run), and autoescaping already made job text plain text.
(function () {
  "use strict";
  var live = document.querySelector("[data-refresh]");
  if (!live) return;
  var every = (parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
  function tick() {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
        if (fresh) { live.replaceWith(fresh); live = fresh; }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(tick, every);
})();
