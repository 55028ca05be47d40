// Times in the reader's own time zone, and live countdowns (no inline script: the CSP forbids it).
// A <time datetime="ISO" data-local> shows the reader's local time with the zone named; the
// server's text (the course's zone, named) stays for a browser without script.
// An element with data-countdown="ISO" counts down to that instant.
(() => {
  const fmt = new Intl.DateTimeFormat(undefined, {weekday: "short", year: "numeric", month: "short", day: "numeric",
                                                 hour: "2-digit", minute: "2-digit", timeZoneName: "short"});
  for (const el of document.querySelectorAll("time[data-local]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) { el.title = el.textContent; el.textContent = fmt.format(at); }
  }
  const span = (ms) => {
    const m = Math.max(0, Math.floor(ms / 60000)), d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60);
    return d ? `${d} d ${h} h` : (h ? `${h} h ${m % 60} min` : `${m % 60} min`);
  };
  const tick = () => {
    for (const el of document.querySelectorAll("[data-countdown]")) {
      const left = new Date(el.dataset.countdown) - new Date();
      el.textContent = left > 0 ? `${el.dataset.prefix || "in"} ${span(left)}` : (el.dataset.after || "now");
    }
  };
  tick();
  setInterval(tick, 30000);
})();
