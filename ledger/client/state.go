package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// State is what a verifying client trusts about one ledger, kept between
// runs in a JSON file: the pinned genesis, the validator set followed from
// it, and the last checkpoint verified. (Files written before sets could
// change hold a set pinned on first use and no genesis; Verify upgrades
// them when the server's genesis set is that set.)
type State struct {
	Version int    `json:"version"`
	Origin  string `json:"origin"`
	// Genesis is the pinned genesis; its hash is what an operator hands
	// out (--genesis).
	Genesis *verify.Genesis `json:"genesis,omitempty"`
	// SetVersion is the number of validator-set changes followed;
	// Validators the set they made. A server presenting another set
	// without a chain of approved changes to it fails verification; the
	// set is never replaced silently.
	SetVersion uint64               `json:"set_version,omitempty"`
	Validators *verify.ValidatorSet `json:"validator_set"`
	// PreviousSet is the set before the last change, which signed the
	// checkpoints made before the change took effect.
	PreviousSet *verify.ValidatorSet `json:"previous_set,omitempty"`
	// Checkpoint is the last verified checkpoint, the full signed note.
	Checkpoint string `json:"checkpoint"`
}

const (
	stateVersion  = 1
	maxStateBytes = 1 << 20
)

// StateError reports a state file that cannot be read, parsed or trusted,
// or cannot be written. Nothing was verified against it.
type StateError struct {
	Path string
	Err  error
	// Write is set when the file could not be written (after a successful
	// verification); otherwise it could not be read or trusted.
	Write bool
}

func (e *StateError) Error() string { return fmt.Sprintf("ledger state file %s: %v", e.Path, e.Err) }
func (e *StateError) Unwrap() error { return e.Err }

// DefaultStatePath is where the state of the ledger with this origin is
// kept when no path is given: <user config dir>/cloister/ledger-<first 16
// hex digits of SHA-256(origin)>.json (on Linux the config dir is
// $XDG_CONFIG_HOME or ~/.config).
func DefaultStatePath(origin string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("ledger state: no user config directory (give a state file path): %w", err)
	}
	sum := sha256.Sum256([]byte(origin))
	return filepath.Join(dir, "cloister", "ledger-"+hex.EncodeToString(sum[:8])+".json"), nil
}

// LoadState reads and checks a state file. It returns (nil, nil) if the
// file does not exist (first use). A file that exists but is not a valid,
// self-consistent state is a *StateError: its checkpoint must verify
// against its own validator set.
func LoadState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Path: path, Err: err}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, &StateError{Path: path, Err: err}
	}
	if len(b) > maxStateBytes {
		return nil, &StateError{Path: path, Err: fmt.Errorf("larger than %d bytes", maxStateBytes)}
	}
	s, err := parseState(b)
	if err != nil {
		return nil, &StateError{Path: path, Err: err}
	}
	return s, nil
}

func parseState(b []byte) (*State, error) {
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("not a ledger state file: %v", err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("version %d, this client reads version %d", s.Version, stateVersion)
	}
	if s.Validators == nil {
		return nil, errors.New(`missing "validator_set"`)
	}
	if err := s.Validators.Check(); err != nil {
		return nil, fmt.Errorf("validator_set: %v", err)
	}
	if s.Origin != s.Validators.Origin {
		return nil, fmt.Errorf("origin %q does not match the validator set's %q", s.Origin, s.Validators.Origin)
	}
	if s.Genesis != nil {
		if err := s.Genesis.Check(); err != nil {
			return nil, fmt.Errorf("genesis: %v", err)
		}
		if verify.Origin(s.Genesis.ChainID) != s.Origin {
			return nil, fmt.Errorf("genesis is of chain %q, the state of origin %q", s.Genesis.ChainID, s.Origin)
		}
	}
	if s.PreviousSet != nil {
		if err := s.PreviousSet.Check(); err != nil {
			return nil, fmt.Errorf("previous_set: %v", err)
		}
	}
	if _, err := s.TrustedCheckpoint(); err != nil {
		return nil, fmt.Errorf("checkpoint: %v", err)
	}
	return &s, nil
}

// membership is the state's followed set (nil Genesis: a set pinned on
// first use, before sets could change).
func (s *State) membership() *Membership {
	return &Membership{Genesis: s.Genesis, Version: s.SetVersion, Set: s.Validators, Previous: s.PreviousSet}
}

// TrustedCheckpoint returns the state's checkpoint, verified again against
// the followed set (or the one before it).
func (s *State) TrustedCheckpoint() (*verify.Checkpoint, error) {
	return openUnder([]byte(s.Checkpoint), s.membership())
}

// Save writes the state atomically and durably (internal/atomicfile) with
// mode 0600, creating the directory with mode 0700 if needed. A crash
// leaves the old file or the new one, never a mix.
func (s *State) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return &StateError{Path: path, Err: err, Write: true}
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return &StateError{Path: path, Err: err, Write: true}
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return &StateError{Path: path, Err: err, Write: true}
	}
	return nil
}

// OpenCheckpoint verifies a signed checkpoint against the state's
// followed validator set (or the set before its last change).
func (s *State) OpenCheckpoint(signed []byte) (*verify.Checkpoint, error) {
	return openUnder(signed, s.membership())
}
