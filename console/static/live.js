"use strict";
// Live progress on a session page: while the session has not reached a
// terminal state, poll its JSON and, when a step completes, replace the
// page's live part with the newly rendered one; tick the run's elapsed
// time in between.
(function () {
  let live = document.getElementById("live");
  if (!live || live.dataset.terminal === "true") return;
  const id = live.dataset.session;
  const tick = () => {
    const el = document.getElementById("elapsed"), started = Number(live.dataset.runStarted);
    if (el && started) el.textContent = ((Date.now() - started) / 1000).toFixed(0) + " s";
  };
  const poll = async () => {
    try {
      const r = await fetch("/ui/api/sessions/" + encodeURIComponent(id), { cache: "no-store" });
      if (r.ok) {
        const s = await r.json();
        if (s.state !== live.dataset.state || (s.events || []).length !== Number(live.dataset.events)) {
          const page = await fetch(location.href, { cache: "no-store" });
          const doc = new DOMParser().parseFromString(await page.text(), "text/html");
          const fresh = doc.getElementById("live");
          if (fresh) { live.replaceWith(fresh); live = fresh; }
        }
      }
    } catch (e) { /* the node may be restarting: try again */ }
    tick();
    if (live.dataset.terminal !== "true") setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
})();
