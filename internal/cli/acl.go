package cli

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// appendEntry signs body as kind, appends it and prints its index (or
// the receipt as JSON).
func appendEntry(cmd *cobra.Command, c *client.Client, key ed25519.PrivateKey, kind string, body any, asJSON bool, what string) error {
	se, err := verify.NewEntry(key, verify.Kind(kind), body)
	if err != nil {
		return usageError("%s: %v", what, err)
	}
	return appendAndPrint(cmd, what, c, se, 30*time.Second, asJSON)
}

// aclTime reads an RFC 3339 time or +DURATION from now, in the one form
// of package acl (UTC, whole seconds).
func aclTime(flag, s string) (string, error) {
	if d, ok := strings.CutPrefix(s, "+"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return "", usageError("%s %q: want an RFC 3339 time or +DURATION (+10m)", flag, s)
		}
		return acl.FormatTime(time.Now().Add(dur)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return "", usageError("%s %q: want an RFC 3339 time or +DURATION (+10m)", flag, s)
	}
	return acl.FormatTime(t), nil
}

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Grant, delegate, revoke and list access to artifacts' keys on the ledger",
		Long: `acl writes the ledger entries that govern the release of an artifact's
content key: grants to one isolate (a node's session) or to an isolate class
and measurements, bounded in time (judged by block time) and uses;
delegations of the right to grant, within limits the ledger enforces; and
revocations, effective for the next release. docs/broker.md.`,
		Example: `  cloister acl grant --ledger "$L" --key alice.key --artifact sha256:… --node ed25519:… --session 9f… --not-after +10m
  cloister acl revoke --ledger "$L" --key alice.key --index 42
  cloister acl list --ledger "$L" --artifact sha256:… --json`,
	}
	cmd.AddCommand(newACLGrantCmd(), newACLRevokeCmd(), newACLDelegateCmd(), newACLListCmd())
	return cmd
}

func newACLGrantCmd() *cobra.Command {
	var (
		keyFile, artifact, owner, node, session, class, notAfter, notBefore string
		measurements                                                        []string
		uses                                                                uint64
		delegation                                                          int64
		asJSON                                                              bool
	)
	cmd := &cobra.Command{
		Use:   "grant --ledger URL --key KEY --artifact DIGEST (--node KEY --session ID | --class C --measurement HEX) --not-after TIME [--not-before TIME] [--uses N]",
		Short: "Let one isolate, or a class of isolates, obtain an artifact's key for a while",
		Long: `grant appends an acl.granted entry and prints its index. The grantee is a
node's session (--node and --session; the session must have its
session.created entry) or any isolate of --class whose measurement is one of
--measurement. The ledger judges --not-before/--not-after (RFC 3339, or
+DURATION from now) by block time, and counts --uses once per session
whichever brokers release.

The owner grants with its own key. A delegate grants with its key, --owner
naming the artifact's owner and --delegation the index of its acl.delegated
entry; the ledger refuses a grant beyond the delegation's limits.

Exit status: 0 granted; 1 refused by the ledger; 2 bad usage.`,
		Example: `  cloister acl grant --ledger "$L" --key alice.key --artifact sha256:… --node ed25519:… --session 9f… --not-after +10m
  cloister acl grant --ledger "$L" --key alice.key --artifact sha256:… --class sev-snp --measurement ab… --not-after 2027-01-01T00:00:00Z --uses 100
  cloister acl grant --ledger "$L" --key dispatcher.key --owner ed25519:… --delegation 12 --artifact sha256:… --node ed25519:… --session 9f… --not-after +5m`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if keyFile == "" || artifact == "" || notAfter == "" {
			return usageError("acl grant: --key, --artifact and --not-after are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		if owner == "" {
			owner = k.Public().SigningString()
		}
		g := acl.Grant{Artifact: artifact, Owner: owner, MaxUses: uses,
			Grantee: acl.Grantee{Node: node, Session: session, Class: class, Measurements: measurements}}
		if g.NotAfter, err = aclTime("--not-after", notAfter); err != nil {
			return err
		}
		if notBefore != "" {
			if g.NotBefore, err = aclTime("--not-before", notBefore); err != nil {
				return err
			}
		}
		if delegation >= 0 {
			d := uint64(delegation)
			g.Delegation = &d
		}
		if err := g.Check(); err != nil {
			return usageError("acl grant: %v", err)
		}
		return appendEntry(cmd, c, k.Signer(), acl.KindGranted, g, asJSON, "acl grant")
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the owner's (or delegate's) principal key file")
	f.StringVar(&artifact, "artifact", "", "the artifact's ciphertext digest (sha256:…)")
	f.StringVar(&owner, "owner", "", "the artifact's owner (default: --key's; a delegate names it)")
	f.StringVar(&node, "node", "", "grantee node's platform key (ed25519:…), with --session")
	f.StringVar(&session, "session", "", "grantee session id, with --node")
	f.StringVar(&class, "class", "", "grantee isolate class, with --measurement")
	f.StringArrayVar(&measurements, "measurement", nil, "allowed measurement (hex) for a --class grant; repeat")
	f.StringVar(&notAfter, "not-after", "", "end of the grant (RFC 3339, or +DURATION)")
	f.StringVar(&notBefore, "not-before", "", "start of the grant (default: now)")
	f.Uint64Var(&uses, "uses", 1, "sessions that may obtain the key")
	f.Int64Var(&delegation, "delegation", -1, "index of the acl.delegated entry a delegate grants under")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	return cmd
}

func newACLRevokeCmd() *cobra.Command {
	var keyFile string
	var index, delegation int64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke --ledger URL --key KEY (--index N | --delegation N)",
		Short: "End a grant (or a delegation) from the next release on",
		Long: `revoke appends an acl.revoked entry ending grant --index (or delegation
--delegation, which ends every grant made under it). A broker's release
entry ordered after it by the ledger is refused, so no release races a
revocation. The owner revokes anything; a delegate its own grants.

Exit status: 0 revoked; 1 refused by the ledger; 2 bad usage.`,
		Example: `  cloister acl revoke --ledger "$L" --key alice.key --index 42`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if keyFile == "" || (index < 0) == (delegation < 0) {
			return usageError("acl revoke: --key and exactly one of --index and --delegation are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		var r acl.Revocation
		if index >= 0 {
			i := uint64(index)
			r.Grant = &i
		} else {
			d := uint64(delegation)
			r.Delegation = &d
		}
		return appendEntry(cmd, c, k.Signer(), acl.KindRevoked, r, asJSON, "acl revoke")
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the owner's (or the granting delegate's) principal key file")
	f.Int64Var(&index, "index", -1, "index of the acl.granted entry to revoke")
	f.Int64Var(&delegation, "delegation", -1, "index of the acl.delegated entry to revoke")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	return cmd
}

func newACLDelegateCmd() *cobra.Command {
	var (
		keyFile, artifact, delegate, notAfter string
		classes, measurements, nodes, minTCB  []string
		rate                                  string
		maxDuration                           time.Duration
		maxUses, maxGrants                    uint64
		asJSON                                bool
	)
	cmd := &cobra.Command{
		Use:   "delegate --ledger URL --key OWNER.key --artifact DIGEST --delegate KEY --not-after TIME --max-duration D --max-uses N [--class C...] [--measurement HEX...] [--node KEY...] [--max-grants N] [--min-tcb CLASS:COMP=N,...] [--rate N/DURATION]",
		Short: "Let a principal (a dispatcher) grant an artifact's key within limits",
		Long: `delegate appends an acl.delegated entry: until --not-after, --delegate may
grant this artifact's key, each grant lasting at most --max-duration and
allowing at most --max-uses sessions, to isolates of the listed classes,
measurements and nodes only (a list left out is open), and at most
--max-grants grants in all. The ledger refuses any grant beyond these, and
a release on a grant of a revoked delegation.

--min-tcb sets a floor on the security versions of one isolate class's
evidence (components as "cloister attest verify" shows them under svn:
snp, microcode, tee_tcb_svn0, pce_svn, ...): a grant under the delegation
must name a node and session, and the node's recorded evidence, verified
by the ledger at block time, must meet the floor of its class; brokers
release only on evidence that meets it. --rate N/DURATION allows at most N
grants in any DURATION of the ledger's block time.

Exit status: 0 delegated; 1 refused by the ledger; 2 bad usage.`,
		Example: `  cloister acl delegate --ledger "$L" --key alice.key --artifact sha256:… --delegate ed25519:… \
      --not-after +24h --max-duration 10m --max-uses 1 --class software --measurement ab… \
      --min-tcb sev-snp:snp=8,microcode=209 --rate 100/1h`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if keyFile == "" || artifact == "" || delegate == "" || notAfter == "" {
			return usageError("acl delegate: --key, --artifact, --delegate and --not-after are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		d := acl.Delegation{Artifact: artifact, Delegate: delegate, Limits: acl.Limits{Classes: classes, Measurements: measurements,
			Nodes: nodes, MaxDurationSeconds: uint64(maxDuration / time.Second), MaxUses: maxUses, MaxGrants: maxGrants}}
		if d.Limits.MinTCB, err = parseMinTCB(minTCB); err != nil {
			return err
		}
		if d.Limits.Rate, err = parseRate(rate); err != nil {
			return err
		}
		if d.NotAfter, err = aclTime("--not-after", notAfter); err != nil {
			return err
		}
		if err := d.Check(); err != nil {
			return usageError("acl delegate: %v", err)
		}
		return appendEntry(cmd, c, k.Signer(), acl.KindDelegated, d, asJSON, "acl delegate")
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the owner's principal key file")
	f.StringVar(&artifact, "artifact", "", "the artifact's ciphertext digest (sha256:…)")
	f.StringVar(&delegate, "delegate", "", "the delegate's signing key (ed25519:…)")
	f.StringVar(&notAfter, "not-after", "", "end of the delegation (RFC 3339, or +DURATION)")
	f.StringArrayVar(&classes, "class", nil, "allowed isolate class; repeat")
	f.StringArrayVar(&measurements, "measurement", nil, "allowed measurement (hex); repeat")
	f.StringArrayVar(&nodes, "node", nil, "allowed node platform key; repeat")
	f.DurationVar(&maxDuration, "max-duration", 0, "longest grant the delegate may make")
	f.Uint64Var(&maxUses, "max-uses", 0, "most uses one grant may allow")
	f.Uint64Var(&maxGrants, "max-grants", 0, "most grants in all (0: no limit)")
	f.StringArrayVar(&minTCB, "min-tcb", nil, "minimum security versions of a class's evidence, CLASS:COMP=N[,COMP=N]; repeat per class")
	f.StringVar(&rate, "rate", "", "most grants per window of block time, N/DURATION (e.g. 100/1h)")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	return cmd
}

// parseMinTCB reads --min-tcb values, CLASS:COMP=N[,COMP=N], one per
// class.
func parseMinTCB(vals []string) (map[string]map[string]uint64, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string]map[string]uint64{}
	for _, v := range vals {
		class, comps, ok := strings.Cut(v, ":")
		if !ok || class == "" || comps == "" {
			return nil, usageError("acl delegate: --min-tcb %q: want CLASS:COMP=N[,COMP=N]", v)
		}
		if out[class] != nil {
			return nil, usageError("acl delegate: --min-tcb names class %s twice", class)
		}
		out[class] = map[string]uint64{}
		for _, kv := range strings.Split(comps, ",") {
			comp, n, ok := strings.Cut(kv, "=")
			min, err := strconv.ParseUint(n, 0, 64)
			if !ok || err != nil {
				return nil, usageError("acl delegate: --min-tcb %q: %q is not COMP=N", v, kv)
			}
			out[class][comp] = min
		}
	}
	return out, nil
}

// parseRate reads --rate N/DURATION.
func parseRate(v string) (*acl.Rate, error) {
	if v == "" {
		return nil, nil
	}
	n, d, ok := strings.Cut(v, "/")
	grants, err := strconv.ParseUint(n, 10, 64)
	window, err2 := time.ParseDuration(d)
	if !ok || err != nil || err2 != nil || window%time.Second != 0 {
		return nil, usageError("acl delegate: --rate %q: want N/DURATION in whole seconds, e.g. 100/1h", v)
	}
	return &acl.Rate{Grants: grants, WindowSeconds: uint64(window / time.Second)}, nil
}

// aclListJSON is what "acl list --json" prints.
type aclListJSON struct {
	Artifact    string          `json:"artifact"`
	Owner       string          `json:"owner,omitempty"`
	Registered  *uint64         `json:"registered,omitempty"`
	Grants      []aclGrantJSON  `json:"grants"`
	Delegations []aclDelegJSON  `json:"delegations"`
	Releases    []aclReleaseOut `json:"releases"`
}

type aclGrantJSON struct {
	Index     uint64    `json:"index"`
	Grantor   string    `json:"grantor"`
	Grant     acl.Grant `json:"grant"`
	RevokedBy *uint64   `json:"revoked_by,omitempty"`
	Sessions  []string  `json:"sessions"`
}

type aclDelegJSON struct {
	Index      uint64         `json:"index"`
	Delegation acl.Delegation `json:"delegation"`
	RevokedBy  *uint64        `json:"revoked_by,omitempty"`
}

type aclReleaseOut struct {
	Index   uint64      `json:"index"`
	Broker  string      `json:"broker"`
	Release acl.Release `json:"release"`
}

func newACLListCmd() *cobra.Command {
	var artifact, owner string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --ledger URL --artifact DIGEST [--owner KEY] [--json]",
		Short: "List an artifact's registration, grants, delegations, revocations and releases",
		Long: `list reads the ledger's entries and shows everything about one artifact:
its registration, each grant (revoked or not, the sessions that used it),
each delegation, and each key.released entry with the broker that made it.
Each entry can be proved with "cloister ledger proof INDEX". Only entries the
ledger accepted are in it, so this is what the state machine judged.

Exit status: 0 listed; 1 the ledger could not be read; 2 bad usage.`,
		Example: `  cloister acl list --ledger "$L" --artifact sha256:… --json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if artifact == "" {
			return usageError("acl list: --artifact is required")
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		out, err := listACL(ctx, c, artifact, owner)
		if err != nil {
			return ledgerFailure("acl list", c, err)
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "artifact\t%s\towner %s\n", out.Artifact, out.Owner)
		for _, g := range out.Grants {
			state := "live"
			if g.RevokedBy != nil {
				state = fmt.Sprintf("revoked by %d", *g.RevokedBy)
			}
			who := g.Grant.Grantee.Class + " " + strings.Join(g.Grant.Grantee.Measurements, ",")
			if g.Grant.Grantee.Specific() {
				who = g.Grant.Grantee.Node + " session " + g.Grant.Grantee.Session
			}
			fmt.Fprintf(tw, "grant %d\t%s\tuntil %s\tuses %d/%d\t%s\n", g.Index, printable(who), g.Grant.NotAfter, len(g.Sessions), g.Grant.MaxUses, state)
		}
		for _, d := range out.Delegations {
			fmt.Fprintf(tw, "delegation %d\t%s\tuntil %s%s\n", d.Index, d.Delegation.Delegate, d.Delegation.NotAfter, delegationExtras(d.Delegation.Limits))
		}
		for _, r := range out.Releases {
			fmt.Fprintf(tw, "released %d\tshare %d\tgrant %d\tsession %s\n", r.Index, r.Release.Share, r.Release.Grant, printable(r.Release.Session))
		}
		return tw.Flush()
	}
	f := cmd.Flags()
	f.StringVar(&artifact, "artifact", "", "the artifact's ciphertext digest (sha256:…)")
	f.StringVar(&owner, "owner", "", "the artifact's owner, when several keys registered the digest (default: the first)")
	f.BoolVar(&asJSON, "json", false, "print the listing as JSON")
	return cmd
}

// delegationExtras shows a delegation's TCB floors and rate in the table.
func delegationExtras(l acl.Limits) string {
	var b strings.Builder
	for _, class := range slices.Sorted(maps.Keys(l.MinTCB)) {
		var cs []string
		for _, comp := range slices.Sorted(maps.Keys(l.MinTCB[class])) {
			cs = append(cs, fmt.Sprintf("%s>=%d", comp, l.MinTCB[class][comp]))
		}
		fmt.Fprintf(&b, "\tmin tcb %s %s", class, strings.Join(cs, ","))
	}
	if l.Rate != nil {
		fmt.Fprintf(&b, "\trate %d/%s", l.Rate.Grants, time.Duration(l.Rate.WindowSeconds)*time.Second)
	}
	return b.String()
}

// listACL folds the ledger's entries about one artifact.
func listACL(ctx context.Context, c *client.Client, artifact, owner string) (*aclListJSON, error) {
	out := &aclListJSON{Artifact: artifact, Owner: owner, Grants: []aclGrantJSON{}, Delegations: []aclDelegJSON{}, Releases: []aclReleaseOut{}}
	grants := map[uint64]int{}
	delegs := map[uint64]int{}
	for from := uint64(0); ; {
		page, err := c.Entries(ctx, from, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range page.Entries {
			se := e.Signed.Entry
			switch string(se.Kind) {
			case acl.KindArtifactRegistered:
				a, err := acl.DecodeArtifact(se.Body)
				if err == nil && a.Digest == artifact && out.Registered == nil && (owner == "" || owner == se.Submitter) {
					i := e.Index
					out.Registered, out.Owner = &i, se.Submitter
				}
			case acl.KindGranted:
				g, err := acl.DecodeGrant(se.Body)
				if err == nil && g.Artifact == artifact && g.Owner == out.Owner {
					grants[e.Index] = len(out.Grants)
					out.Grants = append(out.Grants, aclGrantJSON{Index: e.Index, Grantor: se.Submitter, Grant: *g, Sessions: []string{}})
				}
			case acl.KindDelegated:
				d, err := acl.DecodeDelegation(se.Body)
				if err == nil && d.Artifact == artifact && se.Submitter == out.Owner {
					delegs[e.Index] = len(out.Delegations)
					out.Delegations = append(out.Delegations, aclDelegJSON{Index: e.Index, Delegation: *d})
				}
			case acl.KindRevoked:
				r, err := acl.DecodeRevocation(se.Body)
				if err != nil {
					continue
				}
				i := e.Index
				if r.Grant != nil {
					if gi, ok := grants[*r.Grant]; ok {
						out.Grants[gi].RevokedBy = &i
					}
				} else if di, ok := delegs[*r.Delegation]; ok {
					out.Delegations[di].RevokedBy = &i
				}
			case acl.KindKeyReleased:
				r, err := acl.DecodeRelease(se.Body)
				if err != nil || r.Artifact != artifact || r.Owner != out.Owner {
					continue
				}
				out.Releases = append(out.Releases, aclReleaseOut{Index: e.Index, Broker: se.Submitter, Release: *r})
				if gi, ok := grants[r.Grant]; ok {
					s := r.Node + "/" + r.Session
					if !slices.Contains(out.Grants[gi].Sessions, s) {
						out.Grants[gi].Sessions = append(out.Grants[gi].Sessions, s)
					}
				}
			}
		}
		from += uint64(len(page.Entries))
		if len(page.Entries) == 0 || from >= page.Size {
			break
		}
	}
	return out, nil
}
