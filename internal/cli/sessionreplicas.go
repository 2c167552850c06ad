package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// Replicated sessions: a policy with "replicas" above 1 runs as a replica
// set, and the session commands take the set's id where they take a
// session id; the principals type the same commands. The client fans
// every step out to the N replicas, and before writing a result checks on
// the ledger that the N attested replicas agreed (docs/piee.md).

func replicated(pol *policy.Policy) bool { return pol != nil && pol.ReplicaCount() > 1 }

// replicasFor reaches the replica set --session names, through the ledger
// the --node node records to.
func replicasFor(ctx context.Context, f *sessionFlags, pol *policy.Policy) (*client.Replicas, error) {
	c, err := dialFor(ctx, f, pol)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	lc, err := client.LedgerOf(ctx, c)
	if err != nil {
		return nil, failure(explainNodeError(ctx, nodeURL(f.node), pol, err))
	}
	r, err := client.OpenReplicas(ctx, lc, f.session, pol, client.WithPlatformKeys(softwarePlatformKeys(pol)...))
	if err != nil {
		return nil, failure(err)
	}
	return r, nil
}

// attestReplicas reaches and attests every replica of the set.
func attestReplicas(ctx context.Context, f *sessionFlags, pol *policy.Policy) (*client.Replicas, []*client.AttestedSession, error) {
	r, err := replicasFor(ctx, f, pol)
	if err != nil {
		return nil, nil, err
	}
	atts, err := r.Attest(ctx)
	if err != nil {
		r.Close()
		return nil, nil, failure(err)
	}
	return r, atts, nil
}

func closeAll(r *client.Replicas, atts []*client.AttestedSession) {
	for _, a := range atts {
		a.CloseIdleConnections()
	}
	r.Close()
}

// createReplicated creates the replica set and prints its id.
func createReplicated(cmd *cobra.Command, f *sessionFlags, c *client.Client, doc []byte, pol *policy.Policy, opts []client.Option) error {
	ctx := cmd.Context()
	lc, err := client.LedgerOf(ctx, c)
	if err != nil {
		return failure(explainNodeError(ctx, nodeURL(f.node), pol, err))
	}
	p := startProgress(cmd, fmt.Sprintf("%d nodes of distinct organisations to create the replicas", pol.ReplicaCount()), 0)
	r, err := client.CreateReplicas(ctx, c, lc, doc, pol, opts...)
	p.done()
	if err != nil {
		return failure(err)
	}
	defer r.Close()
	for _, m := range r.Members {
		fmt.Fprintf(cmd.ErrOrStderr(), "replica: node %s (%s, organisation %s), session %s\n", m.Node, m.Class, m.Organisation, m.Session)
	}
	fmt.Fprintln(cmd.OutOrStdout(), r.Set)
	return nil
}

// attestReplicated attests every replica and prints what was verified.
func attestReplicated(cmd *cobra.Command, f *sessionFlags, pol *policy.Policy) error {
	r, atts, err := attestReplicas(cmd.Context(), f, pol)
	if err != nil {
		return err
	}
	defer closeAll(r, atts)
	var outs []attestJSON
	for _, as := range atts {
		cl := as.Claims()
		h := as.PolicyHash()
		outs = append(outs, attestJSON{SessionID: as.ID(), Verified: true, PolicyHash: fmt.Sprintf("%x", h[:]),
			Class: string(cl.Class), Format: cl.Format, Measurement: fmt.Sprintf("%x", cl.Measurement), Signer: cl.Signer,
			HardwareProtected: cl.HardwareProtected, TLSKeySHA256: as.TLSKeyHash(), HPKEKeySHA256: as.HPKEKeyHash(),
			Warnings: append([]string{}, cl.Warnings...)})
	}
	if f.asJSON {
		writeJSON(cmd.OutOrStdout(), map[string]any{"replica_set": r.Set, "replicas": outs})
		return nil
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "replica set %s: %d replicas, evidence of each verified against your policy\n", r.Set, len(outs))
	for i, o := range outs {
		m := r.Members[i]
		fmt.Fprintf(w, "  %s\tsession %s, %s (%s), organisation %s\n", m.Node, o.SessionID, o.Class, o.Format, m.Organisation)
	}
	return w.Flush()
}

// uploadReplicated seals the file to every replica and uploads it.
func uploadReplicated(cmd *cobra.Command, f *sessionFlags, pol *policy.Policy, key *keys.PrivateKey, program bool, name string, file *os.File, size int64) error {
	ctx := cmd.Context()
	r, atts, err := attestReplicas(ctx, f, pol)
	if err != nil {
		return err
	}
	defer closeAll(r, atts)
	var data []byte
	if size <= streamAbove {
		if data, err = io.ReadAll(file); err != nil {
			return usageError("reading %s: %v", name, err)
		}
	}
	what := "input"
	if program {
		what = "program"
	}
	for i, as := range atts {
		var up *client.Upload
		switch {
		case data == nil:
			if _, err = file.Seek(0, io.SeekStart); err != nil {
				return usageError("reading %s: %v", name, err)
			}
			if program {
				up, err = as.UploadProgramStream(ctx, key, name, file, size)
			} else {
				up, err = as.UploadInputStream(ctx, key, name, file, size)
			}
		case program:
			up, err = as.UploadProgram(ctx, key, name, data)
		default:
			up, err = as.UploadInput(ctx, key, name, data)
		}
		if err != nil {
			return failure(fmt.Errorf("replica on node %s: %w", r.Members[i].Node, err))
		}
		fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s %s to replica %s (sha256:%s); session is %s\n", what, name, r.Members[i].Node, up.EnvelopeSHA256, stateName(up.State))
	}
	return nil
}

// resultReplicated waits, up to wait, until the ledger shows the replicas
// agreed, then fetches the output from one of them: the --node one if it
// is a member.
func resultReplicated(cmd *cobra.Command, f *sessionFlags, pol *policy.Policy, key *keys.PrivateKey, output string, wait time.Duration, w io.Writer) (int64, error) {
	ctx := cmd.Context()
	r, atts, err := attestReplicas(ctx, f, pol)
	if err != nil {
		return 0, err
	}
	defer closeAll(r, atts)
	deadline := time.Now().Add(wait)
	p := startProgress(cmd, fmt.Sprintf("the %d replicas of set %s to agree on the ledger", len(atts), r.Set), wait)
	var digest string
	for {
		digest, err = r.Agreement(ctx, "", atts)
		retry := errors.Is(err, client.ErrReplicasPending) || errors.Is(err, verify.ErrNotIncluded)
		if err == nil || !retry || time.Now().After(deadline) {
			break
		}
		p.set(err.Error())
		select {
		case <-ctx.Done():
			p.done()
			return 0, failure(ctx.Err())
		case <-time.After(time.Second):
		}
	}
	p.done()
	if err != nil {
		return 0, failure(fmt.Errorf("result %q refused: %w", output, err))
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "replica set %s: %d replicas of distinct organisations agreed on the ledger (digest %.16s…)\n", r.Set, len(atts), digest)
	from := 0
	for i, m := range r.Members {
		if m.Endpoint == nodeURL(f.node) {
			from = i
		}
	}
	return awaitResult(ctx, cmd, atts[from], key, output, max(time.Until(deadline), time.Second), w)
}

// closeReplicated closes every replica's session.
func closeReplicated(cmd *cobra.Command, f *sessionFlags, pol *policy.Policy, key *keys.PrivateKey) error {
	ctx := cmd.Context()
	r, atts, err := attestReplicas(ctx, f, pol)
	if err != nil {
		return err
	}
	defer closeAll(r, atts)
	var errs []error
	for i, as := range atts {
		if err := as.Close(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("replica on node %s: %w", r.Members[i].Node, err))
		}
	}
	if len(errs) > 0 {
		return failure(errors.Join(errs...))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "replica set %s closed: its %d sessions are erased\n", r.Set, len(atts))
	return nil
}

// statusReplicated prints each replica's status.
func statusReplicated(cmd *cobra.Command, f *sessionFlags, pol *policy.Policy) error {
	ctx := cmd.Context()
	r, err := replicasFor(ctx, f, pol)
	if err != nil {
		return err
	}
	defer r.Close()
	var outs []statusJSON
	for i, m := range r.Members {
		st, err := r.Client(i).Status(ctx, m.Session, 0)
		if err != nil {
			return failure(fmt.Errorf("replica on node %s: %w", m.Node, err))
		}
		outs = append(outs, toStatusJSON(st))
	}
	if f.asJSON {
		writeJSON(cmd.OutOrStdout(), map[string]any{"replica_set": r.Set, "replicas": outs})
		return nil
	}
	for i, o := range outs {
		fmt.Fprintf(cmd.OutOrStdout(), "replica %d of %d, node %s (organisation %s):\n", i+1, len(outs), r.Members[i].Node, r.Members[i].Organisation)
		printStatus(cmd.OutOrStdout(), o)
	}
	return nil
}
