package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// "ledger append --bodies FILE" appends many entries signed together:
// batches of up to verify.MaxBatch entries under one signature each
// (decision 0175), sent in requests of up to client.MaxAppendBatch
// entries. The whole file is read and checked, and every entry signed,
// before the first request, so bad input appends nothing.

const (
	// maxBodiesLines bounds --bodies: lines read, blank ones included.
	maxBodiesLines = 10_000
	// appendRequestBytes bounds the entries of one request: the ledger's
	// API takes request bodies of at most 8 MiB, and an entry is at most
	// 64 KiB.
	appendRequestBytes = 8<<20 - 64<<10
)

// bodyLine is one entry body of --bodies and the line it was on.
type bodyLine struct {
	line int
	body json.RawMessage
}

// readBodies reads --bodies NAME (- for stdin): JSON Lines, one entry
// body, a JSON object, per non-empty line.
func readBodies(name string, stdin io.Reader) ([]bodyLine, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, usageError("ledger append: --bodies: %v", err)
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	// Room for a line of the entry limit and its CR LF; longer is refused.
	sc.Buffer(make([]byte, 0, 64<<10), maxBodyFile+2)
	var out []bodyLine
	n := 0
	for sc.Scan() {
		n++
		if n > maxBodiesLines {
			return nil, usageError("ledger append: --bodies %s: line %d: more than %d lines; split the file and append each part", name, n, maxBodiesLines)
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(line) > maxBodyFile {
			return nil, usageError("ledger append: --bodies %s: line %d is longer than %d bytes, an entry's limit", name, n, maxBodyFile)
		}
		canon, err := jsonObject(line)
		if err != nil {
			return nil, usageError("ledger append: --bodies %s: line %d %v", name, n, err)
		}
		out = append(out, bodyLine{line: n, body: canon})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, usageError("ledger append: --bodies %s: line %d is longer than %d bytes, an entry's limit", name, n+1, maxBodyFile)
		}
		return nil, usageError("ledger append: --bodies %s: %v", name, err)
	}
	if len(out) == 0 {
		return nil, usageError(`ledger append: --bodies %s holds no entry body (one JSON object a line, such as {"text":"hello"})`, name)
	}
	return out, nil
}

// signBodies signs the bodies as entries of kind in batches of at most
// verify.MaxBatch, as near equal in size as may be (so that no entry is
// left to be signed alone), each entry with a random nonce and the time,
// as verify.NewEntry picks them.
func signBodies(key ed25519.PrivateKey, kind verify.Kind, bodies []bodyLine) ([][]*verify.SignedEntry, error) {
	batches := (len(bodies) + verify.MaxBatch - 1) / verify.MaxBatch
	out := make([][]*verify.SignedEntry, 0, batches)
	for b, from := 0, 0; b < batches; b++ {
		to := from + len(bodies)/batches
		if b < len(bodies)%batches {
			to++
		}
		part := bodies[from:to]
		items := make([]verify.BatchItem, len(part))
		nonces := make([]byte, 8*len(part))
		if _, err := rand.Read(nonces); err != nil {
			return nil, failure(fmt.Errorf("ledger append: %w", err))
		}
		for i, bl := range part {
			items[i] = verify.BatchItem{Kind: kind, Body: bl.body, Nonce: binary.BigEndian.Uint64(nonces[8*i:]) & verify.MaxNonce, Time: time.Now()}
		}
		ses, err := verify.SignBatch(key, items)
		if err != nil {
			return nil, usageError("ledger append: --bodies: %v", badBatchLine(key, items, part, err))
		}
		out = append(out, ses)
		from = to
	}
	return out, nil
}

// badBatchLine names the line of a batch that could not be signed: the
// first whose entry fails alone, or else the batch's lines.
func badBatchLine(key ed25519.PrivateKey, items []verify.BatchItem, part []bodyLine, err error) error {
	for i, it := range items {
		if _, e := verify.NewEntryWithNonce(key, it.Kind, it.Body, it.Nonce, it.Time); e != nil {
			return fmt.Errorf("line %d: %v", part[i].line, e)
		}
	}
	return fmt.Errorf("lines %d to %d, signed together: %v", part[0].line, part[len(part)-1].line, err)
}

// appendRequests groups signed batches into requests of at most
// client.MaxAppendBatch entries and appendRequestBytes bytes, a batch in
// one request when it fits in one.
func appendRequests(batches [][]*verify.SignedEntry) [][]*verify.SignedEntry {
	var reqs [][]*verify.SignedEntry
	var cur []*verify.SignedEntry
	size := 0
	flush := func() {
		if len(cur) > 0 {
			reqs, cur, size = append(reqs, cur), nil, 0
		}
	}
	for _, b := range batches {
		sizes := make([]int, len(b))
		total := 0
		for i, se := range b {
			sizes[i] = len(se.Encode()) + 1
			total += sizes[i]
		}
		if len(cur)+len(b) > client.MaxAppendBatch || size+total > appendRequestBytes {
			flush()
		}
		for i, se := range b {
			if len(cur) == client.MaxAppendBatch || size+sizes[i] > appendRequestBytes {
				flush()
			}
			cur, size = append(cur, se), size+sizes[i]
		}
	}
	flush()
	return reqs
}

// appendBodies signs bodies as entries of kind, appends them and waits,
// up to wait in all, for their commit. It prints each appended entry's
// index (with asJSON, a JSON array of receipts) and, on standard error,
// the line and reason of each entry not appended.
func appendBodies(cmd *cobra.Command, c *client.Client, key ed25519.PrivateKey, kind verify.Kind, bodies []bodyLine, wait time.Duration, asJSON bool) error {
	batches, err := signBodies(key, kind, bodies)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(cmd)
	defer stop()
	w := cmd.OutOrStdout()
	receipts := []receiptJSON{}
	var failed []lineFailure
	done := 0 // entries with a result
	err = watchCommit(ctx, cmd, c, wait, true, func(ctx context.Context) error {
		for _, req := range appendRequests(batches) {
			res, err := c.AppendBatch(ctx, req, true)
			if err != nil {
				return err
			}
			for i, r := range res {
				if r.Err != nil {
					failed = append(failed, lineFailure{entry: done + i, line: bodies[done+i].line, err: r.Err})
					continue
				}
				rc := receiptJSON{Index: r.Receipt.Index, Height: r.Receipt.Height, LeafHash: b64(r.Receipt.LeafHash[:])}
				receipts = append(receipts, rc)
				if !asJSON {
					fmt.Fprintln(w, rc.Index)
				}
			}
			done += len(res)
		}
		return nil
	})
	if asJSON && (err == nil || len(receipts) > 0) {
		if perr := printJSON(w, receipts); perr != nil {
			return perr
		}
	}
	printLineFailures(cmd.ErrOrStderr(), failed)
	if err != nil {
		if done > 0 {
			err = fmt.Errorf("the entries from line %d on: %w (of the %d before them, %d were appended)", bodies[done].line, err, done, len(receipts))
		}
		return ledgerFailure("ledger append", c, err)
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(receipts) == 0:
		return failure(fmt.Errorf("ledger append: none of the %d entries was appended (why is above)", len(bodies)))
	}
	return failure(fmt.Errorf("ledger append: %d of %d entries were not appended (their lines are above); the other %d were", len(failed), len(bodies), len(receipts)))
}

// lineFailure is an entry of --bodies the ledger did not append.
type lineFailure struct {
	entry, line int // its place among the bodies, its line
	err         error
}

// reason is why the entry (or a run of entries, plural) was not
// appended.
func (f lineFailure) reason(plural bool) string {
	if r, ok := client.IsRejected(f.err); ok {
		what := "entry"
		if plural {
			what = "entries"
		}
		return fmt.Sprintf("the ledger refused the %s (%s): %s", what, r.Code, r.Reason)
	}
	return f.err.Error()
}

// printLineFailures prints one line per run of consecutive entries
// that failed for the same reason (a chain that takes no batch-signed
// entries refuses them all alike).
func printLineFailures(w io.Writer, failed []lineFailure) {
	for i := 0; i < len(failed); {
		j := i + 1
		for j < len(failed) && failed[j].entry == failed[j-1].entry+1 && failed[j].reason(false) == failed[i].reason(false) {
			j++
		}
		if j-i == 1 {
			fmt.Fprintf(w, "cloister: ledger append: line %d: %s\n", failed[i].line, failed[i].reason(false))
		} else {
			fmt.Fprintf(w, "cloister: ledger append: lines %d to %d (%d entries): %s\n", failed[i].line, failed[j-1].line, j-i, failed[i].reason(true))
		}
		i = j
	}
}
