// The station page's live sections: when a command of this station finishes (live event
// "station.command" from portal/live.js), each [data-refresh-station] element asks the server
// for its fresh copy (htmx, hx-trigger="refresh"). A listener rather than hx-trigger because
// htmx's trigger syntax cannot name events containing ":".
(function () {
  "use strict";
  function refresh(e) {
    var station = e.detail && String(e.detail.station);
    document.querySelectorAll("[data-refresh-station]").forEach(function (el) {
      if (window.htmx && (!station || el.dataset.refreshStation === station)) {
        window.htmx.trigger(el, "refresh");
      }
    });
  }
  ["live:station.command", "live:station.boot", "live:station.online"].forEach(function (name) {
    document.addEventListener(name, refresh);
  });
})();
