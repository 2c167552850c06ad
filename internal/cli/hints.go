package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/cloisterhq/cloister/client"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// The errors below are the ones a new user meets first. Each says what
// happened in the user's terms and what to do next; the test of each
// message is in hints_test.go, with its text in testdata/golden.

// unreachable reports whether err is a failure to connect at all (nothing
// listening, no route, the dial timed out), as opposed to an answer.
func unreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// cannotReach is the message for a server that does not answer: what was
// tried, why, and how to get one running.
func cannotReach(what, u, flag string, err error) error {
	why := "it does not answer"
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "nothing is listening there (connection refused)"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT):
		why = "the connection timed out"
	}
	return fmt.Errorf("cannot reach a %s at %s: %s. Start one with 'cloister up' (docs/local.md), or check %s", what, u, why, flag)
}

// explainNodeError rewrites the errors of a call to a node: a node that
// is not running, and a node that is not the one the policy trusts. pol
// may be nil. Other errors pass through.
func explainNodeError(ctx context.Context, nodeURL string, pol *policy.Policy, err error) error {
	switch {
	case err == nil:
		return nil
	case unreachable(err):
		return cannotReach("node", nodeURL, "--node", err)
	case errors.Is(err, client.ErrNodeIdentity) && pol != nil:
		return wrongPlatformKey(ctx, nodeURL, pol)
	}
	return err
}

// wrongPlatformKey explains a node whose TLS certificate no platform key
// of the policy certifies. It asks the node (unauthenticated: only to
// name the key to compare) which platform key it claims.
func wrongPlatformKey(ctx context.Context, nodeURL string, pol *policy.Policy) error {
	listed := "none"
	if iso, ok := pol.Isolate("software"); ok && len(iso.PlatformKeys) > 0 {
		short := make([]string, len(iso.PlatformKeys))
		for i, k := range iso.PlatformKeys {
			short[i] = shortKey(k)
		}
		listed = strings.Join(short, ", ")
	}
	claimed := "it did not say which key it has"
	if c, err := client.Dial(ctx, nodeURL); err == nil {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if info, err := c.NodeInfo(ictx); err == nil && info.PlatformKey != "" {
			claimed = "it says its platform key is " + shortKey(info.PlatformKey)
		}
		cancel()
		c.Close()
	}
	return fmt.Errorf("the node at %s is not one policy %q trusts: its TLS certificate is not signed by a platform key the policy lists (%s); %s. "+
		"If it is your node, compare with 'cloister key public DATA/platform.key' and make the policy again with that key "+
		"('cloister policy new --node-data DATA ...', or --node %s to read it from the node)", nodeURL, pol.Name, listed, claimed, nodeURL)
}

// ledgerURL accepts what --node accepts: a URL, or a bare HOST:PORT,
// which means plain HTTP (the API a validator or node serves on loopback).
func ledgerURL(s string) string {
	if s != "" && !strings.Contains(s, "://") {
		return "http://" + s
	}
	return s
}

// newLedgerClient makes a client of the ledger at s (URL or HOST:PORT).
func newLedgerClient(s string) (*lclient.Client, error) {
	c, err := lclient.New(ledgerURL(s))
	if err != nil {
		return nil, fmt.Errorf("ledger URL %q: want http://HOST:PORT, https://HOST:PORT or HOST:PORT", s)
	}
	return c, nil
}

// explainLedgerError rewrites a ledger that does not answer.
func explainLedgerError(c *lclient.Client, err error) error {
	if err != nil && unreachable(err) {
		return cannotReach("ledger", c.URL(), "--ledger (or $CLOISTER_LEDGER)", err)
	}
	return err
}

// quorumText says how much voting power the ledger needs, e.g. "3 of 4
// validators" for four of power 1.
func quorumText(vs *verify.ValidatorSet) string {
	total := vs.TotalPower()
	need := total*2/3 + 1
	equal := true
	for _, v := range vs.Validators {
		equal = equal && v.Power == vs.Validators[0].Power
	}
	if equal && len(vs.Validators) > 0 {
		p := vs.Validators[0].Power
		return fmt.Sprintf("%d of its %d validators", (need+p-1)/p, len(vs.Validators))
	}
	return fmt.Sprintf("validators holding %d of its %d voting power", need, total)
}

// noQuorum is the message for an append the ledger did not commit while
// it made no block: too few validators are up.
func noQuorum(err error, stalled time.Duration, vs *verify.ValidatorSet) error {
	need := "more than 2/3 of its voting power"
	if vs != nil {
		need = quorumText(vs)
	}
	return fmt.Errorf("%w — the ledger made no block for %s, so too few of its validators are up or they cannot reach each other: it needs %s. "+
		"Start the stopped validators ('cloister up' starts those of a local network); the entry may still be committed then, so look with 'cloister ledger tail' before appending it again",
		err, roundSeconds(stalled), need)
}

// errIsUnavailable reports an append the ledger did not confirm in time.
func errIsUnavailable(err error) bool {
	return errors.Is(err, verify.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
