// The live channel: one websocket per page to /ws/live/ (user's and organization's groups).
// Messages are {event, data, fragments: {elementId: html}}: each fragment replaces the element
// with that id (and is processed by htmx); a DOM event "live:<event>" lets pages react.
(function () {
  "use strict";
  var url = document.body && document.body.dataset.liveUrl;
  if (!url || !window.WebSocket) return;
  var dot = function () { return document.getElementById("live-status"); };
  var delay = 1000;

  function swap(fragments) {
    Object.keys(fragments || {}).forEach(function (id) {
      var old = document.getElementById(id);
      if (!old) return;
      var tpl = document.createElement("template");
      tpl.innerHTML = fragments[id].trim();
      var fresh = tpl.content.firstElementChild;
      if (!fresh) return;
      old.replaceWith(fresh);
      if (window.htmx) window.htmx.process(fresh);
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + url);
    var ping;
    ws.onopen = function () {
      delay = 1000;
      if (dot()) dot().className = "live-dot on";
      ping = setInterval(function () { ws.send(JSON.stringify({event: "ping"})); }, 30000);
    };
    ws.onmessage = function (e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      swap(msg.fragments);
      document.dispatchEvent(new CustomEvent("live:" + msg.event, {detail: msg.data}));
    };
    ws.onclose = function (e) {
      clearInterval(ping);
      if (dot()) dot().className = "live-dot off";
      if (e.code === 4401 || e.code === 4404) return;  // not allowed: do not hammer the server
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
