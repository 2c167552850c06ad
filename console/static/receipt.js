"use strict";
// The receipt page: the viewer's trust root (pasted, or remembered in this
// browser), and the checks verify.js runs with it.
(function () {
  const V = window.CloisterVerify;
  const sec = document.getElementById("verify");
  if (!sec || !V) return;
  const form = document.getElementById("trust-form");
  const ta = document.getElementById("trust-root");
  const remember = document.getElementById("remember");
  const status = document.getElementById("verify-status");
  const table = document.getElementById("browser-checks");
  const fileInput = document.getElementById("receipt-file");
  const storeKey = "cloister.trustRoot";
  form.hidden = false;
  const saved = localStorage.getItem(storeKey);
  if (saved) { ta.value = saved; remember.checked = true; }

  function show(checks, source) {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const c of checks) {
      const tr = document.createElement("tr");
      tr.dataset.check = c.id;
      const result = c.ok === true ? "passed" : c.ok === false ? "FAILED" : "not checked here";
      for (const t of [c.name, result, c.detail]) {
        const td = document.createElement("td");
        td.textContent = t;
        tr.appendChild(td);
      }
      if (c.ok === false) tr.className = "failed";
      body.appendChild(tr);
    }
    table.hidden = false;
    const failed = checks.some((c) => c.ok === false);
    status.dataset.result = failed ? "invalid" : "valid";
    status.textContent = (failed ? "INVALID: a check failed in your browser (" + source + "). " : "VALID: every check below ran in your browser against your trust root (" + source + "). ") +
      "Checks marked \"not checked here\" were left to the node and to cloister receipt verify.";
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.dataset.result = "running";
    status.textContent = "Verifying…";
    let trust;
    try { trust = JSON.parse(ta.value); } catch (e) {
      status.dataset.result = "invalid";
      status.textContent = "Your trust root is not JSON: paste the ledger state file (cloister ledger verify --state FILE).";
      return;
    }
    if (remember.checked) localStorage.setItem(storeKey, ta.value); else localStorage.removeItem(storeKey);
    let text, source;
    try {
      if (fileInput.files.length) {
        text = await fileInput.files[0].text();
        source = "the file " + fileInput.files[0].name;
      } else {
        const resp = await fetch("/ui/api/sessions/" + encodeURIComponent(sec.dataset.session) + "/receipt.json", { cache: "no-store" });
        if (!resp.ok) throw new Error("the node did not serve the receipt (" + resp.status + ")");
        text = await resp.text();
        source = "this session's receipt";
      }
    } catch (e) {
      status.dataset.result = "invalid";
      status.textContent = "Could not read the receipt: " + e.message;
      return;
    }
    let r;
    try { r = JSON.parse(text); } catch (e) {
      show([{ id: "receipt", name: "receipt", ok: false, detail: "not JSON" }], source);
      return;
    }
    const consistency = async (from, to) => {
      const resp = await fetch("/ui/api/ledger/consistency?from=" + from + "&to=" + to, { cache: "no-store" });
      if (!resp.ok) throw new Error("the node did not serve a consistency proof from " + from + " to " + to);
      return (await resp.json()).hashes;
    };
    show(await V.verifyReceipt(r, trust, consistency), source);
  });
  document.getElementById("forget").addEventListener("click", () => {
    localStorage.removeItem(storeKey);
    ta.value = "";
    remember.checked = false;
    status.textContent = "Your trust root is forgotten in this browser.";
  });
})();
