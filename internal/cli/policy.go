package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, hash and explain policy files",
		Long: `A policy is the JSON contract of one computation: its principals and their
roles, the programs (pinned by SHA-256), inputs and who provides them, outputs
and who may read them, the isolate classes accepted and what each must prove,
limits and expiry. Its hash (SHA-256 of the RFC 8785 canonical form) is bound
into every attestation, so every party can check they signed up to the same
contract. The format is described in docs/policy.md.`,
		Example: `  cloister policy new --interactive --out psi.json
  cloister policy validate psi.json
  cloister policy hash psi.json
  cloister policy show psi.json`,
	}
	cmd.AddCommand(newPolicyNewCmd(), newPolicyValidateCmd(), newPolicyHashCmd(), newPolicyShowCmd())
	return cmd
}

// loadPolicy maps policy errors onto exit statuses: a file that cannot be
// read or is not JSON is bad input (2); JSON that breaks the rules is a
// failed check (1).
func loadPolicy(path string) (*policy.Policy, error) {
	p, err := policy.Load(path)
	if err == nil {
		return p, nil
	}
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		return nil, failure(err)
	}
	return nil, usageError("%v", err)
}

// validateJSON is "policy validate --json"; Name, Hash and Expired are
// left out of an invalid policy's output.
type validateJSON struct {
	Valid    bool             `json:"valid"`
	Name     string           `json:"name,omitempty"`
	Hash     string           `json:"hash,omitempty"`
	Expired  *bool            `json:"expired,omitempty"`
	Problems []policy.Problem `json:"problems"`
}

func newPolicyValidateCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a policy file against every rule and list all problems",
		Long: `validate parses FILE strictly and checks every rule of docs/policy.md. If the
policy is valid it prints "valid: <name> <hash>". Otherwise it lists every
problem, one per line, each naming the field ("principals[1].signing_key: ...").
An expired policy is valid but draws a warning on standard error: nodes
refuse it.

With --json it prints {"valid": true|false, "name": ..., "hash": ...,
"expired": ..., "problems": [{"field": ..., "message": ...}]}.

Exit status: 0 valid; 1 invalid (problems listed); 2 FILE unreadable or not
JSON.`,
		Example: `  cloister policy validate examples/policies/psi-sum.json
  cloister policy validate policy.json --json | jq -r '.problems[].field'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			var ve *policy.ValidationError
			switch {
			case err == nil:
			case errors.As(err, &ve):
				if asJSON {
					writeJSON(cmd.OutOrStdout(), validateJSON{Valid: false, Problems: ve.Problems})
					return &ExitError{Code: ExitFailure, Err: err, Silent: true}
				}
				var b strings.Builder
				fmt.Fprintf(&b, "%s: %d problem(s):", args[0], len(ve.Problems))
				for _, pr := range ve.Problems {
					fmt.Fprintf(&b, "\n  %s", pr)
				}
				return failure(errors.New(b.String()))
			default:
				return usageError("%v", err)
			}
			expired := p.Expired(time.Now())
			if expired {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s expired at %s; nodes refuse it\n", args[0], p.Expires.Format(time.RFC3339))
			}
			if asJSON {
				writeJSON(cmd.OutOrStdout(), validateJSON{Valid: true, Name: p.Name, Hash: p.HashHex(), Expired: &expired, Problems: []policy.Problem{}})
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "valid: %s %s\n", p.Name, p.HashHex())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(w, "%s\n", b)
}

func newPolicyHashCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash FILE",
		Short: "Print a policy's canonical hash",
		Long: `hash prints the SHA-256 of the RFC 8785 canonical form of the policy in FILE,
in lowercase hex: the value nodes bind into attestation evidence and clients
compare. Whitespace, key order and string escaping do not change it; any
change of meaning does. Only a valid policy has a hash.

Exit status: 0 printed; 1 the policy is invalid; 2 FILE unreadable or not JSON.`,
		Example: `  cloister policy hash psi.json
  test "$(cloister policy hash mine.json)" = "$(cloister policy hash theirs.json)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadPolicy(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.HashHex())
			return nil
		},
	}
}

func newPolicyShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE",
		Short: "Explain in plain words who may do what under a policy",
		Long: `show validates FILE and prints a summary for a person deciding whether to
sign up: the principals and their keys, who uploads each program and input,
who reads each output, which isolate classes are accepted and what each one
trusts, the limits and the expiry.

Exit status: 0 printed; 1 the policy is invalid; 2 FILE unreadable or not JSON.`,
		Example: `  cloister policy show examples/policies/psi-sum.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadPolicy(args[0])
			if err != nil {
				return err
			}
			showPolicy(cmd.OutOrStdout(), p, time.Now())
			return nil
		},
	}
}

// shortKey abbreviates a key string for display: prefix, the first
// characters and a fingerprint that distinguishes keys sharing a prefix.
func shortKey(s string) string {
	prefix, rest, ok := strings.Cut(s, ":")
	if !ok || len(rest) < 12 {
		return s
	}
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%s:%s… (fingerprint %s)", prefix, rest[:10], hex.EncodeToString(h[:4]))
}

func showPolicy(w io.Writer, p *policy.Policy, now time.Time) {
	fmt.Fprintf(w, "policy   %s (format version %d)\n", p.Name, p.Version)
	fmt.Fprintf(w, "hash     %s\n", p.HashHex())
	if p.Expired(now) {
		fmt.Fprintf(w, "expires  %s: EXPIRED, nodes refuse it\n", p.Expires.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "expires  %s (in %s)\n", p.Expires.Format(time.RFC3339), roughDuration(p.Expires.Sub(now)))
	}

	fmt.Fprintln(w, "\nprincipals")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, pr := range p.Principals {
		roles := make([]string, len(pr.Roles))
		for i, r := range pr.Roles {
			roles[i] = string(r)
		}
		if len(roles) == 0 {
			roles = []string{"(no role: may attest and close the session)"}
		}
		fmt.Fprintf(tw, "  %s\t%s\tsigns with %s\n", pr.ID, strings.Join(roles, ", "), shortKey(pr.SigningKey))
		if pr.SealingKey != "" {
			fmt.Fprintf(tw, "  \t\treceives at %s\n", shortKey(pr.SealingKey))
		}
	}
	tw.Flush()

	fmt.Fprintln(w, "\nwho may do what")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, pg := range p.Programs {
		fmt.Fprintf(tw, "  %s\tuploads program\t%s\tonly a module with sha256 %s runs\n", pg.Provider, pg.Name, pg.SHA256)
	}
	for _, in := range p.Inputs {
		fmt.Fprintf(tw, "  %s\tuploads input\t%s\tsealed to the attested isolate, read by the program at /input/%s\n", in.Provider, in.Name, in.Name)
	}
	for _, o := range p.Outputs {
		fmt.Fprintf(tw, "  %s\treads output\t%s\tsealed to each reader's key\n", strings.Join(o.Readers, ", "), o.Name)
	}
	tw.Flush()
	fmt.Fprintln(w, "  every principal may attest the isolate and close the session;")
	fmt.Fprintln(w, "  nothing runs until every program and input is present; each is uploaded once.")

	fmt.Fprintln(w, "\nisolates (evidence from any one class below is accepted)")
	for _, iso := range p.Isolates {
		fmt.Fprintf(w, "  %s\n", iso.Class)
		for _, line := range describeIsolate(iso) {
			fmt.Fprintf(w, "      %s\n", line)
		}
	}

	l := p.Limits
	fmt.Fprintln(w, "\nlimits")
	fmt.Fprintf(w, "  memory %s, timeout %s, output %s in total\n",
		limitText(l.Memory, fmt.Sprintf("%dMiB", policy.DefaultMemory>>20)),
		limitText(l.Timeout, policy.DefaultTimeout.String()),
		limitText(l.MaxOutput, fmt.Sprintf("%dMiB", policy.DefaultMaxOutput>>20)))
	det := "no (programs may read the clock and true randomness)"
	if p.Deterministic {
		det = "yes (fixed clock, seeded randomness: same inputs give the same bytes on any node)"
	}
	fmt.Fprintf(w, "  deterministic: %s\n", det)
	fmt.Fprintf(w, "  replicas: %d\n", p.ReplicaCount())
}

func limitText(v, def string) string {
	if v == "" {
		return def + " (default)"
	}
	return v
}

func describeIsolate(iso policy.Isolate) []string {
	var out []string
	if iso.Class == "software" {
		out = append(out, "no hardware protection: the operator of a node holding one of these keys can see inputs and outputs")
	} else {
		out = append(out, "hardware-protected: the node operator cannot read memory; evidence checked against the vendor's roots")
	}
	for _, k := range iso.PlatformKeys {
		if strings.HasPrefix(k, protocol.Ed25519KeyPrefix) {
			out = append(out, "trusts platform key "+shortKey(k))
		} else {
			h := sha256.Sum256([]byte(k))
			out = append(out, "trusts attestation key (PEM) fingerprint "+hex.EncodeToString(h[:4]))
		}
	}
	if len(iso.Roots) > 0 {
		out = append(out, fmt.Sprintf("adds %d root certificate entr%s", len(iso.Roots), map[bool]string{true: "y", false: "ies"}[len(iso.Roots) == 1]))
	}
	if len(iso.Measurements) == 0 {
		out = append(out, "any runtime measurement")
	}
	for _, m := range iso.Measurements {
		out = append(out, "measurement "+m)
	}
	if len(iso.MinSVN) > 0 {
		comps := make([]string, 0, len(iso.MinSVN))
		for c, v := range iso.MinSVN {
			comps = append(comps, fmt.Sprintf("%s >= %d", c, v))
		}
		slices.Sort(comps)
		out = append(out, "security versions "+strings.Join(comps, ", "))
	}
	if len(iso.AcceptTCBStatus) > 0 {
		out = append(out, "TCB status one of "+strings.Join(iso.AcceptTCBStatus, ", "))
	}
	if iso.AllowDebug {
		out = append(out, "DEBUG isolates accepted: their memory is readable by the host (testing only)")
	} else {
		out = append(out, "debug isolates refused")
	}
	return out
}

func roughDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	default:
		return d.Round(time.Second).String()
	}
}
