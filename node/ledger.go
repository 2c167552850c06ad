package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// RegistrationFile, under the data directory, remembers where the node's
// node.registered entry sits, so that a restart does not register again.
const RegistrationFile = "ledger-registration.json"

// recordTimeout bounds one ledger append made while a session's lock is
// held: a slow or unreachable ledger delays a step by at most this, then
// the event is logged as not recorded (the node's own state stays
// authoritative).
const recordTimeout = 10 * time.Second

// ledgerLog is the EventLog over a ledger: each event becomes an entry
// signed by the platform key.
type ledgerLog struct {
	app ledger.Appender
	key ed25519.PrivateKey
}

func (l *ledgerLog) Record(ctx context.Context, kind string, body any) (uint64, error) {
	se, err := verify.NewEntry(l.key, verify.Kind(kind), body)
	if err != nil {
		return 0, err
	}
	return l.append(ctx, se)
}

// RecordNumbered uses number as the entry's nonce: the ledger refuses a
// second entry with the same (submitter, nonce), whatever its time, so an
// entry signed again after a restart (with the current time, as the
// ledger's time window requires) is recorded at most once.
func (l *ledgerLog) RecordNumbered(ctx context.Context, kind string, body json.RawMessage, number uint64) (uint64, error) {
	se, err := verify.NewEntryWithNonce(l.key, verify.Kind(kind), body, number, time.Now())
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return l.append(ctx, se)
}

func (l *ledgerLog) append(ctx context.Context, se *verify.SignedEntry) (uint64, error) {
	rc, err := l.app.Append(ctx, se)
	var rej *verify.RejectedError
	switch {
	case err == nil:
		return rc.Index, nil
	case !errors.As(err, &rej):
		return 0, err
	case rej.Code == verify.CodeReplay && rej.HeldBy != nil && !rej.SameEntry:
		return 0, fmt.Errorf("%w: %v", ErrNumberTaken, rej)
	case rej.Code == verify.CodeReplay && rej.HeldBy != nil:
		return *rej.HeldBy, fmt.Errorf("%w: %v", ErrAlreadyRecorded, rej)
	case rej.Code == verify.CodeReplay:
		// A repeat refused by the kind's own rule (a session created
		// twice, a grant revoked twice): what the entry says is already
		// recorded. A used nonce always comes with its holder (held_by),
		// also when two copies reached the ledger together.
		return 0, fmt.Errorf("%w: %v", ErrAlreadyRecorded, rej)
	case rej.Code == verify.CodeMissingReference, rej.Code == verify.CodeStaleTime, rej.Code == verify.CodeUnavailable:
		return 0, err // may pass later
	default:
		return 0, fmt.Errorf("%w: %v", ErrRefused, rej)
	}
}

// registration is RegistrationFile's content.
type registration struct {
	Ledger      string    `json:"ledger"`
	PlatformKey string    `json:"platform_key"`
	Index       uint64    `json:"index"`
	Height      int64     `json:"height"`
	LeafHash    string    `json:"leaf_hash"`
	Time        time.Time `json:"time"`
	// Endpoint is the node's endpoint on the ledger, as registered or
	// last moved by a node.endpoint entry.
	Endpoint string `json:"endpoint,omitempty"`
}

// register puts the node's node.registered entry on the ledger, unless
// RegistrationFile says it is already there (same ledger, same key). The
// body is {"platform_key","class","evidence"}: evidence is the base64 of
// the JSON attest.Evidence its attester produced over
// protocol.RegistrationReportData.
func (n *Node) register(ctx context.Context) error {
	path := filepath.Join(n.opts.DataDir, RegistrationFile)
	pub := n.PlatformKey()
	pk := protocol.FormatEd25519Key(pub)
	if b, err := os.ReadFile(path); err == nil {
		var r registration
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("node: %s: %w (remove it to register again)", path, err)
		}
		if r.Ledger == n.opts.LedgerName && r.PlatformKey == pk {
			n.registered = r.Index
			if n.opts.Endpoint != "" && n.opts.Endpoint != r.Endpoint {
				return n.moveEndpoint(ctx, path, r)
			}
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("node: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, err := n.attester.Attest(ctx, protocol.RegistrationReportData(pub))
	if err != nil {
		return fmt.Errorf("node: registration evidence: %w", err)
	}
	evj, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	body := map[string]any{"platform_key": pk, "class": string(n.class), "evidence": base64.StdEncoding.EncodeToString(evj)}
	if n.opts.Endpoint != "" {
		body["endpoint"] = n.opts.Endpoint
	}
	if n.opts.Organisation != nil {
		body["organisation"] = protocol.FormatEd25519Key(n.opts.Organisation)
	}
	se, err := verify.NewEntry(n.platform.Signer(), ledger.KindNodeRegistered, body)
	if err != nil {
		return fmt.Errorf("node: registration entry: %w", err)
	}
	rc, err := n.opts.Ledger.Append(ctx, se)
	if err != nil {
		return fmt.Errorf("node: registering on the ledger: %w", err)
	}
	r := registration{Ledger: n.opts.LedgerName, PlatformKey: pk, Index: rc.Index, Height: rc.Height,
		LeafHash: hex.EncodeToString(rc.LeafHash[:]), Time: time.Now().UTC(), Endpoint: n.opts.Endpoint}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.registered = rc.Index
	n.log.Info("registered on the ledger", "ledger", n.opts.LedgerName, "index", rc.Index, "height", rc.Height)
	return nil
}

// RegistrationIndex returns the ledger index of the node's node.registered
// entry, and false when the node runs without a ledger.
func (n *Node) RegistrationIndex() (uint64, bool) {
	return n.registered, n.opts.Ledger != nil
}

// moveEndpoint records the node's new endpoint with a node.endpoint entry
// and remembers it in RegistrationFile. The organisation a node registered
// with stays: the ledger has no entry that changes it.
func (n *Node) moveEndpoint(ctx context.Context, path string, r registration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	se, err := verify.NewEntry(n.platform.Signer(), ledger.KindNodeEndpoint, map[string]any{"endpoint": n.opts.Endpoint})
	if err != nil {
		return fmt.Errorf("node: endpoint entry: %w", err)
	}
	rc, err := n.opts.Ledger.Append(ctx, se)
	if err != nil {
		return fmt.Errorf("node: moving the node's endpoint on the ledger: %w", err)
	}
	r.Endpoint = n.opts.Endpoint
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.log.Info("endpoint moved on the ledger", "endpoint", n.opts.Endpoint, "index", rc.Index)
	return nil
}
