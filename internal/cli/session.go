package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all" // every evidence class a policy may accept
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

func newSessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Create, attest, provision, read and close sessions on a node",
		Long: `A session is one run of a policy on a node: the program provider uploads
the program, data providers upload inputs, the node runs the program when
everything is present, and result readers fetch outputs sealed to their own
keys. See docs/sessions.md for a walkthrough.

Every command that sends anything to a session first attests it: it checks
fresh evidence from the session against your copy of the policy (isolate
class, pinned platform keys or measurements, debug off) and that the
evidence binds the policy hash, the session's TLS key, its HPKE key and a
nonce it just chose. If any check fails it exits 1 and sends nothing.
Programs and inputs are HPKE-sealed to the session key before they leave
your machine; requests are signed with your principal key.

Exit status: 0 success; 1 refused or failed (the reason names the rule and
the principal); 2 bad usage or unreadable files.`,
		Example: `  id=$(cloister session create --node https://127.0.0.1:7443 --policy psi.json)
  cloister session upload --node https://127.0.0.1:7443 --session $id --policy psi.json \
      --key alice.key --program psi-sum.wasm=psi-sum.wasm
  cloister session result --node https://127.0.0.1:7443 --session $id --policy psi.json \
      --key dave.key --output result.json --out result.json --wait 30s`,
	}
	cmd.AddCommand(newSessionCreateCmd(), newSessionAttestCmd(), newSessionUploadCmd(),
		newSessionResultCmd(), newSessionStatusCmd(), newSessionCloseCmd())
	return cmd
}

// sessionFlags are the flags the session commands share.
type sessionFlags struct {
	node, session, policyPath, keyPath string
	asJSON                             bool
}

func (f *sessionFlags) addNode(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.node, "node", "", "node URL, https://HOST:PORT")
}

func (f *sessionFlags) addSession(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.session, "session", "", "session id (from session create)")
}

func (f *sessionFlags) addPolicy(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.policyPath, "policy", "", "policy file: your copy, checked against the session's")
}

func (f *sessionFlags) addKey(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.keyPath, "key", "", "your principal key file")
}

func (f *sessionFlags) require(cmdName string, names ...string) error {
	for _, n := range names {
		var v string
		switch n {
		case "node":
			v = f.node
		case "session":
			v = f.session
		case "policy":
			v = f.policyPath
		case "key":
			v = f.keyPath
		}
		if v == "" {
			return usageError("session %s: --%s is required", cmdName, n)
		}
		if n == "session" {
			if err := protocol.ValidSessionID(v); err != nil {
				return usageError("session %s: --session: %v", cmdName, err)
			}
		}
	}
	return nil
}

func nodeURL(s string) string {
	if !strings.Contains(s, "://") {
		return "https://" + s
	}
	return s
}

// dialFor makes a client; with a policy, the node's certificate must be
// certified by one of the policy's software platform keys.
func dialFor(ctx context.Context, f *sessionFlags, pol *policy.Policy, opts ...client.Option) (*client.Client, error) {
	if pol != nil {
		opts = append(opts, client.WithPlatformKeys(softwarePlatformKeys(pol)...))
	}
	c, err := client.Dial(ctx, nodeURL(f.node), opts...)
	if err != nil {
		return nil, usageError("--node: %v", err)
	}
	return c, nil
}

// softwarePlatformKeys lists the Ed25519 platform keys of the policy's
// software isolate entry: the keys a node certifies its TLS key with.
func softwarePlatformKeys(pol *policy.Policy) []ed25519.PublicKey {
	iso, ok := pol.Isolate(string(attest.ClassSoftware))
	if !ok {
		return nil
	}
	var out []ed25519.PublicKey
	for _, k := range iso.PlatformKeys {
		if pk, err := keys.ParseSigningKey(k); err == nil {
			out = append(out, pk)
		}
	}
	return out
}

func loadKey(path string) (*keys.PrivateKey, error) {
	k, err := keys.Load(path)
	if err == nil {
		return k, nil
	}
	if errors.Is(err, keys.ErrPermissions) {
		return nil, failure(err)
	}
	return nil, usageError("--key: %v", err)
}

// attestSession loads the policy, dials and attests; every command that
// sends anything starts here.
// attestWithKey loads --key (first: an unreadable key is bad usage, found
// before anything is sent) and attests the session.
func attestWithKey(ctx context.Context, f *sessionFlags) (*client.AttestedSession, *keys.PrivateKey, error) {
	key, err := loadKey(f.keyPath)
	if err != nil {
		return nil, nil, err
	}
	as, _, err := attestSession(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	return as, key, nil
}

func attestSession(ctx context.Context, f *sessionFlags) (*client.AttestedSession, *policy.Policy, error) {
	pol, err := loadPolicy(f.policyPath)
	if err != nil {
		return nil, nil, err
	}
	c, err := dialFor(ctx, f, pol)
	if err != nil {
		return nil, nil, err
	}
	as, err := c.Attest(ctx, f.session, pol)
	if err != nil {
		return nil, nil, failure(explainNodeError(ctx, nodeURL(f.node), pol, err))
	}
	return as, pol, nil
}

func newSessionCreateCmd() *cobra.Command {
	f := &sessionFlags{}
	var token string
	cmd := &cobra.Command{
		Use:   "create --node URL --policy FILE [--key FILE] [--token TOKEN]",
		Short: "Start a session for a policy and print its id",
		Long: `create sends the policy to the node, which starts a session with fresh keys
and refuses policies that are expired, that do not accept its isolate class,
or (for the software class) that do not list its platform key. The node's TLS
certificate must be certified by one of the policy's software platform keys.
It prints the session id alone on standard output.

The node decides who may create sessions (its admission mode): with --key the
request is signed by that key, the creator, which an allow-list node must
list, a consortium node must find as a member on its ledger, and a token
node must find admitted by --token (an operator-signed admission token,
'cloister admission token'). A node in open mode also takes unsigned
requests. Whatever the mode, each creator's sessions, stored bytes and
creation rate are capped; a refusal names the limit.

Exit status: 0 created; 1 refused by the node or node not authenticated;
2 bad usage or unreadable policy.`,
		Example: `  id=$(cloister session create --node https://127.0.0.1:7443 --policy psi.json)
  id=$(cloister session create --node https://node.example:7443 --policy psi.json --key org.key)
  id=$(cloister session create --node https://node.example:7443 --policy psi.json --key org.key --token "$(cat org.token)")`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("create", "node", "policy"); err != nil {
				return err
			}
			doc, err := os.ReadFile(f.policyPath)
			if err != nil {
				return usageError("--policy: %v", err)
			}
			pol, err := loadPolicy(f.policyPath)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var opts []client.Option
			if f.keyPath != "" {
				key, err := loadKey(f.keyPath)
				if err != nil {
					return err
				}
				opts = append(opts, client.WithCreator(key))
			}
			if token != "" {
				if f.keyPath == "" {
					return usageError("session create: --token admits the key given with --key")
				}
				opts = append(opts, client.WithAdmissionToken(strings.TrimSpace(token)))
			}
			c, err := dialFor(ctx, f, pol, opts...)
			if err != nil {
				return err
			}
			defer c.Close()
			if replicated(pol) {
				return createReplicated(cmd, f, c, doc, pol, append(opts, client.WithPlatformKeys(softwarePlatformKeys(pol)...)))
			}
			p := startProgress(cmd, "the node to create the session", 0)
			id, err := c.CreateSession(ctx, doc)
			p.done()
			if err != nil {
				return failure(explainNodeError(ctx, nodeURL(f.node), pol, err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	f.addNode(cmd)
	f.addPolicy(cmd)
	cmd.Flags().StringVar(&f.keyPath, "key", "", "creator key file: signs the request (admission by allow-list, token or consortium)")
	cmd.Flags().StringVar(&token, "token", "", "operator-signed admission token for the --key (nodes in token mode)")
	return cmd
}

// attestJSON is the --json output of session attest.
type attestJSON struct {
	SessionID         string   `json:"session_id"`
	Verified          bool     `json:"verified"`
	PolicyHash        string   `json:"policy_hash"`
	Class             string   `json:"class"`
	Format            string   `json:"format"`
	Measurement       string   `json:"measurement"`
	Signer            string   `json:"signer,omitempty"`
	HardwareProtected bool     `json:"hardware_protected"`
	TLSKeySHA256      string   `json:"tls_key_sha256"`
	HPKEKeySHA256     string   `json:"hpke_key_sha256"`
	IssuedAt          string   `json:"issued_at,omitempty"`
	Warnings          []string `json:"warnings"`
}

func newSessionAttestCmd() *cobra.Command {
	f := &sessionFlags{}
	cmd := &cobra.Command{
		Use:   "attest --node URL --session ID --policy FILE [--json]",
		Short: "Verify a session's evidence against your policy",
		Long: `attest sends a fresh 32-byte nonce to the session over TLS to the session's
own key and verifies what comes back: the evidence's signature with the
policy's pinned keys or vendor roots, the policy's reference values, and
that its report data binds your policy's hash, the TLS key your connection
saw, the session's HPKE key and your nonce. It prints what was verified.

Exit status: 0 verified; 1 evidence or policy hash mismatch (nothing was
sent); 2 bad usage or unreadable policy.`,
		Example: `  cloister session attest --node https://127.0.0.1:7443 --session $id --policy psi.json --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("attest", "node", "session", "policy"); err != nil {
				return err
			}
			if pol, err := loadPolicy(f.policyPath); err == nil && replicated(pol) {
				return attestReplicated(cmd, f, pol)
			}
			as, _, err := attestSession(cmd.Context(), f)
			if err != nil {
				return err
			}
			defer as.CloseIdleConnections()
			cl := as.Claims()
			h := as.PolicyHash()
			out := attestJSON{
				SessionID: as.ID(), Verified: true, PolicyHash: hex.EncodeToString(h[:]),
				Class: string(cl.Class), Format: cl.Format, Measurement: hex.EncodeToString(cl.Measurement),
				Signer: cl.Signer, HardwareProtected: cl.HardwareProtected,
				TLSKeySHA256: as.TLSKeyHash(), HPKEKeySHA256: as.HPKEKeyHash(), Warnings: append([]string{}, cl.Warnings...),
			}
			if !cl.IssuedAt.IsZero() {
				out.IssuedAt = cl.IssuedAt.UTC().Format(time.RFC3339)
			}
			if f.asJSON {
				writeJSON(cmd.OutOrStdout(), out)
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "session %s: evidence verified against your policy\n", out.SessionID)
			fmt.Fprintf(w, "  policy hash\t%s\n", out.PolicyHash)
			fmt.Fprintf(w, "  class\t%s (%s)\n", out.Class, out.Format)
			fmt.Fprintf(w, "  measurement\t%s\n", out.Measurement)
			if out.Signer != "" {
				fmt.Fprintf(w, "  signed by\t%s\n", out.Signer)
			}
			fmt.Fprintf(w, "  session TLS key\tsha256:%s\n", out.TLSKeySHA256)
			fmt.Fprintf(w, "  session HPKE key\tsha256:%s\n", out.HPKEKeySHA256)
			for _, wn := range out.Warnings {
				fmt.Fprintf(w, "  warning\t%s\n", wn)
			}
			return w.Flush()
		},
	}
	f.addNode(cmd)
	f.addSession(cmd)
	f.addPolicy(cmd)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the verified claims as JSON")
	return cmd
}

// splitAssign parses NAME=PATH.
func splitAssign(flag, v string) (string, string, error) {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return "", "", usageError("--%s %q: want NAME=PATH", flag, v)
	}
	return name, path, nil
}

func newSessionUploadCmd() *cobra.Command {
	f := &sessionFlags{}
	var program, input string
	cmd := &cobra.Command{
		Use:   "upload --node URL --session ID --policy FILE --key FILE (--program NAME=PATH | --input NAME=PATH)",
		Short: "Seal a program or an input to an attested session and upload it",
		Long: `upload attests the session, seals the file at PATH to the session's HPKE key
(bound to the session id, NAME and the policy hash) and sends it in a request
signed with your key. The node accepts it only from the provider the policy
lists for NAME, only once, and for a program only if its SHA-256 is the
policy's. The run starts by itself when every program and input is present.
A file larger than 16 MiB is streamed instead: sealed as it is read and sent
in chunks, resuming after a dropped connection, never held whole in memory
(docs/sessions.md, "Large programs and inputs").

Exit status: 0 uploaded; 1 attestation failed or the node refused (the reason
names the rule and principal); 2 bad usage or unreadable files.`,
		Example: `  cloister session upload --node https://127.0.0.1:7443 --session $id --policy psi.json \
      --key bob.key --input customers.csv=./customers.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("upload", "node", "session", "policy", "key"); err != nil {
				return err
			}
			if (program == "") == (input == "") {
				return usageError("session upload: give exactly one of --program NAME=PATH or --input NAME=PATH")
			}
			flag, v := "input", input
			if program != "" {
				flag, v = "program", program
			}
			name, path, err := splitAssign(flag, v)
			if err != nil {
				return err
			}
			file, err := os.Open(path)
			if err != nil {
				return usageError("--%s: %v", flag, err)
			}
			defer file.Close()
			st, err := file.Stat()
			if err != nil || !st.Mode().IsRegular() {
				return usageError("--%s: %s is not a regular file", flag, path)
			}
			ctx := cmd.Context()
			if pol, err := loadPolicy(f.policyPath); err == nil && replicated(pol) {
				key, err := loadKey(f.keyPath)
				if err != nil {
					return err
				}
				return uploadReplicated(cmd, f, pol, key, program != "", name, file, st.Size())
			}
			as, key, err := attestWithKey(ctx, f)
			if err != nil {
				return err
			}
			defer as.CloseIdleConnections()
			how := "sealed to the session"
			if st.Size() > streamAbove {
				how = "sealed and streamed in chunks"
			}
			p := startProgress(cmd, fmt.Sprintf("the node to take %s %s (%d bytes, %s)", flag, name, st.Size(), how), 0)
			var up *client.Upload
			switch {
			case st.Size() > streamAbove && program != "":
				up, err = as.UploadProgramStream(ctx, key, name, file, st.Size())
			case st.Size() > streamAbove:
				up, err = as.UploadInputStream(ctx, key, name, file, st.Size())
			default:
				var data []byte
				if data, err = io.ReadAll(file); err != nil {
					break
				}
				if program != "" {
					up, err = as.UploadProgram(ctx, key, name, data)
				} else {
					up, err = as.UploadInput(ctx, key, name, data)
				}
			}
			p.done()
			if err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s %s (%d bytes %s, sha256:%s); session is %s\n",
				flag, name, st.Size(), how, up.EnvelopeSHA256, stateName(up.State))
			return nil
		},
	}
	f.addNode(cmd)
	f.addSession(cmd)
	f.addPolicy(cmd)
	f.addKey(cmd)
	cmd.Flags().StringVar(&program, "program", "", "program to upload, NAME=PATH (NAME as in the policy)")
	cmd.Flags().StringVar(&input, "input", "", "input to upload, NAME=PATH (NAME as in the policy)")
	return cmd
}

// streamAbove is the size above which `session upload` streams a file
// rather than sending it as one envelope.
const streamAbove = 16 << 20

func newSessionResultCmd() *cobra.Command {
	f := &sessionFlags{}
	var output, out string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "result --node URL --session ID --policy FILE --key FILE --output NAME --out PATH [--wait DURATION]",
		Short: "Fetch an output sealed to you and write it to a file",
		Long: `result attests the session, asks for output NAME in a request signed with
your key, opens the envelope (sealed by the session to your sealing key) and
writes the plaintext to PATH (mode 0600, replaced atomically). The node
answers only the readers the policy lists for NAME. A large output (one the
node keeps as a sealed file) is fetched in chunks and opened as it arrives,
resuming after a dropped connection, never whole in memory. With --wait it
waits up to DURATION for the run to finish and the output to arrive;
without it, it fails at once if the result is not ready.

Exit status: 0 written; 1 attestation failed, refused, run failed or not
finished in time; 2 bad usage or unreadable files.`,
		Example: `  cloister session result --node https://127.0.0.1:7443 --session $id --policy psi.json \
      --key dave.key --output result.json --out result.json --wait 1m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("result", "node", "session", "policy", "key"); err != nil {
				return err
			}
			if output == "" || out == "" {
				return usageError("session result: --output NAME and --out PATH are required")
			}
			if wait < 0 {
				return usageError("session result: --wait must not be negative")
			}
			ctx := cmd.Context()
			var fetch func(io.Writer) (int64, error)
			if pol, err := loadPolicy(f.policyPath); err == nil && replicated(pol) {
				key, err := loadKey(f.keyPath)
				if err != nil {
					return err
				}
				fetch = func(w io.Writer) (int64, error) { return resultReplicated(cmd, f, pol, key, output, wait, w) }
			} else {
				as, key, err := attestWithKey(ctx, f)
				if err != nil {
					return err
				}
				defer as.CloseIdleConnections()
				fetch = func(w io.Writer) (int64, error) { return awaitResult(ctx, cmd, as, key, output, wait, w) }
			}
			file, err := atomicfile.Create(out, 0o600)
			if err != nil {
				return usageError("--out: %v", err)
			}
			defer file.Abort() // after Commit, nothing
			n, err := fetch(file)
			if err != nil {
				return err
			}
			if err := file.Commit(); err != nil {
				return usageError("--out: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes)\n", out, n)
			return nil
		},
	}
	f.addNode(cmd)
	f.addSession(cmd)
	f.addPolicy(cmd)
	f.addKey(cmd)
	cmd.Flags().StringVar(&output, "output", "", "output name, as in the policy")
	cmd.Flags().StringVar(&out, "out", "", "file to write the output to")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the run to finish (e.g. 30s)")
	return cmd
}

func stateName(s cloisterv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

// statusJSON is the --json output of session status.
type statusJSON struct {
	SessionID    string       `json:"session_id"`
	State        string       `json:"state"`
	Reason       string       `json:"reason,omitempty"`
	PolicyName   string       `json:"policy_name,omitempty"`
	PolicyHash   string       `json:"policy_hash,omitempty"`
	IsolateClass string       `json:"isolate_class,omitempty"`
	Programs     []slotJSON   `json:"programs"`
	Inputs       []slotJSON   `json:"inputs"`
	Outputs      []outputJSON `json:"outputs"`
	Report       *reportJSON  `json:"report,omitempty"`
	Events       []eventJSON  `json:"events"`
}

type slotJSON struct {
	Name           string `json:"name"`
	Provider       string `json:"provider"`
	Present        bool   `json:"present"`
	EnvelopeSHA256 string `json:"envelope_sha256,omitempty"`
	LedgerIndex    uint64 `json:"ledger_index,omitempty"`
}

type outputJSON struct {
	Name      string   `json:"name"`
	Readers   []string `json:"readers"`
	Available bool     `json:"available"`
	FetchedBy []string `json:"fetched_by"`
}

type reportJSON struct {
	Outcome     string   `json:"outcome"`
	ExitCode    int32    `json:"exit_code"`
	WallMS      int64    `json:"wall_ms"`
	CPUMS       *int64   `json:"cpu_ms,omitempty"` // left out when the node did not measure it
	Program     string   `json:"program_sha256"`
	Protections []string `json:"protections"`
	Error       string   `json:"error,omitempty"`
}

type eventJSON struct {
	Kind        string `json:"kind"`
	Principal   string `json:"principal,omitempty"`
	Name        string `json:"name,omitempty"`
	Time        string `json:"time"`
	LedgerIndex uint64 `json:"ledger_index,omitempty"`
}

func toStatusJSON(st *client.Status) statusJSON {
	out := statusJSON{
		SessionID: st.SessionId, State: stateName(st.State), Reason: st.Reason, PolicyName: st.PolicyName,
		IsolateClass: st.IsolateClass, Programs: []slotJSON{}, Inputs: []slotJSON{}, Outputs: []outputJSON{}, Events: []eventJSON{},
	}
	if len(st.PolicyHash) > 0 {
		out.PolicyHash = hex.EncodeToString(st.PolicyHash)
	}
	slot := func(s *cloisterv1.Slot) slotJSON {
		return slotJSON{Name: s.Name, Provider: s.Provider, Present: s.Present, EnvelopeSHA256: s.EnvelopeSha256, LedgerIndex: s.EventIndex}
	}
	for _, s := range st.Programs {
		out.Programs = append(out.Programs, slot(s))
	}
	for _, s := range st.Inputs {
		out.Inputs = append(out.Inputs, slot(s))
	}
	for _, o := range st.Outputs {
		out.Outputs = append(out.Outputs, outputJSON{Name: o.Name, Readers: o.Readers, Available: o.Available, FetchedBy: append([]string{}, o.FetchedBy...)})
	}
	if r := st.Report; r != nil {
		out.Report = &reportJSON{Outcome: r.Outcome, ExitCode: r.ExitCode, WallMS: r.WallMs, CPUMS: r.CpuMs, Program: r.ProgramSha256, Protections: r.Protections, Error: r.Error}
	}
	for _, e := range st.Events {
		out.Events = append(out.Events, eventJSON{Kind: e.Kind, Principal: e.Principal, Name: e.Name,
			Time: time.UnixMilli(e.UnixMs).UTC().Format(time.RFC3339Nano), LedgerIndex: e.LedgerIndex})
	}
	return out
}

func printStatus(w io.Writer, s statusJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "session %s: %s\n", s.SessionID, s.State)
	if s.Reason != "" {
		fmt.Fprintf(tw, "  reason\t%s\n", s.Reason)
	}
	if s.PolicyName != "" {
		fmt.Fprintf(tw, "  policy\t%s (sha256:%s)\n", s.PolicyName, s.PolicyHash)
		fmt.Fprintf(tw, "  isolate class\t%s\n", s.IsolateClass)
	}
	mark := func(b bool) string {
		if b {
			return "present"
		}
		return "waiting"
	}
	for _, p := range s.Programs {
		fmt.Fprintf(tw, "  program %s\tfrom %s\t%s\n", p.Name, p.Provider, mark(p.Present))
	}
	for _, p := range s.Inputs {
		fmt.Fprintf(tw, "  input %s\tfrom %s\t%s\n", p.Name, p.Provider, mark(p.Present))
	}
	for _, o := range s.Outputs {
		st := "not available"
		if o.Available {
			st = "available"
		}
		fetched := ""
		if len(o.FetchedBy) > 0 {
			fetched = ", fetched by " + strings.Join(o.FetchedBy, ", ")
		}
		fmt.Fprintf(tw, "  output %s\tfor %s\t%s%s\n", o.Name, strings.Join(o.Readers, ", "), st, fetched)
	}
	if r := s.Report; r != nil {
		fmt.Fprintf(tw, "  run\t%s, exit %d, %d ms\n", r.Outcome, r.ExitCode, r.WallMS)
	}
	if len(s.Events) > 0 {
		fmt.Fprintf(tw, "  events\n")
	}
	for _, e := range s.Events {
		what := e.Kind
		if e.Name != "" {
			what += " " + e.Name
		}
		if e.Principal != "" {
			what += " by " + e.Principal
		}
		idx := "not on the ledger"
		if e.LedgerIndex != 0 {
			idx = fmt.Sprintf("ledger #%d", e.LedgerIndex)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\n", e.Time, what, idx)
	}
	tw.Flush()
}

func newSessionStatusCmd() *cobra.Command {
	f := &sessionFlags{}
	cmd := &cobra.Command{
		Use:   "status --node URL --session ID [--json]",
		Short: "Show a session's state (advisory: not attested)",
		Long: `status asks the node what state a session is in: which programs and inputs
are present (with the SHA-256 of each sealed envelope, never its content),
whether outputs are available and who fetched them, how the run ended, and
the session's events with their ledger indexes when the node records them
(a node records on a ledger unless started with --no-ledger; index 0 never
holds a session event, so an event without an index was not recorded).

Status is advisory: without --policy it is not authenticated, and nothing in
it is secret. With --policy, the node's certificate must be certified by one
of the policy's platform keys.

Exit status: 0 printed; 1 no such session or node unreachable; 2 bad usage.`,
		Example: `  cloister session status --node https://127.0.0.1:7443 --session $id --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("status", "node", "session"); err != nil {
				return err
			}
			var pol *policy.Policy
			if f.policyPath != "" {
				var err error
				if pol, err = loadPolicy(f.policyPath); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			if replicated(pol) {
				return statusReplicated(cmd, f, pol)
			}
			c, err := dialFor(ctx, f, pol)
			if err != nil {
				return err
			}
			defer c.Close()
			p := startProgress(cmd, "the node's account of session "+f.session, 0)
			p.set("it answers once the session's steps are on its ledger")
			st, err := c.Status(ctx, f.session, 0)
			p.done()
			if err != nil {
				return failure(explainNodeError(ctx, nodeURL(f.node), pol, err))
			}
			out := toStatusJSON(st)
			if f.asJSON {
				writeJSON(cmd.OutOrStdout(), out)
				return nil
			}
			printStatus(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f.addNode(cmd)
	f.addSession(cmd)
	f.addPolicy(cmd)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the status as JSON")
	return cmd
}

func newSessionCloseCmd() *cobra.Command {
	f := &sessionFlags{}
	cmd := &cobra.Command{
		Use:   "close --node URL --session ID --policy FILE --key FILE",
		Short: "Erase a session (any principal of its policy)",
		Long: `close attests the session and asks the node, in a request signed with your
key, to erase it: its keys, sealed programs, inputs and outputs, in memory
and on disk. Only principals of the policy may close a session; afterwards
status reports who closed it and when.

Exit status: 0 closed; 1 attestation failed or refused; 2 bad usage or
unreadable files.`,
		Example: `  cloister session close --node https://127.0.0.1:7443 --session $id --policy psi.json --key dave.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.require("close", "node", "session", "policy", "key"); err != nil {
				return err
			}
			ctx := cmd.Context()
			if pol, err := loadPolicy(f.policyPath); err == nil && replicated(pol) {
				key, err := loadKey(f.keyPath)
				if err != nil {
					return err
				}
				return closeReplicated(cmd, f, pol, key)
			}
			as, key, err := attestWithKey(ctx, f)
			if err != nil {
				return err
			}
			defer as.CloseIdleConnections()
			if err := as.Close(ctx, key); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "session %s closed; its data is erased\n", as.ID())
			return nil
		},
	}
	f.addNode(cmd)
	f.addSession(cmd)
	f.addPolicy(cmd)
	f.addKey(cmd)
	return cmd
}

// awaitResult fetches output, waiting up to wait for the run to end. While
// it waits it reports what the session still lacks (uploads, or the run
// itself); if the run has not ended in time, it says so and why.
func awaitResult(ctx context.Context, cmd *cobra.Command, as *client.AttestedSession, key *keys.PrivateKey, output string, wait time.Duration, w io.Writer) (int64, error) {
	rctx := ctx
	var watched chan struct{}
	last := &lastStatus{}
	if wait > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
		p := startProgress(cmd, fmt.Sprintf("the result of session %s", as.ID()), wait)
		defer p.done()
		wctx, wcancel := context.WithCancel(rctx)
		defer wcancel()
		watched = make(chan struct{})
		go func() {
			defer close(watched)
			for {
				if st, err := as.Status(wctx); err == nil {
					last.set(st)
					p.set(sessionLacks(st))
				}
				select {
				case <-wctx.Done():
					return
				case <-time.After(2 * time.Second):
				}
			}
		}()
	}
	n, err := as.ResultTo(rctx, key, output, w)
	if err == nil {
		return n, nil
	}
	if n > 0 || connect.CodeOf(err) != connect.CodeUnavailable && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return 0, failure(err)
	}
	st := last.get()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if fresh, serr := as.Status(sctx); serr == nil {
		st = fresh
	}
	cancel()
	return 0, failure(resultNotReady(output, wait, st))
}

// lastStatus is the latest status the result wait saw.
type lastStatus struct {
	mu sync.Mutex
	st *client.Status
}

func (l *lastStatus) set(st *client.Status) { l.mu.Lock(); l.st = st; l.mu.Unlock() }
func (l *lastStatus) get() *client.Status   { l.mu.Lock(); defer l.mu.Unlock(); return l.st }

// sessionLacks says what a session waits for: the uploads still missing,
// with who owes them, or the run.
func sessionLacks(st *client.Status) string {
	if st == nil {
		return ""
	}
	var missing []string
	for _, sl := range st.Programs {
		if !sl.Present {
			missing = append(missing, fmt.Sprintf("program %s from %s", sl.Name, sl.Provider))
		}
	}
	for _, sl := range st.Inputs {
		if !sl.Present {
			from := "from " + sl.Provider
			if sl.Provider == "" {
				from = "fetched from storage"
			}
			missing = append(missing, fmt.Sprintf("input %s %s", sl.Name, from))
		}
	}
	switch {
	case len(missing) > 0:
		return "missing " + strings.Join(missing, ", ")
	case st.State == cloisterv1.SessionState_SESSION_STATE_RUNNING:
		return "the program is running"
	case st.State == cloisterv1.SessionState_SESSION_STATE_PROVISIONING:
		return "every upload is in; the run is starting"
	}
	return "session is " + stateName(st.State)
}

// resultNotReady is the error of a result that was not ready in time.
func resultNotReady(output string, wait time.Duration, st *client.Status) error {
	why := "the run has not finished"
	if lacks := sessionLacks(st); strings.HasPrefix(lacks, "missing ") {
		why = "the run has not started: " + lacks
	} else if lacks == "the program is running" {
		why = "the program is still running"
	}
	if wait > 0 {
		return fmt.Errorf("result %q: not ready after --wait %s: %s. Run the command again (or with a longer --wait) once it is done; 'cloister session status' shows where the session is", output, roundSeconds(wait), why)
	}
	return fmt.Errorf("result %q: not ready: %s. Give --wait 1m to wait for it; 'cloister session status' shows where the session is", output, why)
}
