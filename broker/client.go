package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

var httpClient = &http.Client{Timeout: 60 * time.Second}

const maxResponseBytes = 1 << 20

func call(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Reason == "" {
			e.Reason = fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, b)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Pins are what an owner expects of a broker before it hands it a key.
type Pins struct {
	// Keys pins the broker's signing key (for software evidence, the key
	// that signs it: without a pin it proves nothing).
	Keys []ed25519.PublicKey
	// Measurements, if not empty, is the allow-list of the broker's
	// runtime measurement.
	Measurements [][]byte
	// Verify are the options for the evidence's chains and signatures
	// (roots for hardware classes); TrustedKeys are set from Keys.
	Verify attest.VerifyOptions
}

// VerifiedBroker is a broker whose evidence the caller checked.
type VerifiedBroker struct {
	URL     string
	Info    Info
	Signing ed25519.PublicKey
	Sealing hpke.PublicKey
	Claims  *attest.Claims
}

// Verify asks the broker at url for its keys with evidence over a fresh
// nonce, and checks it: signed (pinned key or the class's roots), not
// debug, measurement allowed, binding the keys and the nonce. An owner
// registers a key only with a broker that passed.
func Verify(ctx context.Context, url string, pins Pins) (*VerifiedBroker, error) {
	url = strings.TrimRight(url, "/")
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	var info Info
	if err := call(ctx, "GET", url+"/v1/info?nonce="+hex.EncodeToString(nonce), nil, &info); err != nil {
		return nil, fmt.Errorf("broker %s: %w", url, err)
	}
	signing, err := protocol.ParseEd25519Key(info.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("broker %s: signing key: %w", url, err)
	}
	sealing, err := keys.ParseSealingKey(info.SealingKey)
	if err != nil {
		return nil, fmt.Errorf("broker %s: sealing key: %w", url, err)
	}
	if info.Evidence == nil {
		return nil, fmt.Errorf("broker %s: no evidence", url)
	}
	opts := pins.Verify
	for _, k := range pins.Keys {
		opts.TrustedKeys = append(opts.TrustedKeys, k)
	}
	claims, err := attest.Verify(ctx, info.Evidence, opts)
	if err != nil {
		return nil, fmt.Errorf("broker %s: its evidence does not verify: %w", url, err)
	}
	if info.Evidence.Class == attest.ClassSoftware && !claimsSignedBy(claims, signing) {
		return nil, fmt.Errorf("broker %s: its software evidence is signed by %s, not by its signing key %s", url, claims.Signer, info.SigningKey)
	}
	rd := InfoReportData(signing, info.SealingKey, nonce)
	if err := attest.Validate(claims, attest.ReferenceValues{ReportData: rd[:], Measurements: pins.Measurements}, opts.Time()); err != nil {
		return nil, fmt.Errorf("broker %s: its evidence is not acceptable: %w", url, err)
	}
	return &VerifiedBroker{URL: url, Info: info, Signing: signing, Sealing: sealing, Claims: claims}, nil
}

func claimsSignedBy(c *attest.Claims, k ed25519.PublicKey) bool {
	return c.Signer == protocol.FormatEd25519Key(k)
}

// Register seals share to the verified broker and registers it, signed
// by the owner.
func Register(ctx context.Context, vb *VerifiedBroker, owner ed25519.PrivateKey, artifact string, share Share, threshold int) error {
	ownerText := protocol.FormatEd25519Key(owner.Public().(ed25519.PublicKey))
	env, err := seal.Seal(vb.Sealing, share.Value[:], shareInfo(ShareToBroker, ownerText, artifact, "", share.Index), nil)
	if err != nil {
		return err
	}
	reg := &Registration{Owner: ownerText, Artifact: artifact, Share: share.Index, Threshold: threshold, Envelope: env,
		Time: time.Now().UTC().Format(time.RFC3339)}
	reg.Signature = ed25519.Sign(owner, RegistrationMessage(reg, vb.Signing))
	if err := call(ctx, "POST", vb.URL+"/v1/keys", reg, nil); err != nil {
		return fmt.Errorf("broker %s: %w", vb.URL, err)
	}
	return nil
}

// Isolate is the side of a session that asks for a key: its identity
// (node, session, policy), its HPKE key, and an attester that binds
// report data in fresh evidence.
type Isolate struct {
	Node       string
	Session    string
	PolicyHash string
	SessionKey hpke.PrivateKey
	Attest     func(ctx context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error)
}

// Released is one broker's answer.
type Released struct {
	URL   string
	Share int
	Entry uint64
	Err   error
}

// Obtain asks the brokers (URLs in share order: urls[i] holds share i+1
// of art) for their shares on grant, checks each against the artifact's
// commitment and combines Threshold of them into the content key. Every
// broker is asked at once; the key is returned as soon as Threshold good
// shares are in, with the outcome of each broker that had answered by
// then.
func Obtain(ctx context.Context, owner string, art *acl.Artifact, grant uint64, urls []string, iso *Isolate) (*sealed.Key, []Released, error) {
	sessionKey := keys.FormatSealingKey(iso.SessionKey.PublicKey())
	// Shares travel by pointer and are zeroed once combined: no copy of
	// one is left in a goroutine's stack, a channel or a grown slice.
	type got struct {
		share *Share
		rel   Released
	}
	ch := make(chan got, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, entry, err := obtainOne(ctx, strings.TrimRight(u, "/"), owner, art, grant, sessionKey, iso)
			if err == nil && s.Index != i+1 {
				err = fmt.Errorf("broker %s sent share %d; it holds share %d of the artifact", u, s.Index, i+1)
			}
			if err == nil {
				err = VerifyShare(s, art.Commitment)
			}
			if err != nil && s != nil {
				clear(s.Value[:])
				s = nil
			}
			ch <- got{s, Released{URL: u, Share: i + 1, Entry: entry, Err: err}}
		}()
	}
	go func() { wg.Wait(); close(ch) }()
	shares := make([]Share, 0, len(urls))
	var out []Released
	for g := range ch {
		out = append(out, g.rel)
		if g.share != nil {
			shares = append(shares, *g.share)
			clear(g.share.Value[:])
		}
		if len(shares) == art.Threshold {
			break
		}
	}
	// The key does not wait for the brokers still answering (each of
	// their releases is committed all the same): their shares, when they
	// come, are zeroed and dropped.
	go func() {
		for g := range ch {
			if g.share != nil {
				clear(g.share.Value[:])
			}
		}
	}()
	defer func() {
		for i := range shares {
			clear(shares[i].Value[:])
		}
	}()
	if len(shares) < art.Threshold {
		var errs []error
		for _, r := range out {
			if r.Err != nil {
				errs = append(errs, r.Err)
			}
		}
		return nil, out, fmt.Errorf("key of %s: %d of the %d shares needed: %w", art.Digest, len(shares), art.Threshold, errors.Join(errs...))
	}
	key, err := Combine(shares[:art.Threshold], art.Commitment)
	return key, out, err
}

func obtainOne(ctx context.Context, url, owner string, art *acl.Artifact, grant uint64, sessionKey string, iso *Isolate) (*Share, uint64, error) {
	var n struct {
		Nonce []byte `json:"nonce"`
	}
	if err := call(ctx, "POST", url+"/v1/nonce", struct{}{}, &n); err != nil {
		return nil, 0, fmt.Errorf("broker %s: %w", url, err)
	}
	req := &ReleaseRequest{Owner: owner, Artifact: art.Digest, Grant: grant, Node: iso.Node, Session: iso.Session,
		PolicyHash: iso.PolicyHash, SessionKey: sessionKey, Nonce: n.Nonce}
	rd := ReleaseReportData(req)
	ev, err := iso.Attest(ctx, rd)
	if err != nil {
		return nil, 0, fmt.Errorf("evidence for broker %s: %w", url, err)
	}
	req.Evidence = ev
	var resp ReleaseResponse
	if err := call(ctx, "POST", url+"/v1/release", req, &resp); err != nil {
		return nil, 0, fmt.Errorf("broker %s: %w", url, err)
	}
	v, err := seal.Open(iso.SessionKey, resp.Envelope, shareInfo(ShareToSession, owner, art.Digest, iso.Session, resp.Share), rd[:])
	defer clear(v)
	if err != nil || len(v) != ShareSize {
		return nil, resp.Entry, fmt.Errorf("broker %s: its share does not open with the session key", url)
	}
	s := &Share{Index: resp.Share}
	copy(s.Value[:], v)
	return s, resp.Entry, nil
}
