package node

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/ratls"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

// Runner runs one program in an isolate; *isolate.Runtime satisfies it.
type Runner interface {
	Run(ctx context.Context, cfg *isolate.Config) (*isolate.Result, error)
}

// core is the isolate side of one session. It alone holds the session's
// private keys and ever sees plaintext programs, inputs and outputs; the
// API side hands it envelopes and gets envelopes back.
type core struct {
	id         string
	policyHash [32]byte
	attester   attest.Attester

	tlsKey  *ecdsa.PrivateKey
	cert    tls.Certificate
	spki    []byte // DER SubjectPublicKeyInfo of the session certificate
	hpkeKey hpke.PrivateKey
	hpkePub []byte // seal.MarshalPublicKey form, what the evidence binds
	// evidenceSHA256 is SHA-256 of the Data of the evidence in the
	// session's RA-TLS certificate; known only when the core was made
	// (a restored core leaves it zero: it is recorded at creation only).
	evidenceSHA256 [32]byte

	// opened keeps what checkProgram and checkInput opened, so that the run
	// does not open (HPKE-decapsulate) every envelope a second time. It is
	// emptied and wiped by the run and by wipe; a core restored after a
	// restart starts empty and opens the envelopes again.
	openedMu sync.Mutex
	opened   map[openedKey]openedItem
}

type openedKey struct{ kind, name string }

type openedItem struct {
	envelope  [32]byte // SHA-256 of the envelope the plaintext came from
	plaintext []byte
}

// keepMax bounds a plaintext the core keeps between upload and run: small
// items (most inputs, small programs) save a decapsulation at run; larger
// ones are wiped at once and opened again at run, so that sessions left
// waiting for their last input do not pin large plaintexts in memory.
const keepMax = 64 << 10

// keep remembers the plaintext of an accepted envelope until the run, if
// it is small enough; otherwise it wipes it.
func (c *core) keep(kind, name string, envelope, pt []byte) {
	if len(pt) > keepMax {
		clear(pt)
		return
	}
	c.openedMu.Lock()
	defer c.openedMu.Unlock()
	if c.opened == nil {
		c.opened = map[openedKey]openedItem{}
	}
	k := openedKey{kind, name}
	if old, ok := c.opened[k]; ok {
		clear(old.plaintext)
	}
	c.opened[k] = openedItem{envelope: sha256.Sum256(envelope), plaintext: pt}
}

// take returns the plaintext of envelope: the one kept at upload if it came
// from this very envelope, else the envelope opened now. The caller owns
// (and wipes) the result.
func (c *core) take(kind, name string, envelope []byte) ([]byte, error) {
	c.openedMu.Lock()
	it, ok := c.opened[openedKey{kind, name}]
	delete(c.opened, openedKey{kind, name})
	c.openedMu.Unlock()
	if ok {
		if it.envelope == sha256.Sum256(envelope) {
			return it.plaintext, nil
		}
		clear(it.plaintext)
	}
	return c.open(kind, name, envelope)
}

// drop wipes what keep kept for one item (its upload was not stored).
func (c *core) drop(kind, name string) {
	c.openedMu.Lock()
	defer c.openedMu.Unlock()
	if it, ok := c.opened[openedKey{kind, name}]; ok {
		clear(it.plaintext)
		delete(c.opened, openedKey{kind, name})
	}
}

// wipe drops every kept plaintext (the session is closed or failed).
func (c *core) wipe() {
	c.openedMu.Lock()
	defer c.openedMu.Unlock()
	for k, it := range c.opened {
		clear(it.plaintext)
		delete(c.opened, k)
	}
}

// errSealed marks an envelope that does not open with the session key.
var errSealed = errors.New("envelope does not open with the session key")

// newCore generates a session's HPKE key and its TLS key (ECDSA P-256, for
// the widest client support) with an RA-TLS certificate: evidence of the
// node's class bound to the certificate's key, carrying RATLSNonce as its
// nonce claim (extension 2.23.133.5.4.9), so that RA-TLS verifiers can check
// the session during the handshake. Cloister's own clients do not rely on
// it: they attest with a fresh nonce (Attest) and pin the key.
func newCore(ctx context.Context, id string, policyHash [32]byte, a attest.Attester) (*core, error) {
	hk, err := seal.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", id, err)
	}
	tk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("session %s: generating TLS key: %w", id, err)
	}
	now := time.Now()
	nonce := protocol.RATLSNonce(policyHash, seal.MarshalPublicKey(hk.PublicKey()))
	cb, err := ratls.ClaimsBuffer(tk.Public(), nonce[:])
	if err != nil {
		return nil, fmt.Errorf("session %s: RA-TLS claims: %w", id, err)
	}
	ev, err := a.Attest(ctx, ratls.ReportData(cb))
	if err != nil {
		return nil, fmt.Errorf("session %s: attesting the RA-TLS certificate: %w", id, err)
	}
	_, certDER, err := ratls.IssueCertificate(tk, ev, cb, now.Add(-time.Hour), now.Add(10*365*24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("session %s: issuing the RA-TLS certificate: %w", id, err)
	}
	c, err := assembleCore(id, policyHash, a, tk, certDER, hk)
	if err != nil {
		return nil, err
	}
	c.evidenceSHA256 = sha256.Sum256(ev.Data)
	return c, nil
}

// sign signs msg with the session TLS key (ECDSA P-256, SHA-256, ASN.1):
// what the session key says is said by the key principals attested.
// releaseIsolate is the session as a key broker sees it: the node, the
// session and its policy, the session's HPKE key (shares are sealed to
// it) and evidence binding the broker's report data.
func (c *core) releaseIsolate(node string) *broker.Isolate {
	return &broker.Isolate{Node: node, Session: c.id, PolicyHash: hex.EncodeToString(c.policyHash[:]), SessionKey: c.hpkeKey,
		Attest: func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return c.attester.Attest(ctx, rd)
		}}
}

func (c *core) sign(msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	return ecdsa.SignASN1(rand.Reader, c.tlsKey, h[:])
}

func assembleCore(id string, policyHash [32]byte, a attest.Attester, tk *ecdsa.PrivateKey, certDER []byte, hk hpke.PrivateKey) (*core, error) {
	leaf, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("session %s: parsing TLS certificate: %w", id, err)
	}
	if !tk.PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("session %s: TLS certificate does not match the session key", id)
	}
	return &core{
		id: id, policyHash: policyHash, attester: a,
		tlsKey:  tk,
		cert:    tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: tk, Leaf: leaf},
		spki:    leaf.RawSubjectPublicKeyInfo,
		hpkeKey: hk,
		hpkePub: seal.MarshalPublicKey(hk.PublicKey()),
	}, nil
}

// coreKeys is the serialisable form of a core's keys, kept sealed at rest.
type coreKeys struct {
	TLSKey  []byte `json:"tls_key"`  // PKCS#8
	Cert    []byte `json:"cert"`     // DER
	HPKEKey []byte `json:"hpke_key"` // seal.MarshalPrivateKey
}

func (c *core) keys() (coreKeys, error) {
	tk, err := x509.MarshalPKCS8PrivateKey(c.tlsKey)
	if err != nil {
		return coreKeys{}, err
	}
	hk, err := seal.MarshalPrivateKey(c.hpkeKey)
	if err != nil {
		return coreKeys{}, err
	}
	return coreKeys{TLSKey: tk, Cert: c.cert.Certificate[0], HPKEKey: hk}, nil
}

func restoreCore(id string, policyHash [32]byte, a attest.Attester, k coreKeys) (*core, error) {
	pk, err := x509.ParsePKCS8PrivateKey(k.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("session %s: stored TLS key: %w", id, err)
	}
	tk, ok := pk.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("session %s: stored TLS key is %T, want ECDSA", id, pk)
	}
	hk, err := seal.ParsePrivateKey(k.HPKEKey)
	if err != nil {
		return nil, fmt.Errorf("session %s: stored HPKE key: %w", id, err)
	}
	return assembleCore(id, policyHash, a, tk, k.Cert, hk)
}

// Attest returns evidence over protocol.ReportData for this session and
// the caller's nonce. Evidence is made fresh for every nonce.
func (c *core) attest(ctx context.Context, nonce []byte) (*attest.Evidence, error) {
	if len(nonce) != protocol.NonceSize {
		return nil, fmt.Errorf("nonce is %d bytes, want %d", len(nonce), protocol.NonceSize)
	}
	rd := protocol.ReportData(c.policyHash, c.spki, c.hpkePub, nonce)
	return c.attester.Attest(ctx, rd)
}

func (c *core) open(kind, name string, envelope []byte) ([]byte, error) {
	pt, err := seal.Open(c.hpkeKey, envelope, protocol.SealInfo(kind, c.id, name, ""), protocol.SealAAD(c.policyHash))
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errSealed, err)
	}
	return pt, nil
}

// checkProgram opens a sealed program and compares its SHA-256 with the
// policy's. Only the core keeps the plaintext (for the run); the session
// stores the envelope.
func (c *core) checkProgram(name string, envelope []byte, want [32]byte) error {
	pt, err := c.open(protocol.KindProgram, name, envelope)
	if err != nil {
		return err
	}
	if got := sha256.Sum256(pt); got != want {
		clear(pt)
		return &hashMismatchError{kind: "program", name: name, got: got, want: want}
	}
	c.keep(protocol.KindProgram, name, envelope, pt)
	return nil
}

type hashMismatchError struct {
	kind, name string
	got, want  [32]byte
}

func (e *hashMismatchError) Error() string {
	return fmt.Sprintf("%s %q has SHA-256 %s, the policy requires %s", e.kind, e.name, hex.EncodeToString(e.got[:]), hex.EncodeToString(e.want[:]))
}

// checkInput checks that a sealed input opens with the session key for this
// session, name and policy, so that a tampered or misdirected envelope is
// refused at upload rather than failing the run later, and, for an input
// the policy pins (want not zero), that its SHA-256 is the pinned one.
func (c *core) checkInput(name string, envelope []byte, want [32]byte) error {
	pt, err := c.open(protocol.KindInput, name, envelope)
	if err != nil {
		return err
	}
	if got := sha256.Sum256(pt); want != ([32]byte{}) && got != want {
		clear(pt)
		return &hashMismatchError{kind: "input", name: name, got: got, want: want}
	}
	c.keep(protocol.KindInput, name, envelope, pt)
	return nil
}

// runSpec is everything a run needs, all of it still sealed.
type runSpec struct {
	programName   string
	program       sealedItem
	programSHA256 [32]byte // what the policy pins
	inputs        []sealedItem
	outputs       []outputSpec
	memory        uint64
	timeout       time.Duration
	maxOutput     int64
	deterministic bool
	engine        string // the policy's engine; "": the node's
	hostCalls     map[string]isolate.HostCall
	// sink keeps the large outputs (nil: none is streamed).
	sink *outputSink
	// lease holds the stored inputs in the cache until the run ends.
	lease *lease
	// sealedProgram, when set, is the policy's sealed program: program
	// is its fetched ciphertext and obtainKey asks the brokers for its
	// key on behalf of the isolate (node is the node's platform key).
	sealedProgram *policy.Program
	obtainKey     func(ctx context.Context, prog *policy.Program, iso *broker.Isolate) (*sealed.Key, error)
	node          string
	// replicaSet, for a replica of a replica set, is the set's id: it
	// seeds the run instead of the session id, and the run's result
	// digest is computed (runOutcome.replicaDigest).
	replicaSet string
	// inputOrder lists the policy's inputs, for the digest's key.
	inputOrder []string
}

// sealedItem is an uploaded input (its envelope) or a stored one (the path
// of the fetched, digest-checked blob in the node's cache).
type sealedItem struct {
	name     string
	envelope []byte
	path     string // a plain file (a stored input), or with stream the sealed file
	stream   *streamRecord
}

type outputSpec struct {
	name    string
	readers []reader
}

type reader struct {
	id  string
	key hpke.PublicKey
}

// runOutcome is what leaves the core after a run: the report (no data)
// and each output sealed to each of its readers.
type runOutcome struct {
	report isolate.Report
	// sealed[output][reader] is the envelope for that reader.
	sealed map[string]map[string][]byte
	// streamed[output] is an output kept as a sealed file.
	streamed map[string]*outputStream
	// missing lists outputs the policy names that the program did not write.
	missing []string
	// dropped counts files the program wrote that the policy does not name.
	dropped int
	// replicaDigest is a replica's result digest (protocol.ReplicaDigest).
	replicaDigest string
}

// Special output names that capture the guest's standard streams.
const (
	outputStdout = "stdout"
	outputStderr = "stderr"
)

// run opens the program and inputs, runs them, seals the outputs and wipes
// every plaintext buffer it made (best effort: the Go runtime may have
// copied them).
func (c *core) run(ctx context.Context, r Runner, spec runSpec) (*runOutcome, error) {
	defer c.wipe() // nothing kept from the uploads outlives the run
	cfg := &isolate.Config{
		Name:          spec.programName,
		Memory:        spec.memory,
		Timeout:       spec.timeout,
		MaxOutput:     spec.maxOutput,
		Deterministic: spec.deterministic,
		Engine:        spec.engine,
		Seed:          protocol.Seed(c.policyHash, cmp.Or(spec.replicaSet, c.id)),
		HostCalls:     spec.hostCalls,
	}
	if p := spec.program; spec.sealedProgram != nil {
		// Sealed: the brokers release the key to this session's HPKE
		// key, bound in fresh evidence; it goes to the worker only in
		// the secret-material frame (decision 0072) and is zeroed after.
		key, err := spec.obtainKey(ctx, spec.sealedProgram, c.releaseIsolate(spec.node))
		if err != nil {
			return nil, fmt.Errorf("program %q: the key of the sealed program: %w", spec.programName, err)
		}
		defer clear(key[:])
		cfg.SealedModule, cfg.ModuleKey, cfg.ModuleSHA256 = &isolate.Input{Path: p.path}, key, spec.programSHA256
	} else if p.stream != nil {
		// Streamed: the worker opens it (isolate, decision 0072).
		key, err := c.streamKey(true, spec.programName, p.stream.KeyEnvelope)
		if err != nil {
			return nil, fmt.Errorf("program %q: %w", spec.programName, err)
		}
		defer clear(key[:])
		cfg.SealedModule, cfg.ModuleKey, cfg.ModuleSHA256 = &isolate.Input{Path: p.path}, key, spec.programSHA256
	} else {
		prog, err := c.take(protocol.KindProgram, spec.programName, p.envelope)
		if err != nil {
			return nil, fmt.Errorf("program %q: %w", spec.programName, err)
		}
		defer clear(prog)
		cfg.Module = prog
	}
	inputDigests := map[string]string{}
	for _, in := range spec.inputs {
		if in.stream != nil {
			key, err := c.streamKey(false, in.name, in.stream.KeyEnvelope)
			if err != nil {
				return nil, fmt.Errorf("input %q: %w", in.name, err)
			}
			defer clear(key[:])
			cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: in.name, Path: in.path, Key: key})
			continue
		}
		if in.path != "" {
			cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: in.name, Path: in.path})
			continue
		}
		pt, err := c.take(protocol.KindInput, in.name, in.envelope)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.name, err)
		}
		defer clear(pt)
		if spec.replicaSet != "" {
			sum := sha256.Sum256(pt)
			inputDigests[in.name] = hex.EncodeToString(sum[:])
		}
		cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: in.name, Data: pt})
	}
	res, err := r.Run(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("isolate: %w", err)
	}
	defer res.Close()
	defer func() {
		clear(res.Stdout)
		clear(res.Stderr)
	}()
	out := &runOutcome{report: res.Report, sealed: map[string]map[string][]byte{}, streamed: map[string]*outputStream{}}
	if spec.replicaSet != "" {
		if out.replicaDigest, err = replicaDigest(spec, inputDigests, res); err != nil {
			return nil, err
		}
	}
	// Output hashes in the report would let anyone who sees the status
	// confirm a guess of a result; the report keeps only names and sizes.
	for i := range out.report.Outputs {
		out.report.Outputs[i].SHA256 = ""
	}
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		return out, nil
	}
	produced := map[string]*isolate.Output{}
	for i := range res.Outputs {
		produced[res.Outputs[i].Name] = &res.Outputs[i]
	}
	named := map[string]bool{}
	for _, o := range spec.outputs {
		named[o.name] = true
		var data []byte
		po, ok := produced[o.name]
		switch {
		case ok && spec.sink != nil && po.Size >= spec.sink.above:
			so, err := c.sealOutput(spec.sink, o.name, po.Open(), o.readers)
			if err != nil {
				out.removeStreamed(spec.sink)
				return nil, err
			}
			out.streamed[o.name] = so
			continue
		case ok:
			if data, err = po.Bytes(); err != nil {
				out.removeStreamed(spec.sink)
				return nil, err
			}
			defer clear(data)
		case o.name == outputStdout:
			data = res.Stdout
		case o.name == outputStderr:
			data = res.Stderr
		default:
			out.missing = append(out.missing, o.name)
			continue
		}
		if data == nil {
			data = []byte{}
		}
		out.sealed[o.name] = map[string][]byte{}
		for _, rd := range o.readers {
			env, err := seal.Seal(rd.key, data, protocol.SealInfo(protocol.KindOutput, c.id, o.name, rd.id), protocol.SealAAD(c.policyHash))
			if err != nil {
				out.removeStreamed(spec.sink)
				return nil, fmt.Errorf("sealing output %q to reader %q: %w", o.name, rd.id, err)
			}
			out.sealed[o.name][rd.id] = env
		}
	}
	for name := range produced {
		if !named[name] {
			out.dropped++
		}
	}
	return out, nil
}

// removeStreamed removes the files of the outputs a run kept as sealed
// files (the run's outcome is not kept).
func (out *runOutcome) removeStreamed(sink *outputSink) {
	for _, so := range out.streamed {
		os.Remove(sink.path(so.SHA256))
	}
}
