package node

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
)

// Session state on disk, under DATA/sessions/<id>/:
//
//	state.sealed      the record below, JSON, AES-256-GCM under the storage key,
//	                  holding envelopes of up to 64 KiB inline
//	blob-<sha256>     larger envelopes as received or produced (already
//	                  HPKE-sealed to the session key or to a reader; never
//	                  plaintext)
//
// and DATA/sessions/<id>.closed, a tombstone naming who closed it and when.
// Every file is written to a temporary name, synced and renamed, so a crash
// leaves either the old or the new version, never half of one.

const (
	stateFile     = "state.sealed"
	stateMagic    = "CLSS"
	stateVersion  = 1
	tombstoneExt  = ".closed"
	storageKeyLbl = "cloister/v1/node-storage-key"
)

// Session states as stored (and as the API enum names them).
const (
	stateProvisioning = "provisioning"
	stateRunning      = "running"
	stateFinished     = "finished"
	stateFailed       = "failed"
	stateClosed       = "closed"
)

// record is one session's durable state. It holds the session's private
// keys, so it is only ever written sealed.
type record struct {
	Version   int                      `json:"version"`
	ID        string                   `json:"id"`
	Policy    []byte                   `json:"policy"`
	Created   time.Time                `json:"created"`
	Keys      coreKeys                 `json:"keys"`
	State     string                   `json:"state"`
	Reason    string                   `json:"reason,omitempty"`
	Programs  map[string]*slotRecord   `json:"programs"`
	Inputs    map[string]*slotRecord   `json:"inputs"`
	Outputs   map[string]*outputRecord `json:"outputs"`
	Report    *isolate.Report          `json:"report,omitempty"`
	Events    []eventRecord            `json:"events"`
	Restarted int                      `json:"restarted,omitempty"` // runs restarted after a node restart
}

type slotRecord struct {
	Principal      string    `json:"principal"`
	EnvelopeSHA256 string    `json:"envelope_sha256"`
	Inline         []byte    `json:"inline,omitempty"` // the envelope, when small enough to live in the state
	Uploaded       time.Time `json:"uploaded"`
	Signature      []byte    `json:"signature"`
}

type outputRecord struct {
	// Envelopes maps reader id to the blob hash of the output sealed to it.
	Envelopes map[string]string `json:"envelopes"`
	// Inline maps reader id to the envelope itself when it is small.
	Inline  map[string][]byte `json:"inline,omitempty"`
	Fetched []string          `json:"fetched,omitempty"`
}

type eventRecord struct {
	Kind        string    `json:"kind"`
	Principal   string    `json:"principal,omitempty"`
	Name        string    `json:"name,omitempty"`
	Time        time.Time `json:"time"`
	LedgerIndex uint64    `json:"ledger_index,omitempty"`
}

type tombstone struct {
	ID     string    `json:"id"`
	Closed time.Time `json:"closed"`
	By     string    `json:"by"`
}

// store keeps session records and blobs under one directory.
type store struct {
	dir  string
	aead cipher.AEAD
	sync bool
}

// deriveStorageKey derives the AES-256 key that seals session state from
// the node's platform key seed: whoever can read platform.key can read the
// state anyway (it can impersonate the node), and nothing else can.
func deriveStorageKey(platformSeed []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, platformSeed, nil, storageKeyLbl, 32)
}

func openStore(dir string, key []byte, sync bool) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("session store %s: %w", dir, err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	return &store{dir: dir, aead: aead, sync: sync}, nil
}

func (s *store) sessionDir(id string) string { return filepath.Join(s.dir, id) }

func stateAAD(id string) []byte { return []byte("cloister/v1/session-state\x00" + id) }

// save writes rec sealed, atomically.
func (s *store) save(rec *record) error {
	plain, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding session %s: %w", rec.ID, err)
	}
	defer clear(plain)
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	out := make([]byte, 0, len(stateMagic)+1+len(nonce)+len(plain)+s.aead.Overhead())
	out = append(out, stateMagic...)
	out = append(out, stateVersion)
	out = append(out, nonce...)
	out = s.aead.Seal(out, nonce, plain, stateAAD(rec.ID))
	dir := s.sessionDir(rec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return s.writeAtomic(filepath.Join(dir, stateFile), out, true)
}

// load reads and unseals one session's record.
func (s *store) load(id string) (*record, error) {
	data, err := os.ReadFile(filepath.Join(s.sessionDir(id), stateFile))
	if err != nil {
		return nil, err
	}
	hdr := len(stateMagic) + 1 + s.aead.NonceSize()
	if len(data) < hdr+s.aead.Overhead() || string(data[:len(stateMagic)]) != stateMagic {
		return nil, fmt.Errorf("session %s: %s is not a sealed session state", id, stateFile)
	}
	if v := data[len(stateMagic)]; v != stateVersion {
		return nil, fmt.Errorf("session %s: state format version %d, this node reads %d", id, v, stateVersion)
	}
	plain, err := s.aead.Open(nil, data[len(stateMagic)+1:hdr], data[hdr:], stateAAD(id))
	if err != nil {
		return nil, fmt.Errorf("session %s: state does not open with this node's storage key (another platform key, or modified)", id)
	}
	defer clear(plain)
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil {
		return nil, fmt.Errorf("session %s: decoding state: %w", id, err)
	}
	if rec.ID != id || rec.Version != stateVersion {
		return nil, fmt.Errorf("session %s: state names session %q version %d", id, rec.ID, rec.Version)
	}
	return &rec, nil
}

// putBlob stores an envelope and returns its hex SHA-256.
func (s *store) putBlob(id string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	dir := s.sessionDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// No directory sync here: blobs are only referenced by a state file
	// saved afterwards in the same directory, whose directory sync makes
	// both renames durable.
	return h, s.writeAtomic(filepath.Join(dir, "blob-"+h), data, false)
}

// inlineMax is the largest envelope kept inside the state record instead of
// its own blob file: one file write and its fsync fewer per small upload.
const inlineMax = 64 << 10

// putEnvelope stores an envelope: small ones are returned to be kept in
// the record (inline), larger ones are written as blobs.
func (s *store) putEnvelope(id string, data []byte) (sha string, inline []byte, err error) {
	if len(data) <= inlineMax {
		sum := sha256.Sum256(data)
		return hex.EncodeToString(sum[:]), bytes.Clone(data), nil
	}
	sha, err = s.putBlob(id, data)
	return sha, nil, err
}

// getEnvelope returns an envelope stored by putEnvelope.
func (s *store) getEnvelope(id, sha string, inline []byte) ([]byte, error) {
	if inline == nil {
		return s.getBlob(id, sha)
	}
	if sum := sha256.Sum256(inline); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("session %s: stored envelope %.12s is corrupt", id, sha)
	}
	return inline, nil
}

// getBlob reads an envelope back and checks it is the one stored.
func (s *store) getBlob(id, sha string) ([]byte, error) {
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("session %s: bad blob name %q", id, sha)
	}
	data, err := os.ReadFile(filepath.Join(s.sessionDir(id), "blob-"+sha))
	if err != nil {
		return nil, fmt.Errorf("session %s: reading stored envelope: %w", id, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("session %s: stored envelope %s is corrupt", id, sha[:12])
	}
	return data, nil
}

// erase removes everything stored for a session and leaves a tombstone.
// Files are overwritten with zeros before removal; on copy-on-write or
// flash storage that is best effort, which is why everything in them is
// sealed in the first place.
func (s *store) erase(id string, ts tombstone) error {
	dir := s.sessionDir(id)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				f.Write(make([]byte, fi.Size()))
				f.Close()
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("erasing session %s: %w", id, err)
	}
	b, _ := json.Marshal(ts)
	return s.writeAtomic(filepath.Join(s.dir, id+tombstoneExt), b, true)
}

// list returns the ids of stored sessions and of tombstones.
func (s *store) list() (live []string, closed []tombstone, err error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir() && protocol.ValidSessionID(name) == nil:
			live = append(live, name)
		case strings.HasSuffix(name, tombstoneExt):
			b, err := os.ReadFile(filepath.Join(s.dir, name))
			if err != nil {
				continue
			}
			var ts tombstone
			if json.Unmarshal(b, &ts) == nil && protocol.ValidSessionID(ts.ID) == nil {
				closed = append(closed, ts)
			}
		}
	}
	return live, closed, nil
}

// writeAtomic writes data to path through a temporary file and a rename.
// With s.sync the file is fsynced before the rename and, if syncDir, the
// directory after it.
func (s *store) writeAtomic(path string, data []byte, syncDir bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if s.sync {
		if err := tmp.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if s.sync && syncDir {
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}
