// Sentinel console: the live feed. Listens to the server's change events and
// re-fetches the part of the page marked data-live when a run it shows
// changed. The pages work without this script; it only keeps them current.
(function () {
  "use strict";
  var state = document.getElementById("live-state");
  function say(text) { if (state) state.textContent = text; }
  function live() { return document.querySelector("[data-live]"); }
  if (!live() || !window.EventSource) return;

  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { headers: { "X-Console-Live": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { say("signed out: reload to sign in"); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var old = live();
        if (fresh && old) {
          var focused = document.activeElement && document.activeElement.getAttribute("href");
          old.replaceWith(fresh);
          if (focused) {
            var target = fresh.querySelector('[href="' + CSS.escape(focused) + '"]');
            if (target) target.focus();
          }
        }
        say("live");
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  var events = new EventSource("/console/events");
  events.addEventListener("ready", function () { say("live"); });
  events.addEventListener("change", function (e) {
    var d = JSON.parse(e.data), el = live();
    if (!el) return;
    var run = el.getAttribute("data-run");
    if (run && !d.all && d.runs.indexOf(run) < 0) return;
    refresh();
  });
  events.onerror = function () {
    say(events.readyState === EventSource.CLOSED ? "not live: reload the page" : "reconnecting…");
  };
})();
