"use strict";
// Cloister's browser verifier. It checks, with the browser's own
// cryptography (WebCrypto), what a Cloister receipt claims: ledger entries
// (their one canonical form, Ed25519 signatures, RFC 6962 leaf hashes and
// inclusion proofs), checkpoints cosigned by the viewer's pinned validator
// set, consistency with the viewer's pinned checkpoint, the policy hash,
// software evidence and its binding to the session key, principals' upload
// signatures and the result commitment (ECDSA P-256). It is tested against
// the known-answer vectors of the ledger verifier package
// (ledger/verify/testdata) and against the Go verifier (package receipt).
// No dependency, no build step; its SHA-256 is published in docs/console.md.
(function (global) {
  const te = new TextEncoder();

  function b64d(s) {
    if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4) throw new Error("not standard base64");
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function b64e(u8) { let s = ""; for (const b of u8) s += String.fromCharCode(b); return btoa(s); }
  function hexd(s) {
    if (typeof s !== "string" || !/^([0-9a-f]{2})*$/.test(s)) throw new Error("not lowercase hex");
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }
  function hexe(u8) { return Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join(""); }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
  async function sha256(u8) { return new Uint8Array(await crypto.subtle.digest("SHA-256", u8)); }

  // Ed25519 as the ledger verifies it: RFC 8032, cofactorless, s < L
  // (WebCrypto's Ed25519 is that).
  async function ed25519Verify(pub, msg, sig) {
    if (pub.length !== 32 || sig.length !== 64) return false;
    try {
      const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
      return await crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
    } catch (e) { return false; }
  }
  function parseKey(s) {
    if (typeof s !== "string" || !s.startsWith("ed25519:")) throw new Error("not an ed25519: key");
    const k = b64d(s.slice(8));
    if (k.length !== 32 || b64e(k) !== s.slice(8)) throw new Error("not an Ed25519 key in canonical base64");
    return k;
  }

  // RFC 8785 canonical JSON: JSON.stringify's strings and numbers, keys
  // sorted by UTF-16 code units.
  // Nesting is counted as the ledger's verifier counts it: a scalar or an
  // empty container is depth 0, any other one more than its deepest
  // member; at most 64. Strings must be well-formed UTF-16 (no lone
  // surrogates), as they must be valid UTF-8 for the ledger.
  function str(s) {
    if (!s.isWellFormed()) throw new Error("a string holds a lone surrogate");
    return JSON.stringify(s);
  }
  function jcs(v, depth = 1) {
    if (v === null || typeof v === "boolean") return JSON.stringify(v);
    if (typeof v === "string") return str(v);
    if (typeof v === "number") { if (!isFinite(v)) throw new Error("number out of range"); return JSON.stringify(v); }
    const keys = Array.isArray(v) ? null : Object.keys(v).sort();
    if ((keys ? keys.length : v.length) > 0 && depth > 64) throw new Error("nested deeper than 64");
    if (!keys) return "[" + v.map((x) => jcs(x, depth + 1)).join(",") + "]";
    return "{" + keys.map((k) => str(k) + ":" + jcs(v[k], depth + 1)).join(",") + "}";
  }

  // RFC 6962 hashes, and inclusion and consistency proofs (RFC 9162 2.1.3.2, 2.1.4.2).
  const leafHash = (tx) => sha256(concat(new Uint8Array([0]), tx));
  const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));
  const half = (n) => Math.floor(n / 2);
  // The root a leaf's audit path leads to, or null if the path does not
  // fit the index and size.
  async function rootOf(index, size, leaf, proof) {
    if (!(index < size)) return null;
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        while (fn % 2 === 0 && fn !== 0) { fn = half(fn); sn = half(sn); }
      } else r = await nodeHash(r, p);
      fn = half(fn); sn = half(sn);
    }
    return sn === 0 ? r : null;
  }
  async function checkInclusion(index, size, leaf, proof, root) {
    const r = await rootOf(index, size, leaf, proof);
    return r !== null && equal(r, root);
  }
  // The length of leaf index's audit path in a tree of size leaves.
  function pathLen(index, size) {
    let n = 0;
    while (size > 1) {
      let k = 1;
      while (k * 2 < size) k *= 2;
      if (index < k) size = k; else { index -= k; size -= k; }
      n++;
    }
    return n;
  }
  async function checkConsistency(first, second, firstRoot, secondRoot, proof) {
    if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
    if (first === 0) return proof.length === 0;
    if (first > second || proof.length === 0) return false;
    let path = proof;
    let m = first;
    while (m % 2 === 0) m /= 2;
    if (m === 1) path = [firstRoot, ...proof]; // first is a power of two
    let fn = first - 1, sn = second - 1;
    while (fn % 2 === 1) { fn = half(fn); sn = half(sn); }
    let fr = path[0], sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        fr = await nodeHash(c, fr); sr = await nodeHash(c, sr);
        while (fn % 2 === 0 && fn !== 0) { fn = half(fn); sn = half(sn); }
      } else sr = await nodeHash(sr, c);
      fn = half(fn); sn = half(sn);
    }
    return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
  }

  // A ledger entry's transaction: {"entry":{body,kind,nonce,submitter,time},"sig":…}
  // in its one canonical form; the submitter signs a domain label and the
  // canonical entry, which is the transaction's own "entry" text. A
  // batch-signed entry (rule version 18) also carries
  // "batch":{count,index,path}: the submitter signed a domain label, the
  // count (8 bytes big-endian) and the root of the RFC 6962 tree whose
  // leaves are the batch's entries' signed texts; path is this entry's
  // audit path in it.
  function only(o, keys) {
    return o !== null && typeof o === "object" && !Array.isArray(o) && jcs(Object.keys(o).sort()) === jcs([...keys].sort());
  }
  async function decodeEntry(tx) {
    const bytes = te.encode(tx);
    if (bytes.length > 65536) throw new Error("entry larger than 64 KiB");
    let o;
    try { o = JSON.parse(tx); } catch (e) { throw new Error("entry is not JSON"); }
    if (jcs(o) !== tx) throw new Error("entry is not in its canonical form");
    const batched = o !== null && typeof o === "object" && Object.hasOwn(o, "batch");
    if (!only(o, batched ? ["batch", "entry", "sig"] : ["entry", "sig"]) || !only(o.entry, ["body", "kind", "nonce", "submitter", "time"])) throw new Error("entry has other members than its format's");
    let path = null;
    if (batched) {
      const b = o.batch;
      if (!only(b, ["count", "index", "path"])) throw new Error("entry batch has other members than its format's");
      if (!Number.isInteger(b.count) || b.count < 2 || b.count > 256) throw new Error("entry batch count is not an integer from 2 to 256");
      if (!Number.isInteger(b.index) || b.index < 0 || b.index >= b.count) throw new Error("entry batch index is not below its count");
      if (!Array.isArray(b.path) || b.path.length !== pathLen(b.index, b.count)) throw new Error("entry batch audit path is not as long as its index and count make it");
      path = b.path.map((h) => {
        const x = typeof h === "string" ? b64d(h) : new Uint8Array(0);
        if (x.length !== 32 || b64e(x) !== h) throw new Error("entry batch path hash is not standard base64 of 32 bytes");
        return x;
      });
    }
    const e = o.entry;
    if (typeof e.kind !== "string" || e.kind === "") throw new Error("entry kind is empty");
    if (!Number.isSafeInteger(e.nonce) || e.nonce < 0) throw new Error("entry nonce is not an integer from 0 to 2^53-1");
    if (typeof e.time !== "string" || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(e.time)) throw new Error("entry time is not UTC with milliseconds");
    if (e.body === null || typeof e.body !== "object" || Array.isArray(e.body)) throw new Error("entry body is not an object");
    const pub = parseKey(e.submitter);
    const sig = b64d(o.sig);
    if (sig.length !== 64) throw new Error("entry signature is not 64 bytes");
    const k = tx.lastIndexOf(',"sig":"');
    // The batch member holds only numbers and base64: the first "entry" member name follows it.
    const start = batched ? tx.indexOf(',"entry":') + ',"entry":'.length : '{"entry":'.length;
    const signed = concat(te.encode("cloister/ledger/entry/v1\n"), te.encode(tx.slice(start, k)));
    let sigValid;
    if (batched) {
      const root = await rootOf(o.batch.index, o.batch.count, await leafHash(signed), path);
      const count = new Uint8Array(8);
      new DataView(count.buffer).setUint32(4, o.batch.count);
      sigValid = await ed25519Verify(pub, concat(te.encode("cloister/ledger/batch/v1\n"), count, root), sig);
    } else sigValid = await ed25519Verify(pub, signed, sig);
    return { entry: e, leaf: await leafHash(bytes), sigValid };
  }

  // A checkpoint: a C2SP signed note, trusted when validators of the
  // pinned set holding more than 2/3 of the power signed it.
  async function keyHash(name, pub) { return (await sha256(concat(te.encode(name + "\n"), new Uint8Array([1]), pub))).slice(0, 4); }
  async function openCheckpoint(note, set) {
    const cut = note.indexOf("\n\n");
    if (cut < 0) throw new Error("checkpoint is not a signed note");
    const text = note.slice(0, cut + 1), lines = text.split("\n");
    if (lines.length < 4 || lines[0] !== set.origin) throw new Error(`checkpoint origin "${lines[0]}" is not the trusted ledger's origin "${set.origin}"`);
    if (!/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("checkpoint size is not a number");
    const size = Number(lines[1]), root = b64d(lines[2]);
    if (!Number.isSafeInteger(size) || root.length !== 32) throw new Error("checkpoint size or root malformed");
    const sigs = note.slice(cut + 2).split("\n").filter((l) => l !== "").map((l) => {
      const m = /^\u2014 (\S+) (\S+)$/.exec(l);
      if (!m) throw new Error("checkpoint signature line malformed");
      return { name: m[1], sig: b64d(m[2]) };
    });
    let signed = 0n, total = 0n;
    const signers = [];
    for (const v of set.validators) {
      total += BigInt(v.power);
      const i = v.key.indexOf("+"), j = v.key.indexOf("+", i + 1); // base64 may hold '+'
      const parts = i < 0 || j < 0 ? [] : [v.key.slice(0, i), v.key.slice(i + 1, j), v.key.slice(j + 1)];
      const raw = parts.length === 3 ? b64d(parts[2]) : new Uint8Array(0);
      if ( parts[0] !== v.name || raw.length !== 33 || raw[0] !== 1) throw new Error(`validator ${v.name}: not an Ed25519 note key`);
      const pub = raw.slice(1), kh = await keyHash(v.name, pub);
      if (hexe(kh) !== parts[1]) throw new Error(`validator ${v.name}: key hash mismatch`);
      const s = sigs.find((x) => x.name === v.name && x.sig.length === 68 && equal(x.sig.slice(0, 4), kh));
      if (!s) continue;
      if (!(await ed25519Verify(pub, te.encode(text), s.sig.slice(4)))) throw new Error(`checkpoint at size ${size}: the signature of validator ${v.name} does not verify`);
      signed += BigInt(v.power);
      signers.push(v.name);
    }
    if (!(3n * signed > 2n * total)) throw new Error(`checkpoint at size ${size} is signed by validators holding power ${signed} of ${total}; more than 2/3 is needed`);
    return { origin: lines[0], size, root, signers, signed: Number(signed), total: Number(total) };
  }

  function sameSet(a, b) {
    const norm = (s) => JSON.stringify([s.origin, s.validators.map((v) => [v.name, v.key, v.power]).sort()]);
    return norm(a) === norm(b);
  }

  // The claims buffer a Cloister session certificate binds (CBOR, core
  // deterministic): {"nonce": nonce, "pubkey-hash": [1, SHA-256(SPKI)]}.
  function claimsBuffer(nonce, spkiHash) {
    return concat(new Uint8Array([0xa2, 0x65]), te.encode("nonce"), new Uint8Array([0x58, 0x20]), nonce,
      new Uint8Array([0x6b]), te.encode("pubkey-hash"), new Uint8Array([0x58, 0x24, 0x82, 0x01, 0x58, 0x20]), spkiHash);
  }
  function u32(n) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; }
  function field(u8) { return concat(u32(u8.length), u8); }
  function requestMessage(session, op, name, payloadHash, policyHash, unixMs, nonce) {
    const t = new Uint8Array(8); new DataView(t.buffer).setBigUint64(0, BigInt(unixMs));
    return concat(te.encode("cloister/v1/session-request\0"), field(te.encode(session)), field(te.encode(op)), field(te.encode(name)),
      payloadHash, policyHash, t, field(nonce));
  }
  // An ASN.1 ECDSA signature as WebCrypto's r ‖ s.
  function derToRaw(der) {
    let i = 0;
    const need = (c) => { if (!c) throw new Error("ECDSA signature is not DER"); };
    need(der[i++] === 0x30);
    if (der[i] & 0x80) i += 1 + (der[i] & 0x7f); else i++;
    const int = () => {
      need(der[i++] === 0x02);
      const n = der[i++];
      let v = der.slice(i, i + n); i += n;
      while (v.length > 32 && v[0] === 0) v = v.slice(1);
      need(v.length <= 32);
      return concat(new Uint8Array(32 - v.length), v);
    };
    return concat(int(), int());
  }
  async function ecdsaP256Verify(spki, msg, der) {
    try {
      const key = await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
      return await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, derToRaw(der), msg);
    } catch (e) { return false; }
  }

  // verifyReceipt runs every check a browser can run on receipt r against
  // trust (a ledger state file's object), and returns them as
  // [{id, name, ok (true, false, or null: not checked here), detail}].
  // consistency(from, to) fetches a consistency proof (base64 hashes).
  async function verifyReceipt(r, trust, consistency) {
    const checks = [];
    const add = (id, name, ok, detail) => { checks.push({ id, name, ok, detail }); return ok; };
    const fail = (id, name, e) => add(id, name, false, e instanceof Error ? e.message : String(e));
    try {
      // The trust root: the viewer's pinned set, never the receipt's.
      const pinned = trust && trust.validator_set;
      if (!pinned || !Array.isArray(pinned.validators)) return fail("trust-root", "trust root", "no trust root: paste your ledger state file"), checks;
      if (!sameSet(pinned, r.ledger.validator_set)) return fail("trust-root", "trust root", "the receipt's validator set differs from your pinned one: another ledger, or a forged receipt"), checks;
      add("trust-root", "trust root", true, `the receipt's validator set is your pinned set of ${pinned.origin} (${pinned.validators.length} validators)`);
      let cp;
      try { cp = await openCheckpoint(r.ledger.checkpoint, pinned); } catch (e) { return fail("checkpoint", "checkpoint", e), checks; }
      add("checkpoint", "checkpoint", true, `size ${cp.size}, signed by ${cp.signers.join(", ")} (power ${cp.signed} of ${cp.total}, more than 2/3 needed)`);
      if (trust.checkpoint) {
        let mine;
        try { mine = await openCheckpoint(trust.checkpoint, pinned); } catch (e) { return fail("consistency", "consistency with your checkpoint", e), checks; }
        const [older, newer] = mine.size <= cp.size ? [mine, cp] : [cp, mine];
        let hashes = [];
        if (older.size !== newer.size && older.size > 0) {
          const c = r.ledger.consistency;
          hashes = c && c.trusted === mine.size ? c.hashes : await consistency(older.size, newer.size);
        }
        const ok = await checkConsistency(older.size, newer.size, older.root, newer.root, hashes.map(b64d));
        if (!ok) return fail("consistency", "consistency with your checkpoint", `the log of size ${newer.size} does not extend the log of size ${older.size} you trusted: a fork or a rewrite`), checks;
        add("consistency", "consistency with your checkpoint", true, `the log of size ${newer.size} extends the log of size ${older.size}`);
      }
      // Every entry: canonical, signed, included.
      const entries = [];
      for (const e of r.ledger.entries) {
        let d;
        try { d = await decodeEntry(e.tx); } catch (err) { return fail("entries", "ledger entries", `entry ${e.index}: ${err.message}`), checks; }
        if (!d.sigValid) return fail("entries", "ledger entries", `entry ${e.index} (${d.entry.kind}): the submitter's signature does not verify`), checks;
        if (!(await checkInclusion(e.index, cp.size, d.leaf, e.proof.map(b64d), cp.root))) return fail("entries", "ledger entries", `entry ${e.index}: the inclusion proof does not verify against the checkpoint root: the entry is not in the log the validators signed`), checks;
        entries.push({ index: e.index, ...d.entry });
      }
      add("entries", "ledger entries", true, `${entries.length} entries: each canonical, signed by its submitter, included in the checkpoint`);
      // The node: registered, and the signer of every session entry.
      const pk = r.node.platform_key;
      const reg = entries.find((e) => e.kind === "node.registered");
      const created = entries.find((e) => e.kind === "session.event" && e.body.event === "session.created");
      const result = entries.find((e) => e.kind === "result.committed");
      for (const e of entries) {
        if (e.submitter !== pk) return fail("node", "node", `entry ${e.index} is signed by ${e.submitter}, not the node's platform key`), checks;
        if (e.kind === "node.registered") continue;
        if (e.body.session !== r.session || e.body.policy_hash !== r.policy_hash) return fail("node", "node", `entry ${e.index} is about another session or policy`), checks;
      }
      if (!reg || reg.body.platform_key !== pk || reg.body.class !== r.node.isolate_class) return fail("node", "node", "the node's registration is missing or names another key or class"), checks;
      if (!created || created.body.platform_key !== pk || created.body.isolate_class !== r.node.isolate_class) return fail("node", "node", "no session.created entry of this node"), checks;
      add("node", "node", true, `registered at #${reg.index} as class ${r.node.isolate_class}; every session entry is signed by ${pk}`);
      // The policy: its canonical text hashes to the hash the entries name.
      const policyHash = await sha256(te.encode(r.policy));
      if (hexe(policyHash) !== r.policy_hash) return fail("policy", "policy", "the policy text does not hash to the policy hash the entries name"), checks;
      const pol = JSON.parse(r.policy);
      add("policy", "policy", true, `"${pol.name}": its text hashes to ${r.policy_hash}`);
      // The evidence: the one session.created committed to; for the
      // software class, signed by a platform key the policy pins and
      // binding the session key, the policy hash and the HPKE key.
      const ev = b64d(r.evidence.data);
      if (hexe(await sha256(ev)) !== created.body.evidence_sha256) return fail("evidence", "evidence", "the evidence is not the evidence session.created committed to"), checks;
      let spki = null;
      if (result) spki = b64d(result.body.session_key);
      if (r.evidence.class === "software" && r.node.isolate_class === "software") {
        const env = JSON.parse(new TextDecoder().decode(ev));
        const st = b64d(env.statement), stmt = JSON.parse(new TextDecoder().decode(st));
        const iso = (pol.isolates || []).find((i) => i.class === "software");
        if (!iso || !(iso.platform_keys || []).includes(stmt.platform_key)) return fail("evidence", "evidence", `the evidence is signed by ${stmt.platform_key}, which the policy does not pin`), checks;
        if (env.format !== "cloister-software-evidence/v1" || !(await ed25519Verify(parseKey(stmt.platform_key), concat(te.encode("cloister attest software statement v1\0"), st), b64d(env.signature))))
          return fail("evidence", "evidence", "the evidence's signature does not verify under the pinned platform key"), checks;
        let bound = "";
        if (spki) {
          const hpke = await sha256(b64d(r.hpke_public_key));
          const nonce = await sha256(concat(te.encode("cloister/v1/session-ratls\0"), policyHash, hpke));
          const want = await sha256(claimsBuffer(nonce, await sha256(spki)));
          if (!equal(hexd(stmt.report_data).slice(0, 32), want)) return fail("evidence", "evidence", "the evidence does not bind the session key, the policy hash and the HPKE key"), checks;
          bound = "; its report data binds the session key that signed the result, the policy hash and the HPKE key";
        }
        add("evidence", "evidence", true, `software evidence committed to by session.created, signed by the pinned platform key ${stmt.platform_key}${bound}. The software class has no hardware protection: the node's operator can read and alter the isolate`);
      } else {
        add("evidence", "evidence", null, `${r.evidence.class} evidence is committed to by session.created (checked here), but its verification (quotes, certificate chains) is not done in the browser: the node's check is below, and cloister receipt verify does it on your machine`);
      }
      // Uploads: each signed by the principal the policy lists.
      const ups = entries.filter((e) => e.kind === "session.event" && (e.body.event === "session.program_uploaded" || e.body.event === "session.input_uploaded"));
      for (const e of ups) {
        const b = e.body, p = (pol.principals || []).find((x) => x.id === b.principal);
        if (!p) return fail("uploads", "uploads", `entry ${e.index}: "${b.principal}" is not a principal of the policy`), checks;
        const op = b.event === "session.program_uploaded" ? "upload-program" : "upload-input";
        const msg = requestMessage(r.session, op, b.name, hexd(b.envelope_sha256), policyHash, b.unix_ms, b64d(b.nonce));
        if (!(await ed25519Verify(parseKey(p.signing_key), msg, b64d(b.signature)))) return fail("uploads", "uploads", `entry ${e.index}: the upload of ${b.name} is not signed by ${b.principal}'s key`), checks;
      }
      add("uploads", "uploads", true, `${ups.length} uploads, each signed by the principal the policy lists for it`);
      // The result commitment: signed by the attested session key.
      if (result) {
        const msg = concat(te.encode("cloister/result-commitment/v1\n"), te.encode(jcs({ outputs: result.body.outputs, policy_hash: result.body.policy_hash, session: result.body.session })));
        if (!(await ecdsaP256Verify(spki, msg, b64d(result.body.signature)))) return fail("result", "result commitment", "the result commitment's signature does not verify under the session key"), checks;
        const outs = Object.entries(result.body.outputs).flatMap(([o, rs]) => Object.entries(rs).map(([who, h]) => `${o} for ${who}: ${h}`));
        add("result", "result commitment", true, `entry ${result.index} signed by the session key (SHA-256 ${hexe(await sha256(spki))}): ${outs.join("; ")}`);
      }
    } catch (e) {
      fail("receipt", "receipt", e);
    }
    return checks;
  }

  global.CloisterVerify = { b64d, b64e, hexd, hexe, sha256, ed25519Verify, jcs, leafHash, checkInclusion, checkConsistency, decodeEntry, openCheckpoint, verifyReceipt };
})(window);
