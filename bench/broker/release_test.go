// Package brokerbench measures key releases: a broker verifying an
// isolate's evidence and releasing its share, with and without waiting
// for the key.released entry to be committed.
package brokerbench

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

// noCommit appends nothing: it stands for "the release without its ledger
// entry", to price the evidence check, the grant read and the sealing
// alone. Grants are still read from the real ledger.
type noCommit struct{ *client.Client }

func (noCommit) Append(context.Context, *verify.SignedEntry) (verify.Receipt, error) {
	return verify.Receipt{}, nil
}

type fixture struct {
	lc   *client.Client
	url  string
	art  acl.Artifact
	own  string
	gi   uint64
	iso  *broker.Isolate
	stop func()
}

func setup(b *testing.B, commit bool) *fixture {
	b.Helper()
	ctx := context.Background()
	lg, err := ledger.OpenEmbedded(ctx, b.TempDir(), ledger.EmbeddedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ls := httptest.NewServer(lg.Handler())
	lc, _ := client.New(ls.URL)
	var l broker.Ledger = lc
	if !commit {
		l = noCommit{lc}
	}
	br, err := broker.New(broker.Options{Dir: b.TempDir(), Ledger: l})
	if err != nil {
		b.Fatal(err)
	}
	bs := httptest.NewServer(br.Handler())
	owner, _ := keys.Generate()
	vb, err := broker.Verify(ctx, bs.URL, broker.Pins{Keys: []ed25519.PublicKey{br.SigningKey()}})
	if err != nil {
		b.Fatal(err)
	}
	var key sealed.Key
	shares, com, _ := broker.Split(&key, 1, 1)
	digest := "sha256:" + strings.Repeat("ab", 32)
	if err := broker.Register(ctx, vb, owner.Signer(), digest, shares[0], 1); err != nil {
		b.Fatal(err)
	}
	art := acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("cd", 32), Brokers: []string{vb.Info.SigningKey}, Threshold: 1, Commitment: com}
	app := func(k ed25519.PrivateKey, kind verify.Kind, body any) uint64 {
		se, _ := verify.NewEntry(k, kind, body)
		rc, err := lc.Append(ctx, se)
		if err != nil {
			b.Fatal(err)
		}
		return rc.Index
	}
	app(owner.Signer(), ledger.KindArtifactRegistered, art)
	_, node, _ := ed25519.GenerateKey(nil)
	nodeText := protocol.FormatEd25519Key(node.Public().(ed25519.PublicKey))
	m := [32]byte{1}
	att, _ := software.NewAttester(node, software.WithMeasurement(m))
	app(node, ledger.KindNodeRegistered, map[string]any{"platform_key": nodeText, "class": "software", "evidence": base64.StdEncoding.EncodeToString([]byte("{}"))})
	app(node, ledger.KindSessionEvent, map[string]any{"session": "bench", "event": "session.created", "policy_hash": strings.Repeat("ef", 32)})
	gi := app(owner.Signer(), ledger.KindACLGranted, acl.Grant{Artifact: digest, Owner: owner.Public().SigningString(),
		Grantee: acl.Grantee{Node: nodeText, Session: "bench"}, NotAfter: acl.FormatTime(time.Now().Add(time.Hour)), MaxUses: 1})
	sk, _ := seal.GenerateKey()
	iso := &broker.Isolate{Node: nodeText, Session: "bench", PolicyHash: strings.Repeat("ef", 32), SessionKey: sk,
		Attest: func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return att.Attest(ctx, rd)
		}}
	return &fixture{lc: lc, url: bs.URL, art: art, own: owner.Public().SigningString(), gi: gi, iso: iso,
		stop: func() { bs.Close(); ls.Close(); lg.Close() }}
}

// latencies reports the p50 and p99 of lat.
func latencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkAppend is the commit alone, in the release benchmark's
// setting: one entry appended over HTTP to the same embedded ledger and
// waited for, one after the other. Release's commit minus no-commit is
// this, if the broker adds nothing around its entry.
//
//	go test ./bench/broker -run - -bench 'Release|Append' -benchtime 200x
func BenchmarkAppend(b *testing.B) {
	f := setup(b, true)
	defer f.stop()
	_, k, _ := ed25519.GenerateKey(nil)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		se, err := verify.NewEntry(k, ledger.KindNote, map[string]any{"i": i})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := f.lc.Append(ctx, se); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	latencies(b, lat)
}

// BenchmarkRelease is one release from the isolate's side, over HTTP on
// loopback: a broker nonce, fresh software evidence over the request, the
// broker's checks (nonce, grant read from the ledger, evidence), the
// key.released entry (commit: appended and waited for; no-commit: not
// appended), the share sealed to the session key and opened. It reports
// p50 and p99 of the sequential runs; the parallel runs give releases/s.
//
//	go test ./bench/broker -run - -bench Release -benchtime 300x
func BenchmarkRelease(b *testing.B) {
	for _, commit := range []bool{false, true} {
		name := "no-commit"
		if commit {
			name = "commit"
		}
		b.Run(name, func(b *testing.B) {
			f := setup(b, commit)
			defer f.stop()
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, _, err := broker.Obtain(ctx, f.own, &f.art, f.gi, []string{f.url}, f.iso); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			latencies(b, lat)
		})
		b.Run(name+"-parallel", func(b *testing.B) {
			f := setup(b, commit)
			defer f.stop()
			ctx := context.Background()
			var once sync.Once
			b.ResetTimer()
			t0 := time.Now()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := broker.Obtain(ctx, f.own, &f.art, f.gi, []string{f.url}, f.iso); err != nil {
						once.Do(func() { b.Error(err) })
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "releases/s")
		})
	}
}
