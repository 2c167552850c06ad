package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/keys"
)

// buildCloister builds cmd/cloister (without the race detector, as every
// multi-process test does) into a temporary directory.
func buildCloister(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cloister")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cloister")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cloister: %v\n%s", err, out)
	}
	return bin
}

// TestNodeBlobListen runs `cloister node --blob-listen` as a process of its
// own and talks to its blob store with `cloister blob` processes: a push
// signed by the allowed key lands and reads back byte for byte; a push by
// another key is refused and leaves nothing; the node stops on SIGTERM.
func TestNodeBlobListen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the cloister binary; skipped with -short")
	}
	bin := buildCloister(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cloister := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, out.String(), errb.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), out.String(), errb.String()
		}
		t.Fatalf("cloister %s: %v", strings.Join(args, " "), err)
		return 0, "", ""
	}
	alice, mallory := filepath.Join(dir, "alice.key"), filepath.Join(dir, "mallory.key")
	for _, k := range []string{alice, mallory} {
		if code, _, stderr := cloister("key", "new", "--out", k); code != 0 {
			t.Fatalf("key new: %s", stderr)
		}
	}
	ak, err := keys.Load(alice)
	if err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(dir, "node")
	node := exec.CommandContext(ctx, bin, "node", "--data", data, "--listen", "127.0.0.1:0", "--no-ledger", "--warm-workers", "0",
		"--blob-listen", "127.0.0.1:0", "--push-key", ak.Public().SigningString())
	stderr, err := node.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once waitErr is set
	var waitErr error
	var log bytes.Buffer
	urlc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg="blob store listening" url=(http://127\.0\.0\.1:[0-9]+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
		waitErr = node.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		node.Process.Kill()
		<-exited
	})
	var base string
	select {
	case base = <-urlc:
	case <-exited:
		t.Fatalf("the node exited at start: %v\n%s", waitErr, log.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("the node did not serve its blob store within 2 minutes")
	}
	store := base + "/models"

	payload := bytes.Repeat([]byte("model weights "), 100_000)
	file := filepath.Join(dir, "w.bin")
	os.WriteFile(file, payload, 0o644)
	want := string(blob.FromBytes(payload))

	code, stdout, errOut := cloister("blob", "put", file, "--store", store, "--key", alice)
	if code != 0 || strings.TrimSpace(stdout) != want {
		t.Fatalf("put with the allowed key: exit %d, printed %q, want %s\n%s", code, stdout, want, errOut)
	}
	out := filepath.Join(dir, "got.bin")
	if code, _, errOut := cloister("blob", "get", want, "--store", store, "--out", out); code != 0 {
		t.Fatalf("get: exit %d\n%s", code, errOut)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, payload) {
		t.Fatal("get returned other bytes")
	}

	other := filepath.Join(dir, "other.bin")
	os.WriteFile(other, []byte("not allowed here"), 0o644)
	code, _, errOut = cloister("blob", "put", other, "--store", store, "--key", mallory)
	if code != ExitFailure || !strings.Contains(errOut, "may not write to this store") {
		t.Fatalf("put with another key: exit %d\n%s", code, errOut)
	}
	od := blob.FromBytes([]byte("not allowed here"))
	if code, _, errOut := cloister("blob", "get", string(od), "--store", store, "--out", filepath.Join(dir, "x")); code != ExitFailure || !strings.Contains(errOut, "blob not found") {
		t.Fatalf("the refused blob: get exit %d\n%s", code, errOut)
	}
	h := od.Hex()
	if _, err := os.Stat(filepath.Join(data, "blobstore", "blobs", "sha256", h[:2], h)); !os.IsNotExist(err) {
		t.Fatalf("the refused blob is on disk: %v", err)
	}

	node.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("the node stopped with %v\n%s", waitErr, log.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the node did not stop within a minute of SIGTERM")
	}
}
