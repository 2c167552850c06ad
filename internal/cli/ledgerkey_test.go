package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
)

// TestLedgerKeyCommands: 'ledger key rotate' hands a principal to a new
// key, the old key is then refused, 'ledger key show' follows the chain
// from either key.
func TestLedgerKeyCommands(t *testing.T) {
	url := ledgerTestnet(t, "cli-keys")
	dir := t.TempDir()
	var files [2]string
	var pubs [2]string
	for i := range files {
		k, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		files[i] = filepath.Join(dir, []string{"old.key", "new.key"}[i])
		if err := k.Save(files[i]); err != nil {
			t.Fatal(err)
		}
		pubs[i] = protocol.FormatEd25519Key(k.Public().Signing)
	}
	if code, _, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", files[0], "--body", `{"text":"before"}`); code != 0 {
		t.Fatalf("append: exit %d: %s", code, errOut)
	}
	code, out, errOut := runCLI(t, "ledger", "key", "rotate", "--ledger", url, "--key", files[0], "--new-key", files[1])
	if code != 0 || out != "1\n" {
		t.Fatalf("rotate: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "ledger", "append", "--ledger", url, "--key", files[0], "--body", `{"text":"after"}`)
	if code != 1 || !strings.Contains(errOut, "rotated to "+pubs[1]) {
		t.Fatalf("the old key after rotation: exit %d: %s", code, errOut)
	}
	if code, _, errOut = runCLI(t, "ledger", "key", "rotate", "--ledger", url, "--key", files[1]); code != 2 {
		t.Fatalf("rotate without --new-key: exit %d: %s", code, errOut)
	}
	state := filepath.Join(dir, "st.json")
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range pubs {
		for {
			code, out, errOut = runCLI(t, "ledger", "key", "show", "--ledger", url, "--state", state, k, "--json")
			if code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond) // until a checkpoint covers the rotation
		}
		var kc keyChainJSON
		if code != 0 || json.Unmarshal([]byte(out), &kc) != nil {
			t.Fatalf("show %s: exit %d, %s %s", k, code, out, errOut)
		}
		if kc.Principal != pubs[0] || kc.Current != pubs[1] || len(kc.Rotations) != 1 || kc.Rotations[0].Index != 1 {
			t.Fatalf("show %s: %+v", k, kc)
		}
	}
}
