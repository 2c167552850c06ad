package atomicfile_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// The writer process of TestKilledWriter: rewrites the file in a loop, each
// version a different length filled with one byte, until it is killed.
func init() {
	path := os.Getenv("ATOMICFILE_TEST_WRITER")
	if path == "" {
		return
	}
	for i := 0; ; i++ {
		if err := atomicfile.WriteFile(path, version(i), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if i == 0 {
			fmt.Println("started")
		}
	}
}

// version i of the file: its own length in 8 decimal digits, then one
// byte repeated. A file cut short or mixed from two versions does not
// have this form.
func version(i int) []byte {
	n := 9 + (i*7919)%(256<<10)
	return append([]byte(fmt.Sprintf("%08d", n)), bytes.Repeat([]byte{byte('a' + i%26)}, n-8)...)
}

func isVersion(b []byte) bool {
	if len(b) < 9 {
		return false
	}
	n, err := strconv.Atoi(string(b[:8]))
	return err == nil && n == len(b) && bytes.Equal(b[8:], bytes.Repeat(b[8:9], len(b)-8))
}

// TestKilledWriter kills a process in the middle of rewriting a file, again
// and again at different moments, and checks each time that the file holds
// one whole version: never empty, never a mix of two.
func TestKilledWriter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for round := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_TEST_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("started\n"))
		if _, err := out.Read(buf); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: the writer did not start: %v", round, err)
		}
		time.Sleep(time.Duration(round) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !isVersion(got) {
			t.Fatalf("round %d: the file holds %d bytes that are not one version", round, len(got))
		}
	}
	if l := leftovers(t, dir); len(l) > 20 {
		t.Errorf("%d temporary files left by 20 kills", len(l))
	}
}
