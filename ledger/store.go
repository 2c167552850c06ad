package ledger

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// The store keeps the application's state in one bbolt file. Every block
// is written by one bbolt transaction in Commit, together with the height
// and root it produces, so after a crash the file holds exactly the state
// after some block H and Info tells CometBFT to replay from H+1.
//
// Buckets and their keys (integers are 8-byte big-endian):
//
//	meta         "height", "size", "root", "prev_size", "prev_root",
//	             "checkpoint_size", "chain_id", "validators",
//	             "rules" (the rule schedule, JSON; absent: version 1 from height 1)
//	entries      index -> height || tx, or its packed form (entrystore.go)
//	hashes       tlog stored-hash index -> 32-byte hash, leaf hashes (level 0)
//	             left out since decision 0173: they are the entries' hashes
//	nonces       submitter key (32) || nonce -> index, or, in stores made
//	             since decision 0173, its 16-byte hash -> uvarint(index) (nonces.go)
//	submitters   submitter key (32) -> index of its first entry; only in
//	             stores whose nonces are hashed
//	nodes        platform key (32) -> index of the latest registration
//	sessions     node key (32) || session id -> index || policy hash (32)
//	grants       index -> owner key (32) || revoked-by index (0: live) || resource
//	acl_owners   resource -> owner key (32)
//	checkpoints  size -> cosigned checkpoint note
//	artifacts, acl_grants, acl_delegations, acl_uses: see aclrules.go
//	members      see members.go
//	node_info, offers: see offers.go
//	market_requests, market_records: see market.go
//	models, model_calls, model_budget: see models.go
//	rule_votes   see rules.go
//	validator_proposals, validator_changes: see governance.go
//	piee_operators, piee_epochs, piee_rounds, piee_verdicts, piee_scores: see piee.go
//	key_rotations, key_principals: see keyrotation.go
//	reference_values: see evidencerules.go
var (
	bucketMeta        = []byte("meta")
	bucketEntries     = []byte("entries")
	bucketHashes      = []byte("hashes")
	bucketNonces      = []byte("nonces")
	bucketNodes       = []byte("nodes")
	bucketSessions    = []byte("sessions")
	bucketGrants      = []byte("grants")
	bucketACLOwners   = []byte("acl_owners")
	bucketCheckpoints = []byte("checkpoints")
	bucketMembers     = []byte("members")
	bucketRuleVotes   = []byte("rule_votes")
	bucketArtifacts   = []byte("artifacts")
	bucketACLGrants   = []byte("acl_grants")
	bucketDelegations = []byte("acl_delegations")
	bucketACLUses     = []byte("acl_uses")
	allBuckets        = [][]byte{bucketMeta, bucketEntries, bucketHashes, bucketNonces, bucketNodes,
		bucketSessions, bucketGrants, bucketACLOwners, bucketCheckpoints, bucketMembers, bucketRuleVotes,
		bucketArtifacts, bucketACLGrants, bucketDelegations, bucketACLUses, bucketNodeInfo, bucketOffers,
		bucketMarketRequests, bucketMarketRecords, bucketValProposals, bucketValChanges,
		bucketModels, bucketModelCalls, bucketModelBudget,
		bucketPieeOperators, bucketPieeEpochs, bucketPieeRounds, bucketPieeVerdicts, bucketPieeScores, bucketPieeBeacons,
		bucketReplicaSets, bucketKeyRotations, bucketKeyPrincipals, bucketReferenceValues, bucketWorkflows}
	// appendOnly buckets get keys in increasing order; bbolt packs their
	// pages full instead of leaving room for inserts.
	appendOnly = map[string]bool{"entries": true, "hashes": true, "checkpoints": true}
)

var (
	metaHeight         = []byte("height")
	metaSize           = []byte("size")
	metaRoot           = []byte("root")
	metaPrevSize       = []byte("prev_size")
	metaPrevRoot       = []byte("prev_root")
	metaCheckpointSize = []byte("checkpoint_size")
	metaChainID        = []byte("chain_id")
	metaValidators     = []byte("validators")
	metaRules          = []byte("rules")
)

// committedState is what the last committed block left: the log size and
// root after it, and the same for the block before (the checkpoint a block
// carries is of the log two blocks back, see checkpoint.go).
type committedState struct {
	Height         int64
	Size           uint64
	Root           tlog.Hash
	PrevSize       uint64
	PrevRoot       tlog.Hash
	CheckpointSize uint64 // size of the latest stored cosigned checkpoint
	HasCheckpoint  bool
}

type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         2 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 64 << 20,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("ledger store %s is locked: another process is running this ledger", path)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			// A new store keys its replay index by hash (nonces.go).
			if _, err := tx.CreateBucket(bucketSubmitters); err != nil {
				return err
			}
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger store %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func be64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func getU64(b []byte) (uint64, bool) {
	if len(b) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// reader reads committed state inside one bbolt read transaction, so
// everything it returns belongs to the same block.
type reader struct {
	tx *bolt.Tx
}

func (s *store) view(fn func(r reader) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(reader{tx}) })
}

func (r reader) get(bucket, key []byte) []byte { return r.tx.Bucket(bucket).Get(key) }

func (r reader) state() (committedState, error) {
	var st committedState
	m := r.tx.Bucket(bucketMeta)
	h, _ := getU64(m.Get(metaHeight))
	st.Height = int64(h)
	st.Size, _ = getU64(m.Get(metaSize))
	st.PrevSize, _ = getU64(m.Get(metaPrevSize))
	st.Root = emptyRoot
	st.PrevRoot = emptyRoot
	if b := m.Get(metaRoot); b != nil {
		if len(b) != 32 {
			return st, errors.New("ledger store: corrupt root in meta")
		}
		copy(st.Root[:], b)
	}
	if b := m.Get(metaPrevRoot); b != nil {
		if len(b) != 32 {
			return st, errors.New("ledger store: corrupt previous root in meta")
		}
		copy(st.PrevRoot[:], b)
	}
	if b := m.Get(metaCheckpointSize); b != nil {
		st.CheckpointSize, st.HasCheckpoint = getU64(b)
	}
	return st, nil
}

// entry returns the stored transaction at index i and its block height.
// The returned slice is only valid inside the read transaction.
// (entrystore.go: the stored form is shorter than tx.)
func (r reader) entry(i uint64) (height int64, tx []byte, ok bool) {
	e, ok := r.storedEntry(i)
	return e.height, e.tx, ok
}

// entriesFrom reads the stored entries from index from on, in log order,
// calling f with each until f returns false or the log ends; each after
// the first is read with the one before as its predecessor, so a run of
// batch members is decoded once, not once per member (entrystore.go). It
// returns the index of an entry it could not read, and false; or true.
func (r reader) entriesFrom(from uint64, f func(i uint64, e *storedEntry) bool) (uint64, bool) {
	b := r.tx.Bucket(bucketEntries)
	get := func(i uint64) []byte { return b.Get(be64(i)) }
	var prev *storedEntry
	c := b.Cursor()
	for k, v := c.Seek(be64(from)); k != nil; k, v = c.Next() {
		i, _ := getU64(k)
		var e storedEntry
		var ok bool
		if prev != nil && i > 0 {
			e, ok = decodeStoredEntry(v, func() (*storedEntry, bool) { return prev, true })
		} else {
			e, ok = loadStoredEntry(get, i)
		}
		if !ok {
			return i, false
		}
		if !f(i, &e) {
			break
		}
		prev = &e
	}
	return 0, true
}

// storedEntry is entry i as stored (entrystore.go).
func (r reader) storedEntry(i uint64) (storedEntry, bool) {
	b := r.tx.Bucket(bucketEntries)
	return loadStoredEntry(func(i uint64) []byte { return b.Get(be64(i)) }, i)
}

func (r reader) checkpoint(size uint64) []byte {
	return r.tx.Bucket(bucketCheckpoints).Get(be64(size))
}

// hashes is the tlog.HashReader over committed stored hashes.
func (r reader) hashes() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(idx, func(k []byte) []byte { return r.tx.Bucket(bucketHashes).Get(k) },
			func(n uint64) ([]byte, bool) {
				_, tx, ok := r.entry(n)
				return tx, ok
			}, nil)
	})
}

// readHashes reads the stored hashes idx. A leaf hash (level 0) is not
// stored since decision 0173 (stores from before hold them, and they are
// used): it is the hash of the entry, from leaves (the block's own) or
// from entry.
func readHashes(idx []int64, get func([]byte) []byte, entry func(uint64) ([]byte, bool), leaves map[uint64]tlog.Hash) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		v := get(be64(uint64(x)))
		if len(v) == tlog.HashSize {
			copy(out[i][:], v)
			continue
		}
		level, n := tlog.SplitStoredHashIndex(x)
		if level != 0 {
			return nil, fmt.Errorf("ledger store: stored hash %d missing", x)
		}
		if h, ok := leaves[uint64(n)]; ok {
			out[i] = h
			continue
		}
		tx, ok := entry(uint64(n))
		if !ok {
			return nil, fmt.Errorf("ledger store: entry %d missing for its leaf hash", n)
		}
		out[i] = verify.LeafHash(tx)
	}
	return out, nil
}

// chainInfo is what InitChain learns once: the chain id, the validator
// set and the rule version of height 1. (The schedule grows later by
// rules.scheduled entries, written in the blocks that carry them.)
type chainInfo struct {
	ChainID    string            `json:"chain_id"`
	Validators []storedValidator `json:"validators"`
	Rules      ruleSchedule      `json:"rules"`
	Threshold  verify.Threshold  `json:"threshold"`
	// GenesisTime is the genesis time in verify.TimeLayout.
	GenesisTime string `json:"genesis_time"`
	// Epochs is the signing schedule (governance.go), loaded only.
	Epochs []epoch `json:"-"`
}

type storedValidator struct {
	PubKey []byte `json:"pub_key"`
	Power  int64  `json:"power"`
}

func (s *store) saveChain(ci chainInfo) error {
	b, err := json.Marshal(ci.Validators)
	if err != nil {
		return err
	}
	rules, err := json.Marshal(ci.Rules)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if err := m.Put(metaChainID, []byte(ci.ChainID)); err != nil {
			return err
		}
		if err := m.Put(metaRules, rules); err != nil {
			return err
		}
		thr, _ := json.Marshal(ci.Threshold)
		if err := m.Put(metaThreshold, thr); err != nil {
			return err
		}
		if err := m.Put(metaGenesisTime, []byte(ci.GenesisTime)); err != nil {
			return err
		}
		// The decided set and the signing schedule start as the genesis set.
		if err := m.Put(metaGenesisValidators, b); err != nil {
			return err
		}
		return m.Put(metaValidators, b)
	})
}

// loadChain returns the stored chain info, or ok=false before InitChain.
func (s *store) loadChain() (ci chainInfo, ok bool, err error) {
	err = s.view(func(r reader) error {
		ci, ok, err = r.chain()
		return err
	})
	return ci, ok, err
}

// chain is loadChain inside a transaction.
func (r reader) chain() (ci chainInfo, ok bool, err error) {
	err = func() error {
		m := r.tx.Bucket(bucketMeta)
		id, vals := m.Get(metaChainID), m.Get(metaValidators)
		if id == nil || vals == nil {
			return nil
		}
		ok = true
		ci.ChainID = string(id)
		if ci.Rules, err = parseSchedule(m.Get(metaRules)); err != nil {
			return err
		}
		ci.Threshold = readThreshold(func(b, k []byte) []byte { return r.get(b, k) })
		ci.GenesisTime = string(m.Get(metaGenesisTime))
		if err := json.Unmarshal(vals, &ci.Validators); err != nil {
			return err
		}
		ci.Epochs, err = parseEpochs(m.Get(metaEpochs), func() ([]storedValidator, error) { return ci.Validators, nil })
		return err
	}()
	return ci, ok, err
}

func (ci chainInfo) keys() []validatorKey {
	out := make([]validatorKey, len(ci.Validators))
	for i, v := range ci.Validators {
		out[i] = validatorKey{pub: ed25519.PublicKey(v.PubKey), power: v.Power}
	}
	return out
}

// blockBatch collects a block's writes, bucket by bucket; the block's
// validation reads through it (blockView), and Commit writes it at once.
type blockBatch struct {
	puts map[string]map[string][]byte
	// leaves are the leaf hashes of the block's entries, which the tree
	// reads while the block appends and the store does not keep.
	leaves map[uint64]tlog.Hash
}

func newBlockBatch() *blockBatch {
	return &blockBatch{puts: map[string]map[string][]byte{}, leaves: map[uint64]tlog.Hash{}}
}

func (b *blockBatch) put(bucket, key, value []byte) {
	m := b.puts[string(bucket)]
	if m == nil {
		m = map[string][]byte{}
		b.puts[string(bucket)] = m
	}
	m[string(key)] = value
}

// commit writes the batch and the new state in one transaction.
func (s *store) commit(b *blockBatch, st committedState) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for name, kv := range b.puts {
			bk := tx.Bucket([]byte(name))
			if bk == nil {
				return fmt.Errorf("ledger store: no bucket %s", name)
			}
			if appendOnly[name] {
				bk.FillPercent = 1.0
			}
			keys := make([]string, 0, len(kv))
			for k := range kv {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				if err := bk.Put([]byte(k), kv[k]); err != nil {
					return err
				}
			}
		}
		m := tx.Bucket(bucketMeta)
		for _, kv := range []struct{ k, v []byte }{
			{metaHeight, be64(uint64(st.Height))},
			{metaSize, be64(st.Size)},
			{metaRoot, st.Root[:]},
			{metaPrevSize, be64(st.PrevSize)},
			{metaPrevRoot, st.PrevRoot[:]},
		} {
			if err := m.Put(kv.k, kv.v); err != nil {
				return err
			}
		}
		if st.HasCheckpoint {
			if err := m.Put(metaCheckpointSize, be64(st.CheckpointSize)); err != nil {
				return err
			}
		}
		return nil
	})
}

// blockView reads the committed state with the current block's writes on
// top, for validating the block's entries in order.
type blockView struct {
	r     reader
	batch *blockBatch
}

func (v blockView) get(bucket, key []byte) []byte {
	if v.batch != nil {
		if m := v.batch.puts[string(bucket)]; m != nil {
			if val, ok := m[string(key)]; ok {
				return val
			}
		}
	}
	return v.r.get(bucket, key)
}

// entryTx is the transaction of entry i, committed or in the block.
func (v blockView) entryTx(i uint64) ([]byte, bool) {
	e, ok := v.storedEntry(i)
	return e.tx, ok
}

// storedEntry is entry i as stored, committed or in the block.
func (v blockView) storedEntry(i uint64) (storedEntry, bool) {
	return loadStoredEntry(func(i uint64) []byte { return v.get(bucketEntries, be64(i)) }, i)
}

func (v blockView) hashes() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		var leaves map[uint64]tlog.Hash
		if v.batch != nil {
			leaves = v.batch.leaves
		}
		return readHashes(idx, func(k []byte) []byte { return v.get(bucketHashes, k) }, v.entryTx, leaves)
	})
}
