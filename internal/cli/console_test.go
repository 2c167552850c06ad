package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloisterhq/cloister/internal/browsertest"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/receipt"
)

// checkConsole checks the console of the node the demo left running: the
// HTTP guard (headers, host names, CSRF), the receipt commands, and every
// page in a real browser (content, live progress, a receipt verified in
// the page and a tampered one failing, no resource from elsewhere, axe,
// 375 px, no CSS), with one Chromium for all.
func checkConsole(ctx context.Context, t *testing.T, info demoConsoleInfo) {
	hostile := appendHostileNote(ctx, t, info)
	artifact := appendArtifact(ctx, t, info)
	checkConsoleHTTP(t, info)
	checkHostileRequests(t, info)
	checkReceiptCommands(t, info)
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CLOISTER_REQUIRE_BROWSER") != "" {
			t.Fatalf("chromium not found (scripts/test installs Debian's chromium): %v", err)
		}
		t.Log("chromium not found: the console's browser checks are skipped (scripts/test installs it)")
		return
	}
	checkConsoleBrowser(ctx, t, chrome, info, hostile, artifact)
}

// appendArtifact registers a sealed artifact on the demo's ledger, grants
// its key to a class of isolates for an hour and revokes the grant, each
// entry by its owner, for the key-release pages to show; it returns the
// artifact's digest. (No broker holds this key: the market demo's test
// checks a real release on its console.)
func appendArtifact(ctx context.Context, t *testing.T, info demoConsoleInfo) string {
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	broker, _, _ := ed25519.GenerateKey(rand.Reader)
	hex := func() string {
		b := make([]byte, 32)
		rand.Read(b)
		return fmt.Sprintf("%x", b)
	}
	digest := "sha256:" + hex()
	appendEntry := func(kind verify.Kind, body any) uint64 {
		t.Helper()
		se, err := verify.NewEntry(owner, kind, body)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := info.Ledger.Append(ctx, se)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return rc.Index
	}
	appendEntry(acl.KindArtifactRegistered, acl.Artifact{Digest: digest, PlaintextSHA256: hex(),
		Brokers: []string{protocol.FormatEd25519Key(broker)}, Threshold: 1, Commitment: []string{hex()}})
	ownerKey := protocol.FormatEd25519Key(owner.Public().(ed25519.PublicKey))
	g := appendEntry(acl.KindGranted, acl.Grant{Artifact: digest, Owner: ownerKey, Grantee: acl.Grantee{Class: "software", Measurements: []string{hex()}},
		NotAfter: acl.FormatTime(time.Now().Add(time.Hour)), MaxUses: 3})
	appendEntry(acl.KindRevoked, acl.Revocation{Grant: &g})
	return digest
}

// hostileText is markup a ledger note may carry: anyone may write a note,
// and the console must show it as text.
const hostileText = `</code></pre><script>window.__xss=1</script><img src=x id=xss onerror=window.__xss=2>`

// appendHostileNote writes a note whose body (keys and values) is markup
// to the demo's ledger and returns its index.
func appendHostileNote(ctx context.Context, t *testing.T, info demoConsoleInfo) uint64 {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	se, err := verify.NewEntry(priv, ledger.KindNote, map[string]any{"text": hostileText, hostileText: []any{hostileText}})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := info.Ledger.Append(ctx, se)
	if err != nil {
		t.Fatal(err)
	}
	return rc.Index
}

// checkHostileRequests: requests a hostile client sends are refused with
// a clear error, and nothing they carry comes back as markup.
func checkHostileRequests(t *testing.T, info demoConsoleInfo) {
	for _, tc := range []struct {
		path   string
		hdr    map[string]string
		status int
		want   string
	}{
		{"/ui/ledger?q=" + url.QueryEscape(hostileText), nil, 400, "search by an entry index"},
		{"/ui/ledger?q=" + strings.Repeat("a", 300), nil, 400, "too long"},
		{"/ui/ledger?before=" + url.QueryEscape(hostileText), nil, 400, "want an entry index"},
		{"/ui/ledger/entry/" + url.PathEscape(hostileText), nil, 400, "want a number"},
		{"/ui/ledger/entry/99999999", nil, 404, "entry 99999999"},
		{"/ui/sessions/" + url.PathEscape(hostileText), nil, 400, ""},
		{"/ui/sessions/00000000000000000000000000000000", nil, 404, ""},
		{"/ui/api/ledger/consistency?from=5&to=1", nil, 400, "from ≤ to"},
		{"/ui/api/sessions/00000000000000000000000000000000/receipt.json?trusted=" + url.QueryEscape(hostileText), nil, 400, "trusted"},
		{"/ui/static/" + url.PathEscape("../server.go"), nil, 404, ""},
		{"/ui/", map[string]string{"X-Big": strings.Repeat("a", 2<<20)}, 431, ""},
	} {
		resp, body := get(t, info.URL+tc.path, tc.hdr)
		if resp.StatusCode != tc.status || !strings.Contains(html.UnescapeString(body), tc.want) {
			t.Fatalf("%.80s: %d, want %d with %q:\n%.400s", tc.path, resp.StatusCode, tc.status, tc.want, body)
		}
		if strings.Contains(body, "<script>window") || strings.Contains(body, "<img src=x") {
			t.Fatalf("%.80s: the answer carries the request's markup:\n%s", tc.path, body)
		}
	}
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func checkConsoleHTTP(t *testing.T, info demoConsoleInfo) {
	resp, body := get(t, info.URL+"/ui/", nil)
	if resp.StatusCode != 200 || !strings.Contains(html.UnescapeString(body), info.PlatformKey) || !strings.Contains(body, "no: the operator holds the platform key") {
		t.Fatalf("overview: %d\n%s", resp.StatusCode, body)
	}
	for h, want := range map[string]string{"Content-Security-Policy": "script-src 'self'", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if !strings.Contains(resp.Header.Get(h), want) {
			t.Fatalf("%s: %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
		t.Fatal("overview has inline script or style")
	}
	// DNS rebinding: a page asked for under another name is refused.
	if resp, _ := get(t, info.URL+"/ui/", map[string]string{"Host": "attacker.example"}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("foreign Host: %d", resp.StatusCode)
	}
	// Nothing changes state without the CSRF guard; no action exists.
	for _, tc := range []struct {
		hdr  map[string]string
		want int
	}{
		{map[string]string{"Origin": "http://attacker.example"}, 404}, // no such action: 404 before any guard
	} {
		req, _ := http.NewRequest("POST", info.URL+"/ui/api/sessions", strings.NewReader("x=1"))
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != tc.want {
			t.Fatalf("POST: %d, want %d", r.StatusCode, tc.want)
		}
	}
	// JSON behind every page.
	for _, p := range []string{"/ui/api/overview", "/ui/api/ledger", "/ui/api/sessions", "/ui/api/sessions/" + info.Session,
		"/ui/api/sessions/" + info.Session + "/receipt", "/ui/api/ledger/entry/0", "/ui/api/ledger?q=" + info.Session, "/ui/api/market", "/ui/api/keys", "/ui/api/models", "/ui/api/piee"} {
		resp, body := get(t, info.URL+p, nil)
		var v map[string]any
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("%s: %d %s\n%s", p, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	// The session's 7 entries (the close's is recorded in the background,
	// and the explorer follows the ledger: poll, bounded).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, body = get(t, info.URL+"/ui/api/ledger?q="+info.Session, nil)
		var ld struct {
			Entries []struct {
				Kind, Event string
			}
		}
		json.Unmarshal([]byte(body), &ld)
		if len(ld.Entries) == 7 && ld.Entries[0].Event == "session.closed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("search by session found %d entries, want the 7 of the demo's session:\n%s", len(ld.Entries), body)
		}
	}
}

// checkReceiptCommands fetches the receipt with 'receipt get' and checks
// 'receipt verify' accepts it against dave's ledger state and refuses it
// tampered, with exit 1 and the reason on stderr.
func checkReceiptCommands(t *testing.T, info demoConsoleInfo) {
	dir := t.TempDir()
	out := filepath.Join(dir, "receipt.json")
	runCLI := func(args ...string) (int, string, string) {
		var o, e strings.Builder
		cmd := newRoot()
		cmd.SetOut(&o)
		cmd.SetErr(&e)
		return run(cmd, args), o.String(), e.String()
	}
	if code, o, e := runCLI("receipt", "get", "--node", info.URL, "--session", info.Session, "--out", out, "--ledger-state", info.LedgerState); code != 0 {
		t.Fatalf("receipt get: %d\n%s%s", code, o, e)
	}
	if code, o, e := runCLI("receipt", "verify", out, "--ledger-state", info.LedgerState); code != 0 || !strings.Contains(o, "valid: session "+info.Session+", against your pinned trust root") {
		t.Fatalf("receipt verify: %d\n%s%s", code, o, e)
	}
	b, _ := os.ReadFile(out)
	r, err := receipt.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ledger.Consistency == nil {
		t.Fatal("receipt get --ledger-state: no consistency proof in the receipt")
	}
	bad := filepath.Join(dir, "tampered.json")
	os.WriteFile(bad, []byte(strings.Replace(string(b), "result.json", "result.jsoN", 1)), 0o644)
	if code, _, e := runCLI("receipt", "verify", bad, "--ledger-state", info.LedgerState); code != 1 || !strings.Contains(e, "receipt invalid") {
		t.Fatalf("tampered receipt: exit %d\n%s", code, e)
	}
	if code, _, _ := runCLI("receipt", "verify", filepath.Join(dir, "none.json")); code != 2 {
		t.Fatalf("missing file: exit %d, want 2", code)
	}
}

func checkConsoleBrowser(ctx context.Context, t *testing.T, chrome string, info demoConsoleInfo, hostile uint64, artifact string) {
	bctx, requested := browsertest.Start(ctx, t, chrome)
	axe, err := os.ReadFile(filepath.Join("..", "..", "console", "testdata", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	// eval evaluates a JavaScript expression (awaiting a promise) in the
	// page and decodes its value into out.
	eval := func(expr string, out any) {
		t.Helper()
		js, err := chromedp.Run(bctx, chromedp.Evaluate[string]("(async () => JSON.stringify(await ("+expr+")))()", chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("evaluate %.80s: %v", expr, err)
		}
		if err := json.Unmarshal([]byte(js), out); err != nil {
			t.Fatalf("evaluate %.80s: %v", expr, err)
		}
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatal(err)
		}
	}
	open := func(width int64, path string) {
		t.Helper()
		do(chromedp.EmulateViewport(width, 900), chromedp.Navigate(info.URL+path), chromedp.WaitReady(chromedp.CSS("footer")))
	}
	shots := os.Getenv("CLOISTER_CONSOLE_SCREENSHOTS") // a directory: write the docs' screenshots there
	s := info.Session
	pages := []struct {
		path, shot string
		want       []string
	}{
		{"/ui/", "overview", []string{"This node", "software", "Protects against this node's operator", "Refusals by rule", "Worker pool", "Validators"}},
		{"/ui/ledger", "ledger", []string{"node.registered", "result.committed", "session.event"}},
		{"/ui/ledger?q=" + s, "", []string{"Entries matching session id", "session.closed"}},
		{"/ui/ledger/entry/5", "entry", []string{"result.committed", "Inclusion proof", "Cosigned by", "valid (checked by the node)"}},
		{"/ui/sessions", "", []string{s, "closed"}},
		{"/ui/sessions/" + s, "session", []string{"demo-psi-sum", "session.program_uploaded", "alice", "program-provider", "dave", "result-reader", "closed"}},
		{"/ui/sessions/" + s + "/receipt", "", []string{"Checked by the node", "proves nothing", "result commitment", "Download the receipt"}},
		{"/ui/market", "", []string{"Live offers", "No live offer.", "Providers' records", "Dispatch history"}},
		{"/ui/keys", "", []string{"Registered artifacts", artifact[:16]}},
		{"/ui/keys/" + artifact, "", []string{"Registered", "1 broker, 1 of them needed", "class software", "No key was released."}},
		{"/ui/models", "", []string{"Models", "No model is published.", "Calls and publications"}},
		{"/ui/piee", "", []string{"Proof of isolated execution", "No node has been challenged yet.", "No verdict yet.", "Challenge operators"}},
	}
	for _, p := range pages {
		open(1000, p.path)
		text, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
		if err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		for _, w := range p.want {
			if !strings.Contains(text, w) {
				t.Fatalf("%s lacks %q:\n%s", p.path, w, text)
			}
		}
		if shots != "" && p.shot != "" {
			png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(shots, "console-"+p.shot+".png"), png, 0o644)
		}
		// axe-core in the page: no serious or critical finding.
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](string(axe)+";null")); err != nil {
			t.Fatalf("axe-core: %v", err)
		}
		var found []string
		eval(`axe.run(document,{resultTypes:["violations"]}).then(r=>r.violations.filter(v=>v.impact==="serious"||v.impact==="critical").map(v=>v.id+": "+v.help+" ("+v.nodes.map(n=>n.target.join(" ")).join(", ")+")"))`, &found)
		if len(found) > 0 {
			t.Fatalf("%s: axe-core finds %d serious problems:\n%s", p.path, len(found), strings.Join(found, "\n"))
		}
		// 375 px wide: no horizontal scroll.
		var wide []int
		open(375, p.path)
		eval(`[document.documentElement.scrollWidth, window.innerWidth]`, &wide)
		if len(wide) != 2 || wide[0] > wide[1] {
			t.Fatalf("%s at 375 px: page is %v wide", p.path, wide)
		}
		// Without CSS: the content is all there, headings first.
		var plain string
		eval(`(document.querySelectorAll('link[rel="stylesheet"]').forEach(l=>l.remove()), document.styleSheets.length + "|" + document.querySelector("main").innerText)`, &plain)
		if !strings.HasPrefix(plain, "0|") || !strings.Contains(plain, p.want[0]) {
			t.Fatalf("%s without CSS: %.300q", p.path, plain)
		}
	}

	// A hostile note: its markup is text on the entry page and in the
	// explorer, and nothing of it runs.
	open(1000, fmt.Sprintf("/ui/ledger/entry/%d", hostile))
	var shown struct {
		Text string
		Imgs int
		XSS  any
	}
	eval(`({Text: document.querySelector("main").innerText, Imgs: document.querySelectorAll("main img, main script, #xss").length, XSS: window.__xss || null})`, &shown)
	if shown.Imgs != 0 || shown.XSS != nil || strings.Count(shown.Text, hostileText) < 2 {
		t.Fatalf("the hostile note's markup is not shown as text: %d elements, __xss %v\n%s", shown.Imgs, shown.XSS, shown.Text)
	}
	open(1000, "/ui/ledger?kind=note")
	eval(`({Text: document.querySelector("main").innerText, Imgs: document.querySelectorAll("main img, main script, #xss").length, XSS: window.__xss || null})`, &shown)
	if shown.Imgs != 0 || shown.XSS != nil || !strings.Contains(shown.Text, "note") {
		t.Fatalf("the explorer with a hostile note: %d elements, __xss %v\n%s", shown.Imgs, shown.XSS, shown.Text)
	}

	// The receipt, verified in the page against dave's ledger state.
	trust, err := os.ReadFile(info.LedgerState)
	if err != nil {
		t.Fatal(err)
	}
	verifyInPage := func(file string) (string, string) {
		t.Helper()
		acts := []chromedp.Action[chromedp.Void]{chromedp.EmulateViewport(1000, 900), chromedp.Navigate(info.URL + "/ui/sessions/" + s + "/receipt"),
			chromedp.WaitVisible(chromedp.CSS("#trust-form")), chromedp.SetValue(chromedp.CSS("#trust-root"), string(trust))}
		if file != "" {
			acts = append(acts, chromedp.SetUploadFiles(chromedp.CSS("#receipt-file"), []string{file}))
		}
		do(append(acts, chromedp.Click(chromedp.CSS("#verify-run")))...)
		var result, table string
		deadline := time.Now().Add(30 * time.Second)
		for result == "" || result == "running" {
			if time.Now().After(deadline) {
				t.Fatal("the page did not finish verifying")
			}
			time.Sleep(100 * time.Millisecond)
			eval(`document.getElementById("verify-status").dataset.result || ""`, &result)
		}
		eval(`document.getElementById("verify-status").innerText + "\n" + document.getElementById("browser-checks").innerText`, &table)
		return result, table
	}
	result, table := verifyInPage("")
	if result != "valid" {
		t.Fatalf("the receipt does not verify in the browser:\n%s", table)
	}
	for _, w := range []string{"trust root\tpassed", "checkpoint\tpassed", "ledger entries\tpassed", "node\tpassed", "policy\tpassed", "evidence\tpassed", "uploads\tpassed", "result commitment\tpassed", "binds the session key"} {
		if !strings.Contains(table, w) {
			t.Fatalf("browser checks lack %q:\n%s", w, table)
		}
	}
	if shots != "" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(shots, "console-receipt.png"), png, 0o644)
	}
	// Tampered receipts fail in the browser, each for its own reason.
	_, rb := get(t, info.URL+"/ui/api/sessions/"+s+"/receipt.json", nil)
	dir := t.TempDir()
	for name, tamper := range map[string]struct{ from, to, why string }{
		"output hash": {`\"result.json\":{\"dave\":\"`, `\"result.json\":{\"dave\":\"0`, "ledger entries"},
		"policy":      {`256MiB`, `512MiB`, "the policy text does not hash"},
		"evidence":    {`"data": "`, `"data": "AA`, "evidence"},
	} {
		if !strings.Contains(rb, tamper.from) {
			t.Fatalf("receipt lacks %q", tamper.from)
		}
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		os.WriteFile(f, []byte(strings.Replace(rb, tamper.from, tamper.to, 1)), 0o644)
		result, table := verifyInPage(f)
		if result != "invalid" || !strings.Contains(table, tamper.why) {
			t.Fatalf("tampered %s: %s\n%s", name, result, table)
		}
	}
	// The browser's verifier against the ledger verifier's known answers.
	checkVerifierVectors(t, eval)
	// Live progress: a new session's page shows an upload without reload.
	checkLiveSession(ctx, t, func(p string) { open(1000, p) }, eval, info)

	urls := requested()
	for _, u := range urls {
		if !strings.HasPrefix(u, info.URL+"/") {
			t.Fatalf("a page loaded %q, not from the node's console", u)
		}
	}
	t.Logf("browser: %d requests, all to %s", len(urls), info.URL)
}

// checkVerifierVectors runs verify.js on ledger/verify/testdata and on
// RFC 6962 proofs made by x/mod's tlog (which ledger/verify checks with).
func checkVerifierVectors(t *testing.T, eval func(string, any)) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "ledger", "verify", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	type proofCase struct {
		Index, Size  int64
		Leaf, Root   string
		Proof        []string
		Old, OldRoot string
		OldSize      int64
		Consistency  []string
		// What the ledger's verifier (tlog) answers for the same proof
		// at size+1, and for the consistency proof from the leaf's hash
		// taken as the old root: the page must answer the same.
		WrongSizeOK, WrongRootOK bool
	}
	var leaves [][]byte
	var hashes []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, j := range idx {
			out[i] = hashes[j]
		}
		return out, nil
	})
	var cases []proofCase
	b64 := func(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }
	for n := int64(0); n < 33; n++ {
		leaves = append(leaves, []byte(fmt.Sprintf("leaf %d", n)))
		hs, err := tlog.StoredHashes(n, leaves[n], hr)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
		size := n + 1
		root, _ := tlog.TreeHash(size, hr)
		for _, i := range []int64{0, n / 2, n} {
			p, err := tlog.ProveRecord(size, i, hr)
			if err != nil {
				t.Fatal(err)
			}
			c := proofCase{Index: i, Size: size, Leaf: b64(tlog.RecordHash(leaves[i])), Root: b64(root)}
			for _, h := range p {
				c.Proof = append(c.Proof, b64(h))
			}
			c.OldSize = 1 + i
			old, _ := tlog.TreeHash(c.OldSize, hr)
			c.OldRoot = b64(old)
			tp, err := tlog.ProveTree(size, c.OldSize, hr)
			if err != nil {
				t.Fatal(err)
			}
			c.Consistency = []string{}
			for _, h := range tp {
				c.Consistency = append(c.Consistency, b64(h))
			}
			c.WrongSizeOK = tlog.CheckRecord(p, size+1, root, i, tlog.RecordHash(leaves[i])) == nil
			c.WrongRootOK = tlog.CheckTree(tp, size, root, c.OldSize, tlog.RecordHash(leaves[i])) == nil
			cases = append(cases, c)
		}
	}
	cj, _ := json.Marshal(cases)
	var failures []string
	eval(`(async (entries, sigs, cpv, proofs) => {
  const V = CloisterVerify, bad = [];
  for (const e of entries.entries) {
    try {
      const d = await V.decodeEntry(e.tx);
      if (!e.valid) bad.push("accepted invalid entry: " + e.name);
      else if (V.hexe(d.leaf) !== e.leaf_hash || d.sigValid !== e.signature_valid) bad.push("entry " + e.name);
    } catch (err) { if (e.valid) bad.push("refused valid entry " + e.name + ": " + err.message); }
  }
  for (const s of sigs.signatures) {
    const ok = await V.ed25519Verify(V.hexd(s.public_key), V.hexd(s.message), V.hexd(s.signature));
    if (ok !== s.valid) bad.push("signature vector " + s.name + ": " + ok);
  }
  const set = {origin: "cloister.ledger/" + cpv.chain_id, validators: cpv.validators};
  const cp = await V.openCheckpoint(cpv.note, set);
  if (cp.size !== cpv.size || V.b64e(cp.root) !== cpv.root || cp.signers.length !== 3) bad.push("checkpoint vector");
  const lines = cpv.note.split("\n");
  try { await V.openCheckpoint(lines.slice(0, 4).concat(lines.slice(5)).join("\n"), set); bad.push("two of three signatures accepted"); } catch (e) {}
  // Each signature in turn made bad (a bit flipped past its key hash): with
  // one of three equal validators' signatures bad, 2/3 is not more than 2/3.
  const sigLines = lines.map((l, i) => [l, i]).filter(([l]) => l.startsWith("— "));
  for (const [l, i] of sigLines) {
    const sp = l.lastIndexOf(" "), raw = V.b64d(l.slice(sp + 1));
    raw[10] ^= 1;
    const forged = lines.slice(); forged[i] = l.slice(0, sp + 1) + V.b64e(raw);
    try { await V.openCheckpoint(forged.join("\n"), set); bad.push("a bad signature accepted: " + l.slice(0, sp)); } catch (e) {}
  }
  if (sigLines.length !== 3) bad.push("the checkpoint vector has " + sigLines.length + " signatures, want 3");
  for (const c of proofs) {
    const p = c.Proof ? c.Proof.map(V.b64d) : [];
    if (!(await V.checkInclusion(c.Index, c.Size, V.b64d(c.Leaf), p, V.b64d(c.Root)))) bad.push("inclusion " + c.Index + "/" + c.Size);
    const leaf = V.b64d(c.Leaf); leaf[0] ^= 1;
    if (await V.checkInclusion(c.Index, c.Size, leaf, p, V.b64d(c.Root))) bad.push("inclusion of a wrong leaf " + c.Index + "/" + c.Size);
    if ((await V.checkInclusion(c.Index, c.Size + 1, V.b64d(c.Leaf), p, V.b64d(c.Root))) !== c.WrongSizeOK) bad.push("inclusion at size+1 disagrees with tlog " + c.Index + "/" + c.Size);
    const cons = c.Consistency.map(V.b64d);
    if (!(await V.checkConsistency(c.OldSize, c.Size, V.b64d(c.OldRoot), V.b64d(c.Root), cons))) bad.push("consistency " + c.OldSize + "->" + c.Size);
    if ((await V.checkConsistency(c.OldSize, c.Size, V.b64d(c.Leaf), V.b64d(c.Root), cons)) !== c.WrongRootOK) bad.push("consistency from the leaf hash as old root disagrees with tlog " + c.OldSize + "->" + c.Size);
  }
  return bad;
})(`+read("entries.json")+`,`+read("signatures.json")+`,`+read("checkpoint.json")+`,`+string(cj)+`)`, &failures)
	if len(failures) > 0 {
		t.Fatalf("verify.js disagrees with the ledger verifier's vectors:\n%s", strings.Join(failures, "\n"))
	}
}

// checkLiveSession opens a new session's page and uploads its program:
// the page shows the step without being reloaded.
func checkLiveSession(ctx context.Context, t *testing.T, open func(string), eval func(string, any), info demoConsoleInfo) {
	ex, err := examples.Lookup("psi-sum")
	if err != nil {
		t.Fatal(err)
	}
	parties := map[string]*demoParty{}
	for _, id := range []string{"alice", "bob", "carol", "dave"} {
		k, _ := keys.Generate()
		parties[id] = &demoParty{id: id, key: k}
	}
	doc, err := demoPolicy(parties, ex.Wasm, info.PlatformKey)
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := policy.Parse(doc)
	pk, _ := keys.ParseSigningKey(info.PlatformKey)
	c, err := client.Dial(ctx, info.NodeURL, client.WithPlatformKeys(pk))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	as, err := c.Attest(ctx, id, pol)
	if err != nil {
		t.Fatal(err)
	}
	defer as.CloseIdleConnections()
	open("/ui/sessions/" + id)
	var marker bool
	eval(`window.__notReloaded = true`, &marker)
	if _, err := as.UploadProgram(ctx, parties["alice"].key, "psi-sum.wasm", ex.Wasm); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var text string
		var same bool
		eval(`document.getElementById("live").innerText`, &text)
		eval(`window.__notReloaded === true`, &same)
		if !same {
			t.Fatal("the session page reloaded instead of updating in place")
		}
		if strings.Contains(text, "session.program_uploaded") && strings.Contains(text, "alice") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session page did not show the upload:\n%s", text)
		}
		time.Sleep(200 * time.Millisecond)
	}
	as.Close(ctx, parties["dave"].key)
}
