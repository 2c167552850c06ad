package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/internal/testnet"
)

// TestTestnetDetachStatusDown: 'testnet --detach --json' returns once the
// network runs and prints what it started; a second start in the same
// directory is refused; 'status' lists the running components; 'down
// --purge' stops every process and removes the directory.
func TestTestnetDetachStatusDown(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	code, out, errOut := runCLIProcess(t, "testnet", "--dir", dir, "--detach", "--json", "--nodes", "1", "--classes", "software",
		"--brokers", "0", "--no-blob-store", "--offer-ttl", "5s")
	if code != 0 {
		t.Fatalf("testnet --detach: exit %d\n%s", code, errOut)
	}
	var info testnet.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("testnet --json: %v\n%s", err, out)
	}
	if len(info.Validators) != 1 || len(info.Nodes) != 1 || info.Nodes[0].Class != "software" || len(info.Brokers) != 0 || info.BlobStore != nil ||
		len(info.Dispatchers) != 1 {
		t.Fatalf("info: %+v", info)
	}
	pids := []int{info.Supervisor, info.Validators[0].PID, info.Nodes[0].PID, info.Dispatchers[0].PID}
	if _, err := os.Stat(filepath.Join(dir, testnet.InfoFile)); err != nil {
		t.Error(err)
	}
	if code, _, errOut := runCLIProcess(t, "testnet", "--dir", dir); code != 1 || !strings.Contains(errOut, "a test network runs from") {
		t.Errorf("second start: exit %d %q", code, errOut)
	}
	code, out, errOut = runCLIProcess(t, "testnet", "status", "--dir", dir, "--json")
	var st testnetReply
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !slices.Contains(st.Running, "n1") || !slices.Contains(st.Running, "v0") || !slices.Contains(st.Running, "d1") {
		t.Fatalf("status: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCLIProcess(t, "testnet", "down", dir, "--purge"); code != 0 || !strings.Contains(errOut, "stopped the test network") {
		t.Fatalf("down: exit %d %q", code, errOut)
	}
	waitGone(t, pids)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after down --purge: %v", dir, err)
	}
	// A directory the command did not make is left alone.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o600)
	if code, _, errOut := runCLIProcess(t, "testnet", "down", other, "--purge"); code != 1 || !strings.Contains(errOut, "was not made by 'cloister testnet'") {
		t.Errorf("down --purge of a foreign directory: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLIProcess(t, "testnet", "--dir", other); code != 2 || !strings.Contains(errOut, "is not empty") {
		t.Errorf("testnet in a foreign directory: exit %d %q", code, errOut)
	}
}
