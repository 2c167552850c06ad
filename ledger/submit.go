package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	mempl "github.com/cometbft/cometbft/mempool"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Append submits the entry to this validator's mempool (in process, no
// RPC), which gossips it to the other validators, and waits until a block
// that includes it is committed here.
func (ln *ledgerNode) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	if e == nil {
		return verify.Receipt{}, reject(verify.CodeMalformed, "nil entry")
	}
	return ln.submit(ctx, e.Encode())
}

// submit appends a transaction and waits for its commit.
func (ln *ledgerNode) submit(ctx context.Context, tx []byte) (verify.Receipt, error) {
	p, err := ln.enqueue(tx, true)
	if err != nil {
		return verify.Receipt{}, err
	}
	defer p.release()
	return p.wait(ctx)
}

// pendingTx is a transaction the mempool took, awaiting its block.
type pendingTx struct {
	ln        *ledgerNode
	tx        []byte
	hash      [32]byte
	ch        chan txOutcome // nil when not waiting
	duplicate bool           // the same bytes were submitted before
}

// enqueue hands tx to the mempool. A refusal by CheckTx comes back as a
// *verify.RejectedError; with track, the returned pendingTx can wait for the
// commit (call release when done).
func (ln *ledgerNode) enqueue(tx []byte, track bool) (*pendingTx, error) {
	p := &pendingTx{ln: ln, tx: tx, hash: txKey(tx)}
	if track {
		// Register before submitting: the commit may come before CheckTx returns.
		p.ch = ln.app.waiters.add(p.hash)
	}
	err := ln.checkTx(tx)
	var rej *verify.RejectedError
	if errors.As(err, &rej) && rej.Code == verify.CodeReplay {
		// Say which committed entry holds the nonce, and whether it is
		// this one signed again (the state machine's refusal does not).
		if c := ln.committedCopy(tx); c != nil && c.Code == verify.CodeReplay {
			err = c
		}
	}
	if err != nil {
		if errors.Is(err, mempl.ErrTxInCache) || errors.Is(err, mempl.ErrTxInMempool) {
			// Committed already, or still pending: then wait for the outcome
			// of the first copy.
			if rej := ln.committedCopy(tx); rej != nil {
				err = rej
			} else {
				p.duplicate, err = true, nil
			}
		}
	}
	if err != nil {
		p.release()
		return nil, err
	}
	return p, nil
}

func (ln *ledgerNode) checkTx(tx []byte) error {
	if !ln.node.IsRunning() {
		return fmt.Errorf("%w: the ledger node is stopped", verify.ErrUnavailable)
	}
	rr, err := ln.node.Mempool().CheckTx(tx, "")
	if err == nil {
		rr.Wait()
		if err = rr.Error(); err == nil {
			if res := rr.Response.GetCheckTx(); res != nil && res.Code != 0 {
				return &verify.RejectedError{Code: codeFromABCI(res.Code), Reason: res.Log}
			}
			return nil
		}
	}
	var invalid mempl.ErrInvalidTx
	var tooLarge mempl.ErrTxTooLarge
	var full mempl.ErrMempoolIsFull
	switch {
	case errors.As(err, &invalid):
		return &verify.RejectedError{Code: codeFromABCI(invalid.Code), Reason: invalid.Log}
	case errors.As(err, &tooLarge):
		return reject(verify.CodeTooLarge, "entry is %d bytes, limit %d", tooLarge.Actual, tooLarge.Max)
	case errors.As(err, &full):
		return fmt.Errorf("%w: mempool full, retry later", verify.ErrUnavailable)
	case errors.Is(err, mempl.ErrTxInCache), errors.Is(err, mempl.ErrTxInMempool):
		return err
	default:
		return fmt.Errorf("%w: mempool: %v", verify.ErrUnavailable, err)
	}
}

func (p *pendingTx) release() {
	if p.ch != nil {
		p.ln.app.waiters.remove(p.hash, p.ch)
		p.ch = nil
	}
}

// wait returns the receipt once the transaction's block is committed.
func (p *pendingTx) wait(ctx context.Context) (verify.Receipt, error) {
	select {
	case o := <-p.ch:
		if o.err != nil {
			return verify.Receipt{}, o.err
		}
		if o.rej != nil {
			return verify.Receipt{}, o.rej
		}
		if p.duplicate {
			rej := reject(verify.CodeReplay, "this entry was submitted twice; the first copy became entry %d", o.receipt.Index)
			idx := o.receipt.Index
			rej.HeldBy, rej.SameEntry = &idx, true
			return verify.Receipt{}, rej
		}
		return o.receipt, nil
	case <-ctx.Done():
		return verify.Receipt{}, fmt.Errorf("%w: entry not committed yet (%v); it may still be", verify.ErrUnavailable, ctx.Err())
	}
}

// committedCopy reports a replay if the entry's (submitter, nonce) is
// already in the log.
func (ln *ledgerNode) committedCopy(tx []byte) *verify.RejectedError {
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return reject(verify.CodeMalformed, "%v", err)
	}
	pub, err := protocol.ParseEd25519Key(se.Entry.Submitter)
	if err != nil {
		return reject(verify.CodeMalformed, "%v", err)
	}
	var rej *verify.RejectedError
	ln.store.view(func(r reader) error {
		hashed := r.hashedNonces()
		if v := r.get(bucketNonces, nonceIndexKey(hashed, pub, se.Entry.Nonce)); v != nil {
			i := nonceHolder(hashed, v)
			rej = reject(verify.CodeReplay, "submitter already used nonce %d (entry %d); sign a new entry with a fresh nonce", se.Entry.Nonce, i)
			rej.HeldBy = &i
			if _, held, ok := r.entry(i); ok {
				if prev, err := verify.DecodeEntry(held); err == nil {
					rej.SameEntry = prev.Entry.Kind == se.Entry.Kind && bytes.Equal(prev.Entry.Body, se.Entry.Body)
				}
			}
		}
		return nil
	})
	return rej
}
