package node_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
)

// smallFS mounts a tmpfs of size bytes for the test and unmounts it when
// the test ends. It skips the test where mounting is not allowed (not
// root): the data directory must be a file system the test can fill
// without filling the machine's.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v): run as root", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file in dir until the file system has at most leave bytes
// free (0: until it is full), and returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xa5}, 64<<10)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free <= leave {
			return path
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// A node whose data directory fills up refuses new sessions and uploads,
// saying the disk is the reason; it keeps serving results and status of
// what it holds; and it takes new work again once space returns.
func TestDiskFull(t *testing.T) {
	s := newScenario(t)
	data := smallFS(t, 64<<20)
	opts := testOptions(t, filepath.Join(data, "node"))
	opts.NoSync = false
	opts.Admission.Quotas.MinFreeBytes = 8 << 20
	tn := serveNode(t, opts)
	wasm := readTestdata(t, "sum.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "sum.wasm", wasm)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Session A finishes; session B waits for its inputs.
	a := createAttested(ctx, t, c, doc)
	s.provisionSum(t, a, "sum.wasm", wasm)
	if st, err := a.Wait(ctx); err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("session A: %v %v", st, err)
	}
	want, err := a.Result(ctx, s.dave.key, "sum")
	if err != nil {
		t.Fatal(err)
	}
	b := createAttested(ctx, t, c, doc)
	if _, err := b.UploadProgram(ctx, s.alice.key, "sum.wasm", wasm); err != nil {
		t.Fatal(err)
	}

	// Below the reserve: new work is refused, naming the reserve.
	filler := fill(t, data, 4<<20)
	_, err = c.CreateSession(ctx, doc)
	wantRule(t, err, connect.CodeResourceExhausted, "disk-reserve", "--min-free")
	_, err = b.UploadInput(ctx, s.bob.key, "a", []byte("hello"))
	wantRule(t, err, connect.CodeResourceExhausted, "disk-reserve", "bytes free")

	// Full to the last byte: still refused the same way, and what the node
	// holds is still served.
	fill(t, data, 0)
	_, err = c.CreateSession(ctx, doc)
	wantRule(t, err, connect.CodeResourceExhausted, "disk-reserve", "")
	got, err := a.Result(ctx, s.dave.key, "sum")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("result of A on a full disk: %q %v, want %q", got, err, want)
	}
	if st, err := b.Status(ctx); err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_PROVISIONING || !st.Programs[0].Present {
		t.Fatalf("status of B on a full disk: %v %v", st, err)
	}
	// A close needs a line in the tombstone log: refused as a full disk,
	// not as an internal error, and the session is intact.
	err = b.Close(ctx, s.bob.key)
	wantRule(t, err, connect.CodeResourceExhausted, "disk-reserve", "data directory is full")
	if st, err := b.Status(ctx); err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_PROVISIONING {
		t.Fatalf("B after a refused close: %v %v", st, err)
	}

	// Space returns: new work is taken again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, doc); err != nil {
		t.Fatalf("create after space returned: %v", err)
	}
	if _, err := b.UploadInput(ctx, s.bob.key, "a", []byte("hello")); err != nil {
		t.Fatalf("upload after space returned: %v", err)
	}
	if _, err := b.UploadInput(ctx, s.carol.key, "b", []byte("world")); err != nil {
		t.Fatal(err)
	}
	if st, err := b.Wait(ctx); err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("session B after space returned: %v %v", st, err)
	}
	m := scrapeMetrics(t, tn)
	if !strings.Contains(m, `cloister_refusals_total{rule="disk-reserve"}`) {
		t.Fatalf("disk refusals not counted:\n%s", m)
	}
}
