"use strict";
// The entry page: with the trust root remembered on a receipt page, check
// this entry's signature, its inclusion and the checkpoint's cosignatures
// in the browser.
(function () {
  const V = window.CloisterVerify;
  const sec = document.getElementById("entry-check");
  const saved = localStorage.getItem("cloister.trustRoot");
  const btn = document.getElementById("entry-check-run");
  if (!sec || !V || !saved) return;
  btn.hidden = false;
  btn.addEventListener("click", async () => {
    const out = document.getElementById("entry-check-results"), status = document.getElementById("entry-check-status");
    out.replaceChildren();
    const say = (t) => { const li = document.createElement("li"); li.textContent = t; out.appendChild(li); };
    try {
      const trust = JSON.parse(saved);
      const d = await (await fetch("/ui/api/ledger/entry/" + sec.dataset.index, { cache: "no-store" })).json();
      const e = await V.decodeEntry(d.tx);
      say(e.sigValid ? "The entry is canonical and its submitter's signature verifies." : "The submitter's signature does NOT verify.");
      const cp = await V.openCheckpoint(d.checkpoint.note, trust.validator_set);
      say(`The checkpoint of size ${cp.size} is cosigned by your pinned validators ${cp.signers.join(", ")} (power ${cp.signed} of ${cp.total}).`);
      if (d.inclusion_proof && d.inclusion_proof.hashes && d.inclusion_proof.size === cp.size) {
        const ok = await V.checkInclusion(d.index, cp.size, e.leaf, d.inclusion_proof.hashes.map(V.b64d), cp.root);
        say(ok ? "The entry is included in that checkpoint (RFC 6962 audit path checked)." : "The inclusion proof does NOT verify.");
      }
      status.textContent = "Checked in your browser against your trust root:";
    } catch (err) {
      say("Failed: " + err.message);
    }
  });
})();
