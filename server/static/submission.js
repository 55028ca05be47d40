// Live status of a submission page: poll until the run is finished, then show the results.
(() => {
  const url = document.currentScript.dataset.statusUrl;
  const poll = async () => {
    const r = await fetch(url, {credentials: "same-origin"});
    if (r.ok) {
      const s = await r.json();
      const el = document.getElementById("status");
      el.textContent = s.status; el.dataset.status = s.status;
      if (s.status === "done" || s.status === "failed") { location.reload(); return; }
    }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
})();
