package broker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/sealed"
)

// memLog is a ledger's entry list as GET /v1/entries serves it, in
// memory, counting the entries it serves.
type memLog struct {
	entries []*client.Entry
	served  int
}

func (m *memLog) Entries(_ context.Context, from uint64, limit int) (*client.Page, error) {
	p := &client.Page{Size: uint64(len(m.entries))}
	for i := from; i < uint64(len(m.entries)) && len(p.Entries) < limit; i++ {
		p.Entries = append(p.Entries, m.entries[i])
	}
	m.served += len(p.Entries)
	return p, nil
}

func (m *memLog) add(t *testing.T, k ed25519.PrivateKey, kind string, body any) uint64 {
	t.Helper()
	se, err := verify.NewEntry(k, verify.Kind(kind), body)
	if err != nil {
		t.Fatal(err)
	}
	i := uint64(len(m.entries))
	m.entries = append(m.entries, &client.Entry{Index: i, Signed: se})
	return i
}

// TestGrantsFoldIncrementally: lookups pick the latest live grant naming
// the isolate (its session on this node, or its class), fall back to the
// latest revoked one, tell owners of the same digest apart, and read only
// the entries appended since the previous lookup.
func TestGrantsFoldIncrementally(t *testing.T) {
	_, owner, _ := ed25519.GenerateKey(nil)
	_, mallory, _ := ed25519.GenerateKey(nil)
	text := func(k ed25519.PrivateKey) string { return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey)) }
	_, nk, _ := ed25519.GenerateKey(nil)
	_, ok, _ := ed25519.GenerateKey(nil)
	node, other := text(nk), text(ok)
	digest := "sha256:" + strings.Repeat("ab", 32)
	l := &memLog{}
	var key sealed.Key
	_, com, err := Split(&key, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	art := acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("cd", 32), Brokers: []string{text(owner)}, Threshold: 1, Commitment: com}
	l.add(t, owner, acl.KindArtifactRegistered, art)
	fake := art
	fake.PlaintextSHA256 = strings.Repeat("ee", 32)
	l.add(t, mallory, acl.KindArtifactRegistered, fake)
	grant := func(g acl.Grantee) uint64 {
		return l.add(t, owner, acl.KindGranted, acl.Grant{Artifact: digest, Owner: text(owner), Grantee: g, NotAfter: "2030-01-01T00:00:00Z", MaxUses: 1})
	}
	gs := NewGrants(l, node)
	ctx := context.Background()
	if _, _, err := gs.Find(ctx, text(owner), digest, "s1", "software"); err == nil || !strings.Contains(err.Error(), ErrNoGrant.Error()) {
		t.Fatalf("no grant yet: %v", err)
	}
	mine := grant(acl.Grantee{Node: node, Session: "s1"})
	grant(acl.Grantee{Node: other, Session: "s1"}) // another node's session of the same name
	a, g, err := gs.Find(ctx, text(owner), digest, "s1", "software")
	if err != nil || g != mine || a.PlaintextSHA256 != art.PlaintextSHA256 {
		t.Fatalf("Find: %v, grant %d (want %d), artifact %+v", err, g, mine, a)
	}
	if _, g, _ := gs.Find(ctx, text(mallory), digest, "s1", "software"); g != 0 {
		t.Fatalf("mallory's artifact of the same digest has grant %d", g)
	}
	class := grant(acl.Grantee{Class: "software", Measurements: []string{"aa"}})
	if _, g, _ := gs.Find(ctx, text(owner), digest, "s2", "software"); g != class {
		t.Fatalf("class grant: got %d, want %d", g, class)
	}
	l.add(t, owner, acl.KindRevoked, acl.Revocation{Grant: &class})
	if _, g, _ := gs.Find(ctx, text(owner), digest, "s1", "software"); g != mine {
		t.Fatalf("after revoking the class grant, session s1: got %d, want %d", g, mine)
	}
	if _, g, _ := gs.Find(ctx, text(owner), digest, "s2", "software"); g != class {
		t.Fatalf("only a revoked grant: got %d, want it (%d) so that the ledger refuses", g, class)
	}
	if l.served != len(l.entries) {
		t.Fatalf("%d entries served for a log of %d: lookups read the log again", l.served, len(l.entries))
	}
}

// lateLog is a memLog that appends an entry when it is read for the
// nth time: a grant that reaches the ledger while a node is looking.
type lateLog struct {
	*memLog
	reads, at int
	late      func()
}

func (l *lateLog) Entries(ctx context.Context, from uint64, limit int) (*client.Page, error) {
	if l.reads++; l.reads == l.at {
		l.late()
	}
	return l.memLog.Entries(ctx, from, limit)
}

// TestFindGrantWaitsForALateGrant: a node whose session's grant is
// committed a moment after the run starts (the dispatcher records the
// assignment, then the grant) waits for it instead of failing the run;
// a grant that never comes is refused, named, after the grace.
func TestFindGrantWaitsForALateGrant(t *testing.T) {
	_, owner, _ := ed25519.GenerateKey(nil)
	_, nk, _ := ed25519.GenerateKey(nil)
	text := func(k ed25519.PrivateKey) string { return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey)) }
	node := text(nk)
	digest := "sha256:" + strings.Repeat("ab", 32)
	var key sealed.Key
	_, com, err := Split(&key, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := &memLog{}
	m.add(t, owner, acl.KindArtifactRegistered, acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("cd", 32), Brokers: []string{text(owner)}, Threshold: 1, Commitment: com})
	var want uint64
	l := &lateLog{memLog: m, at: 3, late: func() {
		want = m.add(t, owner, acl.KindGranted, acl.Grant{Artifact: digest, Owner: text(owner), Grantee: acl.Grantee{Node: node, Session: "s1"}, NotAfter: "2030-01-01T00:00:00Z", MaxUses: 1})
	}}
	ctx := context.Background()
	_, g, err := findGrant(ctx, NewGrants(l, node), text(owner), digest, "s1", "software")
	if err != nil || g != want || want == 0 {
		t.Fatalf("late grant: got %d, %v; want %d", g, err, want)
	}
	defer func(d time.Duration) { grantGrace = d }(grantGrace)
	grantGrace = 3 * grantPoll
	t0 := time.Now()
	_, _, err = findGrant(ctx, NewGrants(m, node), text(owner), digest, "s2", "software")
	if !errors.Is(err, ErrNoGrant) {
		t.Fatalf("no grant for s2: %v", err)
	}
	if d := time.Since(t0); d < grantGrace {
		t.Fatalf("refused after %v, before the grace of %v", d, grantGrace)
	}
}
