package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// unreachableLedger takes no receipt: they all stay pending.
type unreachableLedger struct{}

func (unreachableLedger) Models(context.Context) (*client.ModelList, error) {
	return nil, errors.New("unreachable")
}
func (unreachableLedger) Append(context.Context, *verify.SignedEntry) (verify.Receipt, error) {
	return verify.Receipt{}, errors.New("unreachable")
}
func (unreachableLedger) AppendBatch(ctx context.Context, _ []*verify.SignedEntry, _ bool) ([]client.BatchResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (unreachableLedger) Get(context.Context, uint64) (*client.Entry, error) {
	return nil, errors.New("unreachable")
}

// holderState is a holder's durable call state opened over dir: what
// NewHolder opens, without the node.
type holderState struct {
	ps *plans
	ob *outbox
	cl *callLog
}

func openState(t *testing.T, dir string) *holderState {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ps, err := openPlans(filepath.Join(dir, "plans"))
	if err != nil {
		t.Fatal(err)
	}
	ob, err := openOutbox(filepath.Join(dir, "receipts"), unreachableLedger{}, log)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := openCallLog(filepath.Join(dir, "calls"), ob, ps, log)
	if err != nil {
		ob.close()
		t.Fatal(err)
	}
	return &holderState{ps: ps, ob: ob, cl: cl}
}

func (s *holderState) close() {
	s.cl.close()
	s.ob.close()
}

// crashCopy copies dir to a new directory as a crash at this moment would
// leave it, while the call log's applier may be writing: the log first,
// then the files records are applied to. A record's segment is removed
// only once its receipt and counts are in their files, so the files
// copied after the log hold at least what the log copied lacks.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	for _, sub := range []string{"calls", "receipts", "plans"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking: applied before
			}
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(to, rel), 0o700)
			}
			b, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(to, rel), b, 0o600)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// A crash at any moment after a call's record is appended — while the
// records are applied to their files in the background, segments filled
// and removed — loses no count and no receipt of a call answered by then:
// a holder opening the directory finds every such call counted, against
// the initiator's budget and its plan, and its receipt pending for the
// ledger; a replayed call id is refused across the crash; opening twice
// counts nothing twice.
func TestCallLogCrash(t *testing.T) {
	dir := t.TempDir()
	s := openState(t, dir)
	initiator := strings.Repeat("i", 8)
	plan := &PlanRecord{ID: strings.Repeat("cd", 32), Initiator: initiator, State: PlanApproved,
		Plan: Plan{Model: "hospital-a/stats", Version: 1, Calls: 1000, Functions: []PlanFunction{{Name: "count"}},
			Expires: verify.FormatTime(time.Now().Add(time.Hour))}}
	if err := s.ps.add(plan); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	uk := usageKey("hospital-a/stats", 1, initiator)
	// Records of about 6 KiB: the calls fill several segments.
	note := strings.Repeat("n", 6<<10)
	const calls = 120
	var ids []string
	snaps := map[int]string{}
	for i := range calls {
		var raw [32]byte
		rand.Read(raw[:])
		c := &Call{ID: hex.EncodeToString(raw[:]), Model: "hospital-a/stats", Version: 1, Function: "count", Initiator: initiator}
		rec, err := s.ps.reserve(c, plan.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		se, err := verify.NewEntry(key, model.KindCalled, model.Call{ID: c.ID, Model: c.Model, Version: 1, Function: "count",
			Initiator: initiator, Workflow: note})
		if err != nil {
			t.Fatal(err)
		}
		rec.Receipt = se.Encode()
		if err := s.cl.append(rec, se); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
		if err := s.cl.append(rec, se); !errors.Is(err, errReplayed) {
			t.Fatalf("the same call id appended twice: %v", err)
		}
		if i%7 == 3 || i == calls-1 {
			snaps[i+1] = crashCopy(t, dir)
		}
		time.Sleep(time.Duration(i%4) * time.Millisecond)
	}
	s.close()
	if segs, _ := filepath.Glob(filepath.Join(dir, "calls", "*"+segSuffix)); len(segs) == 0 {
		t.Fatal("no segment left by a holder that stopped before applying everything (expected at least the current one)")
	}
	check := func(dir string, answered int) {
		t.Helper()
		for range 2 { // opening twice counts nothing twice
			s := openState(t, dir)
			if got := s.ps.usage[uk]; got != uint64(answered) {
				t.Fatalf("after %d calls: initiator's count %d", answered, got)
			}
			if got := s.ps.byID[plan.ID].Used; got != uint64(answered) {
				t.Fatalf("after %d calls: plan's count %d", answered, got)
			}
			for _, id := range ids[:answered] {
				if st := s.ob.status(id); st.State != ReceiptPending {
					t.Fatalf("after %d calls: receipt %s is %+v", answered, id[:8], st)
				}
				s.ob.mu.Lock()
				_, queued := s.ob.pending[id]
				s.ob.mu.Unlock()
				if !queued {
					t.Fatalf("after %d calls: receipt %s not queued for the ledger", answered, id[:8])
				}
				if s.ob.claim(id) {
					t.Fatalf("after %d calls: call %s can be answered again", answered, id[:8])
				}
			}
			if segs, _ := filepath.Glob(filepath.Join(dir, "calls", "*"+segSuffix)); len(segs) > spareSegs {
				t.Fatalf("after opening: %d segments, want the log applied and removed (the spares made anew only)", len(segs))
			}
			s.close()
		}
	}
	for n, d := range snaps {
		check(d, n)
	}
	check(dir, calls)
}

// A segment is read up to its last complete record: a torn record (a
// crash during its write, never acknowledged) and the zeros after end
// it.
func TestCallLogTornRecord(t *testing.T) {
	rec := func(id byte) []byte {
		payload := []byte(`{"call":"` + strings.Repeat(string(id), 64) + `","receipt":"eA==","usage":"u","count":1}`)
		b := make([]byte, recordHeader+len(payload))
		binary.BigEndian.PutUint32(b, uint32(len(payload)))
		binary.BigEndian.PutUint32(b[4:], crc32.Checksum(payload, castagnoli))
		copy(b[recordHeader:], payload)
		return b
	}
	one, two, three := rec('a'), rec('b'), rec('c')
	zeros := make([]byte, 1024)
	cases := map[string][]byte{
		"zeros after":         append(append(append([]byte{}, one...), two...), zeros...),
		"torn payload":        append(append(append([]byte{}, one...), two...), three[:len(three)-5]...),
		"torn header":         append(append(append([]byte{}, one...), two...), three[:5]...),
		"flipped byte":        append(append(append([]byte{}, one...), two...), append(append([]byte{}, three[:20]...), append([]byte{three[20] ^ 1}, three[21:]...)...)...),
		"length past the end": append(append(append([]byte{}, one...), two...), 0, 1, 0, 0, 1, 2, 3, 4),
	}
	for name, b := range cases {
		got := readRecords(b)
		if len(got) != 2 || got[0].Call[0] != 'a' || got[1].Call[0] != 'b' {
			t.Errorf("%s: %d records", name, len(got))
		}
	}
}
