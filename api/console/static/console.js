// Times in the browser's own zone (the UTC instant stays in each title), with a switch to
// UTC remembered in localStorage. Without this script every time simply reads as UTC.
(function () {
  "use strict";
  var KEY = "auditlog.console.utc";

  function zoneName() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    } catch (error) {
      return "local time";
    }
  }

  var local = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });

  function utcText(date) {
    return date.toISOString().replace("T", " ").replace(/\.000Z$|Z$/, "").replace(/(\.\d{3})$/, "$1") + " UTC";
  }

  function wantsUtc() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (error) { return false; }
  }

  function render(root) {
    var utc = wantsUtc();
    var times = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var date = new Date(times[i].getAttribute("datetime"));
      if (isNaN(date.getTime())) { continue; }
      times[i].textContent = utc ? utcText(date) : local.format(date);
    }
    var zones = document.querySelectorAll("[data-zone-name]");
    for (var j = 0; j < zones.length; j++) { zones[j].textContent = utc ? "UTC" : zoneName(); }
    var toggle = document.querySelector("[data-time-toggle]");
    if (toggle) {
      toggle.hidden = false;
      toggle.setAttribute("aria-pressed", utc ? "true" : "false");
      toggle.textContent = utc ? "Show local times" : "Show times in UTC";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.querySelector("[data-time-toggle]");
    if (toggle) {
      toggle.addEventListener("click", function () {
        try { window.localStorage.setItem(KEY, wantsUtc() ? "0" : "1"); } catch (error) { /* private mode */ }
        render(document);
      });
    }
    render(document);
  });
  // New events swapped in by htmx (following the log) get the same treatment.
  document.addEventListener("htmx:afterSwap", function (event) { render(event.target); });
})();
