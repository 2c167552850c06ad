// Package witness is a checkpoint witness of a Cloister ledger, in the
// shape of C2SP tlog-witness: it follows the ledger's checkpoints (as a
// verifying client, from the genesis), checks that each is consistent with
// every checkpoint it cosigned before, and cosigns it (C2SP
// tlog-cosignature, verify.Cosign). Anyone may submit a checkpoint to it
// (POST /add-checkpoint): a checkpoint consistent with its view gets a
// cosignature, one that is not — a split view, shown to one client and
// not to the witness — is refused and kept as evidence of a fork, signed
// by the validators themselves.
//
// Clients that require a witness (client.WithWitness) accept a checkpoint
// only once that witness cosigned it, so validators that all collude
// cannot show two clients two histories without the witness noticing.
package witness

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Config configures a Witness.
type Config struct {
	// Ledger is a client of the ledger the witness follows; make it with
	// client.WithGenesis to pin the genesis instead of trusting it on
	// first use.
	Ledger *client.Client
	// Key signs cosignatures; Name is the witness's name in them
	// (default: "witness-" and 8 hex digits of the key's hash).
	Key  ed25519.PrivateKey
	Name string
	// Dir keeps the witness's state: the ledger client's state
	// (ledger.json), the latest cosigned checkpoint (checkpoint) and fork
	// evidence (forks/).
	Dir    string
	Logger *slog.Logger
	// Now is the clock of cosignatures (default time.Now).
	Now func() time.Time
}

// Witness follows one ledger.
type Witness struct {
	cfg Config
	id  verify.Witness

	mu     sync.Mutex
	latest []byte // the latest cosigned checkpoint: validators' note plus our line
	cp     *verify.Checkpoint
	forks  int
}

// DefaultName is the witness name derived from its key.
func DefaultName(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return "witness-" + hex.EncodeToString(h[:4])
}

// New opens the witness's state in cfg.Dir.
func New(cfg Config) (*Witness, error) {
	if cfg.Ledger == nil || len(cfg.Key) != ed25519.PrivateKeySize || cfg.Dir == "" {
		return nil, errors.New("witness: a ledger client, an Ed25519 key and a state directory are required")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName(cfg.Key.Public().(ed25519.PublicKey))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "forks"), 0o700); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	w := &Witness{cfg: cfg, id: verify.Witness{Name: cfg.Name, Key: cfg.Key.Public().(ed25519.PublicKey)}}
	if _, err := verify.ParseWitnessKey(w.id.VerifierKey()); err != nil {
		return nil, fmt.Errorf("witness name %q: %w", cfg.Name, err)
	}
	b, err := os.ReadFile(w.path("checkpoint"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("witness: %w", err)
	default:
		if _, err := verify.CheckCosignature(b, &w.id); err != nil {
			return nil, fmt.Errorf("witness: stored checkpoint: %w", err)
		}
		if w.cp, err = verify.ParseCheckpointNote(b); err != nil {
			return nil, fmt.Errorf("witness: stored checkpoint: %w", err)
		}
		w.latest = b
	}
	entries, _ := os.ReadDir(w.path("forks"))
	w.forks = len(entries)
	return w, nil
}

func (w *Witness) path(name string) string { return filepath.Join(w.cfg.Dir, name) }

// VerifierKey is the key clients require (client.WithWitness).
func (w *Witness) VerifierKey() string { return w.id.VerifierKey() }

// Latest returns the latest cosigned checkpoint (nil before the first).
func (w *Witness) Latest() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Forks is the number of forks the witness has evidence of.
func (w *Witness) Forks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.forks
}

// Poll follows the ledger once: it verifies the ledger's latest
// checkpoint as a client (validator set followed from the genesis,
// consistency with the last one it trusted) and adds it.
func (w *Witness) Poll(ctx context.Context) error {
	res, err := w.cfg.Ledger.Verify(ctx, w.path("ledger.json"), nil)
	if err != nil {
		if errors.Is(err, verify.ErrInconsistent) || errors.Is(err, verify.ErrRewound) {
			w.cfg.Logger.Error("witness: the ledger's checkpoint contradicts one trusted before", "err", err)
		}
		return err
	}
	_, err = w.add(ctx, res.Checkpoint, nil, true)
	return err
}

// Run polls every interval until ctx ends, logging failures.
func (w *Witness) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("witness: following the ledger", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ErrConflict: the submitter's idea of the witness's size is not the
// witness's (C2SP: 409, answer with the size).
type ErrConflict struct{ Size uint64 }

func (e *ErrConflict) Error() string {
	return fmt.Sprintf("the witness's latest checkpoint has size %d", e.Size)
}

// Add is POST /add-checkpoint's logic: cp (opened against the ledger's
// validator set by the caller) extends the latest cosigned checkpoint by
// proof (from old, which must be the witness's size). It returns the
// cosignature line. A checkpoint that contradicts the witness's is kept as
// fork evidence and refused with verify.ErrInconsistent.
func (w *Witness) Add(ctx context.Context, old uint64, cp *verify.Checkpoint, proof *verify.ConsistencyProof) ([]byte, error) {
	w.mu.Lock()
	size := uint64(0)
	if w.cp != nil {
		size = w.cp.Size
	}
	w.mu.Unlock()
	if old != size {
		return nil, &ErrConflict{Size: size}
	}
	return w.add(ctx, cp, proof, false)
}

// add cosigns cp if it is consistent with the latest cosigned checkpoint:
// by proof if given, else by a proof fetched from the ledger (fetch).
func (w *Witness) add(ctx context.Context, cp *verify.Checkpoint, proof *verify.ConsistencyProof, fetch bool) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cp != nil {
		if cp.Size < w.cp.Size {
			if !fetch {
				return nil, fmt.Errorf("checkpoint of size %d is older than the witness's %d", cp.Size, w.cp.Size)
			}
			// Following: the ledger's latest trails ours (we were
			// handed a newer one). Check it is a prefix.
			p, err := w.cfg.Ledger.ConsistencyProof(ctx, cp.Size, w.cp.Size)
			if err == nil {
				err = verify.CheckConsistency(p, cp, w.cp)
			}
			if err != nil {
				return nil, w.fork(cp, err)
			}
			return nil, nil
		}
		if fetch && cp.Size > w.cp.Size && w.cp.Size > 0 {
			var err error
			if proof, err = w.cfg.Ledger.ConsistencyProof(ctx, w.cp.Size, cp.Size); err != nil {
				return nil, err
			}
		}
		if err := verify.CheckConsistency(proof, w.cp, cp); err != nil {
			if errors.Is(err, verify.ErrInconsistent) || errors.Is(err, verify.ErrRewound) {
				return nil, w.fork(cp, err)
			}
			return nil, err
		}
	}
	line, err := verify.Cosign(cp.Note, w.id.Name, w.cfg.Key, w.cfg.Now())
	if err != nil {
		return nil, err
	}
	if w.cp == nil || cp.Size > w.cp.Size {
		note := verify.AddCosignature(stripWitness(cp.Note, w.id.Name), line)
		if err := atomicfile.WriteFile(w.path("checkpoint"), note, 0o600); err != nil {
			return nil, err
		}
		w.latest, w.cp = note, cp
	}
	return line, nil
}

// forkEvidence is what the witness keeps of a fork: two checkpoints,
// each signed by validators, that cannot both be true.
type forkEvidence struct {
	Time      string `json:"time"`
	Reason    string `json:"reason"`
	Cosigned  string `json:"cosigned"`
	Offending string `json:"offending"`
}

// fork records evidence; the caller holds mu.
func (w *Witness) fork(cp *verify.Checkpoint, cause error) error {
	ev := forkEvidence{Time: verify.FormatTime(w.cfg.Now()), Reason: cause.Error(), Cosigned: string(w.latest), Offending: string(cp.Note)}
	b, _ := json.MarshalIndent(ev, "", "  ")
	sum := sha256.Sum256(cp.Note)
	name := w.path(filepath.Join("forks", hex.EncodeToString(sum[:8])+".json"))
	if _, err := os.Stat(name); err != nil {
		if werr := atomicfile.WriteFile(name, append(b, '\n'), 0o600); werr == nil {
			w.forks++
		}
	}
	w.cfg.Logger.Error("witness: FORK — a validator-signed checkpoint contradicts one this witness cosigned", "size", cp.Size, "evidence", name, "err", cause)
	return verify.Errorf(verify.ErrInconsistent, "the witness refuses: %v (evidence kept)", cause)
}

// stripWitness drops this witness's own lines from a note it is given
// back, so its stored checkpoint carries one cosignature of it.
func stripWitness(note []byte, name string) []byte {
	prefix := []byte("\u2014 " + name + " ")
	out := make([]byte, 0, len(note))
	for len(note) > 0 {
		i := 0
		for i < len(note) && note[i] != '\n' {
			i++
		}
		line := note[:min(i+1, len(note))]
		note = note[len(line):]
		if len(line) >= len(prefix) && string(line[:len(prefix)]) == string(prefix) {
			continue
		}
		out = append(out, line...)
	}
	return out
}
