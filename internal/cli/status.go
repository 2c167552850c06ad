package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
)

func newStatusCmd() *cobra.Command {
	var (
		nodeFlag, platformKey string
		asJSON                bool
		timeout               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status --node URL [--json]",
		Short: "Show a running node's state on one screen",
		Long: `status asks a node for its own account of itself (GET /v1/node/status on its
TLS port) and prints it on one screen: whether it is ready and if not why,
its isolate class and platform key, the ledger it records on (height,
entries, peers, whether the validator is catching up, entries being
recorded), its sessions by state, its worker pool (runs in progress of the
slots, warm workers), its data directory's free space and what sessions
and the blob cache hold, and the warnings and errors it logged lately.

The node lists its latest errors only to callers on its own loopback
interface (on the host, or in the pod: kubectl exec or port-forward);
others see how many were logged. The status is the node's word, not
evidence: trust decisions rest on attestation and the ledger's proofs.
With --platform-key the connection must reach a node certified by that
key; without it any node answering at URL is shown.

Exit status: 0 the node answered (ready or not: see "ready", or probe
/readyz); 1 it did not answer; 2 bad usage.`,
		Example: `  cloister status --node https://127.0.0.1:7443
  cloister status --node 127.0.0.1:7443 --json | jq .sessions
  cloister status --node https://node.example:7443 --platform-key "$(cloister key public node-data/platform.key)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodeFlag == "" {
				return usageError("status: --node URL is required")
			}
			var opts []client.Option
			if platformKey != "" {
				pk, err := keys.ParseSigningKey(platformKey)
				if err != nil {
					return usageError("status: --platform-key: %v", err)
				}
				opts = append(opts, client.WithPlatformKeys(pk))
			}
			c, err := client.Dial(cmd.Context(), nodeURL(nodeFlag), opts...)
			if err != nil {
				return usageError("status: --node: %v", err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st node.Status
			if err := c.NodeStatus(ctx, &st); err != nil {
				return failure(fmt.Errorf("status: %s: %w", nodeFlag, err))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), &st)
			}
			printNodeStatus(cmd.OutOrStdout(), nodeURL(nodeFlag), &st)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&nodeFlag, "node", "", "node URL, https://HOST:PORT (or HOST:PORT)")
	f.StringVar(&platformKey, "platform-key", "", "only accept a node whose TLS certificate this platform key (ed25519:…) certifies")
	f.BoolVar(&asJSON, "json", false, "print the node's status document as JSON")
	f.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for the answer")
	return cmd
}

// printNodeStatus writes the one-screen view of st.
func printNodeStatus(w io.Writer, url string, st *node.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	if st.Draining {
		ready += ", draining (stopping: no new sessions or uploads)"
	}
	fmt.Fprintf(w, "node       %s  %s\n", printable(url), ready)
	for _, r := range st.NotReady {
		fmt.Fprintf(w, "           - %s\n", printable(r))
	}
	fmt.Fprintf(w, "isolates   %s, platform key %s\n", printable(st.IsolateClass), printable(st.PlatformKey))
	up := st.Now.Sub(st.Started).Round(time.Second)
	fmt.Fprintf(w, "version    %s, up %s (since %s)\n", printable(st.Version), up, st.Started.UTC().Format(time.RFC3339))
	l := st.Ledger
	switch {
	case l.State != nil:
		sync := "in sync"
		if l.State.CatchingUp {
			sync = "CATCHING UP"
		}
		fmt.Fprintf(w, "ledger     %s %s: height %d, %d entries, %d peers, %s; %d sessions recording\n",
			printable(l.Mode), printable(l.State.Origin), l.State.Height, l.State.Size, l.State.Peers, sync, l.Recording)
	case l.Error != "":
		fmt.Fprintf(w, "ledger     %s: UNREACHABLE: %s\n", printable(l.Mode), printable(l.Error))
	default:
		fmt.Fprintf(w, "ledger     %s\n", printable(l.Mode))
	}
	s := st.Sessions
	fmt.Fprintf(w, "sessions   %d provisioning, %d running, %d finished, %d failed; %d closed remembered\n",
		s.Provisioning, s.Running, s.Finished, s.Failed, s.Closed)
	wk := st.Workers
	bin := ""
	if wk.Binary != "" {
		bin = ", workers from " + printable(wk.Binary)
	}
	fmt.Fprintf(w, "workers    %d of %d run slots busy, %d warm%s\n", wk.RunsActive, wk.RunsMax, wk.Warm, bin)
	d := st.Disk
	fmt.Fprintf(w, "disk       %s: %s free of %s; sessions hold %s, blob cache %s\n",
		printable(d.DataDir), approxSize(d.FreeBytes), approxSize(d.TotalBytes), approxSize(d.SessionBytes), approxSize(d.BlobCacheBytes))
	switch {
	case st.ErrorsLogged == 0:
		fmt.Fprintf(w, "errors     none logged\n")
	case st.ErrorsWithheld:
		fmt.Fprintf(w, "errors     %d warnings and errors logged (listed to loopback callers only: run status on the node's host)\n", st.ErrorsLogged)
	default:
		fmt.Fprintf(w, "errors     %d warnings and errors logged; the latest:\n", st.ErrorsLogged)
		for _, e := range st.Errors {
			var b strings.Builder
			fmt.Fprintf(&b, "  %s %-5s %s", e.Time.UTC().Format(time.RFC3339), e.Level, e.Message)
			if e.Session != "" {
				fmt.Fprintf(&b, " session=%s", e.Session)
			}
			if e.Err != "" {
				fmt.Fprintf(&b, " err=%s", e.Err)
			}
			fmt.Fprintln(w, printable(b.String()))
		}
	}
}

// approxSize writes n bytes in a binary unit with one decimal.
func approxSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/unit, 0
	for f >= unit && u < 4 {
		f /= unit
		u++
	}
	return fmt.Sprintf("%.1f %s", f, []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[u])
}
