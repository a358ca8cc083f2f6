// Small page behaviours declared with data attributes, so that templates need no inline
// scripts or on* handlers (the content security policy allows scripts from our files only):
//   <form data-confirm="Delete?">, <button data-confirm="Remove?">  ask before submitting;
//   <select data-autosubmit>                                       submits its form on change;
//   <div data-reload-on="live:station.added">                      reloads the page on that event;
//   <p data-power-of="#input" data-voltage="230"> ... <span id="power-3"> ... <span id="power-1">
//                   each power-<phases> inside shows the kW of the amps typed into #input on that
//                   many phases (one decimal, rounded down).
// Listeners sit on the document, so fragments swapped in later (htmx, live.js) work too.
(function () {
  "use strict";

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) e.preventDefault();
  }, true);

  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("button[data-confirm], input[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) e.preventDefault();
  }, true);

  document.addEventListener("change", function (e) {
    var field = e.target;
    if (field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) {
      field.form.submit();
    }
  });

  document.addEventListener("input", function (e) {
    document.querySelectorAll("[data-power-of]").forEach(function (box) {
      if (document.querySelector(box.getAttribute("data-power-of")) !== e.target) return;
      var amps = parseInt(e.target.value, 10);
      if (isNaN(amps)) return;
      var volts = Number(box.getAttribute("data-voltage"));
      box.querySelectorAll("[id^='power-']").forEach(function (out) {
        var phases = Number(out.id.slice("power-".length));
        if (phases) out.textContent = (Math.floor(amps * volts * phases / 100) / 10).toString();
      });
    });
  });

  document.querySelectorAll("[data-reload-on]").forEach(function (el) {
    document.addEventListener(el.getAttribute("data-reload-on"), function () { location.reload(); });
  });
})();
