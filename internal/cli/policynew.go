package cli

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// policySpec is what "policy new" is told, by flags or by answers to its
// prompts, in the forms the flags take.
type policySpec struct {
	name         string
	principals   []string // ID=KEY or KEYFILE
	roles        []string // ID=ROLE[,ROLE]
	programs     []string // PROVIDER:NAME=FILE or PROVIDER:NAME=sha256:HEX
	inputs       []string // PROVIDER:NAME[=PIN] or NAME=sha256:HEX@STORE[,STORE]
	outputs      []string // READER[,READER]:NAME
	class        string
	platformKeys []string // ed25519:…, key files, PEM files
	nodeURL      string
	nodeData     string
	measurements []string
	allowDebug   bool
	memory       string
	timeout      string
	maxOutput    string
	determinist  bool
	replicas     int
	expires      string
}

func newPolicyNewCmd() *cobra.Command {
	var (
		s           policySpec
		out         string
		force       bool
		interactive bool
	)
	cmd := &cobra.Command{
		Use:   "new --out FILE [flags] | new --interactive --out FILE",
		Short: "Write a new policy from flags or from answers to prompts, validate it and print its hash",
		Long: `new builds a policy (docs/policy.md) from what it is told, checks it against
every rule, writes it to FILE and prints its hash on standard output.

Principals are named by their public keys, read from key files:
  --principal alice.key          id "alice" (the file name without extension)
  --principal alice=keys/a.key   id "alice"
  --principal dave=dave.pub      a file holding the output of 'cloister key public'
                                 (with or without --json): no private key needed
  --principal eve=ed25519:…      a signing key inline (add ,hpke:… for a reader)
Each principal's roles follow from what it does below (a program provider,
a data provider, a result reader); --role ID=ROLE adds others.

  --program alice:psi-sum.wasm=examples/psi-sum/psi-sum.wasm   pinned by the file's SHA-256
  --program alice:psi-sum.wasm=sha256:HEX                      pinned by its hash
  --input bob:customers.csv                      uploaded by bob
  --input bob:customers.csv=sha256:HEX           uploaded by bob, only with those bytes
  --input weights.bin=sha256:HEX@http://10.0.0.5:7444/models   fetched by the node
                                                 from these stores (comma-separated)
  --output dave:result.json      read by dave (dave,erin:result.json for two readers)

The isolate class is software unless --isolate says otherwise. The keys of
the nodes trusted to run it come from:
  --node-data DIR    the node's data directory: DIR/platform.key (software) or
                     DIR/tpm-ak.pem (tpm); the directory of 'cloister up' will do
  --node URL         a running node's own answer (an unauthenticated question:
                     compare the key printed with what the operator says)
  --platform-key K   the key itself: ed25519:…, a key file, a PEM file (tpm)
Hardware classes take --measurement HEX instead (repeatable).

Limits default to the format's (256MiB, 30s, 16MiB); the policy is
deterministic (a fixed clock, seeded randomness) unless --deterministic=false,
and expires in 30 days unless --expires says otherwise (an RFC 3339 time or a
duration such as 90d or 12h).

With --interactive (or with no principal given, on a terminal) it asks for
each part in turn, with what the flags already said as defaults.

It never overwrites FILE unless --force. Every party should then read it
('cloister policy show FILE') and compare hashes ('cloister policy hash').

Exit status: 0 written (the hash is printed); 1 the policy breaks a rule
(every problem is listed, nothing is written) or FILE exists; 2 bad usage or
an unreadable key or program file.`,
		Example: `  cloister policy new --out psi.json --node-data ./cloister-local \
      --principal alice.key --principal bob.key --principal carol.key --principal dave.key \
      --program alice:psi-sum.wasm=examples/psi-sum/psi-sum.wasm \
      --input bob:customers.csv --input carol:purchases.csv --output dave:result.json
  cloister policy new --interactive --out psi.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError("policy new: --out FILE is required")
			}
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return failure(fmt.Errorf("policy new: %s already exists; choose another --out, or give --force to replace it", out))
				}
			}
			if !interactive && len(s.principals) == 0 {
				if !isTerminal(cmd.InOrStdin()) {
					return usageError("policy new: give the principals, program and outputs as flags (see --help), or run with --interactive")
				}
				interactive = true
			}
			ctx := cmd.Context()
			var doc []byte
			var pol *policy.Policy
			if interactive {
				var err error
				if doc, pol, err = askPolicy(ctx, cmd.InOrStdin(), cmd.ErrOrStderr(), &s); err != nil {
					return err
				}
			} else {
				var err error
				if doc, pol, err = buildPolicy(ctx, cmd.ErrOrStderr(), &s); err != nil {
					return err
				}
			}
			var opts []atomicfile.Option
			if !force {
				opts = append(opts, atomicfile.NoReplace())
			}
			if err := atomicfile.WriteFile(out, doc, 0o644, opts...); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return failure(fmt.Errorf("policy new: %s already exists; choose another --out, or give --force to replace it", out))
				}
				return failure(fmt.Errorf("policy new: %w", err))
			}
			ids := make([]string, len(pol.Principals))
			for i, p := range pol.Principals {
				ids[i] = p.ID
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: policy %q for %s, expires %s\n", out, pol.Name, strings.Join(ids, ", "), pol.Expires.Format(time.RFC3339))
			fmt.Fprintln(cmd.OutOrStdout(), pol.HashHex())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "policy file to write")
	f.BoolVar(&force, "force", false, "replace FILE if it exists")
	f.BoolVarP(&interactive, "interactive", "i", false, "ask for each part of the policy")
	f.StringVar(&s.name, "name", "", "policy name (default: the first program's name without extension)")
	f.StringArrayVar(&s.principals, "principal", nil, "a principal: KEYFILE, ID=KEYFILE, ID=PUBLIC-KEY-FILE or ID=ed25519:…[,hpke:…] (repeatable)")
	f.StringArrayVar(&s.roles, "role", nil, "an extra role: ID=program-provider|data-provider|result-reader (repeatable)")
	f.StringArrayVar(&s.programs, "program", nil, "a program: PROVIDER:NAME=FILE or PROVIDER:NAME=sha256:HEX (repeatable)")
	f.StringArrayVar(&s.inputs, "input", nil, "an input: PROVIDER:NAME[=sha256:HEX|=FILE], or NAME=sha256:HEX@STORE[,STORE] (repeatable)")
	f.StringArrayVar(&s.outputs, "output", nil, "an output: READER[,READER]:NAME (repeatable)")
	f.StringVar(&s.class, "isolate", "", "isolate class: software (default), tpm, sev-snp, tdx, sgx or nitro")
	f.StringArrayVar(&s.platformKeys, "platform-key", nil, "a trusted node key: ed25519:…, a key file, or a PEM file for tpm (repeatable)")
	f.StringVar(&s.nodeURL, "node", "", "read the platform key and class from the running node at this URL")
	f.StringVar(&s.nodeData, "node-data", "", "read the platform key from this node data directory (or a 'cloister up' directory)")
	f.StringArrayVar(&s.measurements, "measurement", nil, "an accepted launch measurement, hex (repeatable)")
	f.BoolVar(&s.allowDebug, "allow-debug", false, "accept debug-enabled isolates (testing only)")
	f.StringVar(&s.memory, "memory", "", "memory limit, e.g. 256MiB (default 256MiB)")
	f.StringVar(&s.timeout, "timeout", "", "wall-clock limit of a run, e.g. 30s (default 30s)")
	f.StringVar(&s.maxOutput, "max-output", "", "total output limit, e.g. 1MiB (default 16MiB)")
	f.BoolVar(&s.determinist, "deterministic", true, "fixed clock and seeded randomness, so that runs can be re-executed and compared")
	f.IntVar(&s.replicas, "replicas", 0, "isolates that must agree (default 1)")
	f.StringVar(&s.expires, "expires", "30d", "expiry: an RFC 3339 time, or a duration from now such as 30d or 12h")
	return cmd
}

// buildPolicy turns a spec into the policy document and its parsed,
// validated form. Notes (where a key came from) go to w.
func buildPolicy(ctx context.Context, w io.Writer, s *policySpec) ([]byte, *policy.Policy, error) {
	p := &policy.Policy{Version: policy.Version, Deterministic: s.determinist, Replicas: s.replicas}
	ids := map[string]int{}
	type pub struct{ signing, sealing string }
	pubs := map[string]pub{}
	for _, v := range s.principals {
		id, sk, hk, err := parsePrincipal(v)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := ids[id]; dup {
			return nil, nil, usageError("--principal %q: %s is given twice", v, id)
		}
		ids[id] = len(p.Principals)
		pubs[id] = pub{sk, hk}
		p.Principals = append(p.Principals, policy.Principal{ID: id, SigningKey: sk, Roles: []policy.Role{}})
	}
	need := func(flag, v, id string, role policy.Role) error {
		i, ok := ids[id]
		if !ok {
			return usageError("--%s %q: %s is not a principal; add --principal %s=%s.key (or the file holding %s's public keys)", flag, v, id, id, id, id)
		}
		if !slices.Contains(p.Principals[i].Roles, role) {
			p.Principals[i].Roles = append(p.Principals[i].Roles, role)
		}
		return nil
	}
	for _, v := range s.programs {
		who, name, src, err := splitItem("program", v)
		if err != nil {
			return nil, nil, err
		}
		if who == "" || src == "" {
			return nil, nil, usageError("--program %q: want PROVIDER:NAME=FILE or PROVIDER:NAME=sha256:HEX", v)
		}
		sum, err := pinOf("program", v, src)
		if err != nil {
			return nil, nil, err
		}
		if err := need("program", v, who, policy.RoleProgramProvider); err != nil {
			return nil, nil, err
		}
		p.Programs = append(p.Programs, policy.Program{Name: name, SHA256: sum, Provider: who})
	}
	for _, v := range s.inputs {
		in, err := parseInput(v)
		if err != nil {
			return nil, nil, err
		}
		if in.Provider != "" {
			if err := need("input", v, in.Provider, policy.RoleDataProvider); err != nil {
				return nil, nil, err
			}
		}
		p.Inputs = append(p.Inputs, in)
	}
	for _, v := range s.outputs {
		who, name, src, err := splitItem("output", v)
		if err != nil {
			return nil, nil, err
		}
		if who == "" || src != "" {
			return nil, nil, usageError("--output %q: want READER:NAME or READER,READER:NAME", v)
		}
		readers := strings.Split(who, ",")
		for _, r := range readers {
			if err := need("output", v, r, policy.RoleResultReader); err != nil {
				return nil, nil, err
			}
			if pubs[r].sealing == "" {
				return nil, nil, usageError("--output %q: %s reads it, so needs a sealing key (outputs are sealed to it): give %s's key file or public key file, or ed25519:…,hpke:…", v, r, r)
			}
		}
		p.Outputs = append(p.Outputs, policy.Output{Name: name, Readers: readers})
	}
	for _, v := range s.roles {
		id, roles, ok := strings.Cut(v, "=")
		if !ok {
			return nil, nil, usageError("--role %q: want ID=ROLE[,ROLE]", v)
		}
		for _, r := range strings.Split(roles, ",") {
			if err := need("role", v, id, policy.Role(r)); err != nil {
				return nil, nil, err
			}
		}
	}
	for i := range p.Principals {
		pr := &p.Principals[i]
		slices.SortFunc(pr.Roles, func(a, b policy.Role) int { return roleOrder(a) - roleOrder(b) })
		if pr.Has(policy.RoleResultReader) {
			pr.SealingKey = pubs[pr.ID].sealing
		}
	}
	p.Name = s.name
	if p.Name == "" && len(p.Programs) > 0 {
		p.Name = strings.TrimSuffix(p.Programs[0].Name, filepath.Ext(p.Programs[0].Name))
	}
	iso, err := isolateEntry(ctx, w, s)
	if err != nil {
		return nil, nil, err
	}
	p.Isolates = []policy.Isolate{iso}
	p.Limits = policy.Limits{Memory: s.memory, Timeout: s.timeout, MaxOutput: s.maxOutput}
	if p.Expires, err = parseExpiry(s.expires, time.Now()); err != nil {
		return nil, nil, usageError("--expires %q: %v", s.expires, err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return nil, nil, failure(err)
	}
	parsed, err := policy.Parse(b.Bytes())
	if err != nil {
		var ve *policy.ValidationError
		if errors.As(err, &ve) {
			var msg strings.Builder
			fmt.Fprintf(&msg, "policy new: the policy would break %d rule(s); nothing was written:", len(ve.Problems))
			for _, pr := range ve.Problems {
				fmt.Fprintf(&msg, "\n  %s", pr)
			}
			return nil, nil, failure(errors.New(msg.String()))
		}
		return nil, nil, failure(err)
	}
	return b.Bytes(), parsed, nil
}

func roleOrder(r policy.Role) int {
	switch r {
	case policy.RoleProgramProvider:
		return 0
	case policy.RoleDataProvider:
		return 1
	case policy.RoleResultReader:
		return 2
	}
	return 3
}

// splitItem parses WHO:NAME[=SOURCE]. WHO is empty when there is no ':'
// before the '=' (stored inputs have no provider).
func splitItem(flag, v string) (who, name, src string, err error) {
	left, src, _ := strings.Cut(v, "=")
	who, name, ok := strings.Cut(left, ":")
	if !ok {
		who, name = "", left
	}
	if name == "" {
		return "", "", "", usageError("--%s %q: no name", flag, v)
	}
	return who, name, src, nil
}

// pinOf is the SHA-256 a source pins: sha256:HEX as given, or the hash of
// the file.
func pinOf(flag, v, src string) (string, error) {
	if h, ok := strings.CutPrefix(src, "sha256:"); ok {
		if len(h) != 64 || strings.ToLower(h) != h {
			return "", usageError("--%s %q: sha256:HEX needs 64 lowercase hex digits", flag, v)
		}
		if _, err := hex.DecodeString(h); err != nil {
			return "", usageError("--%s %q: sha256:HEX needs 64 lowercase hex digits", flag, v)
		}
		return h, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return "", usageError("--%s %q: %v", flag, v, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", usageError("--%s %q: %v", flag, v, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parseInput reads PROVIDER:NAME[=sha256:HEX|=FILE] or
// NAME=sha256:HEX@STORE[,STORE].
func parseInput(v string) (policy.Input, error) {
	who, name, src, err := splitItem("input", v)
	if err != nil {
		return policy.Input{}, err
	}
	if who != "" {
		in := policy.Input{Name: name, Provider: who}
		if src != "" {
			if in.SHA256, err = pinOf("input", v, src); err != nil {
				return policy.Input{}, err
			}
		}
		return in, nil
	}
	pin, stores, ok := strings.Cut(src, "@")
	if !ok || stores == "" {
		return policy.Input{}, usageError("--input %q: want PROVIDER:NAME for an uploaded input, or NAME=sha256:HEX@STORE for one the node fetches", v)
	}
	sum, err := pinOf("input", v, pin)
	if err != nil {
		return policy.Input{}, err
	}
	return policy.Input{Name: name, SHA256: sum, From: &policy.Source{Digest: "sha256:" + sum, Stores: strings.Split(stores, ",")}}, nil
}

var (
	ed25519Token = regexp.MustCompile(regexp.QuoteMeta(protocol.Ed25519KeyPrefix) + `[A-Za-z0-9+/]+=*`)
	hpkeToken    = regexp.MustCompile(`hpke:[A-Za-z0-9+/]+=*`)
)

// parsePrincipal reads KEYFILE, ID=KEYFILE or ID=ed25519:…[,hpke:…] and
// returns the id and the public keys in policy form.
func parsePrincipal(v string) (id, signing, sealing string, err error) {
	id, src, ok := strings.Cut(v, "=")
	if !ok {
		src = v
		id = strings.TrimSuffix(filepath.Base(v), filepath.Ext(v))
		id = strings.TrimSuffix(id, ".pub")
	}
	if id == "" || src == "" {
		return "", "", "", usageError("--principal %q: want KEYFILE, ID=KEYFILE or ID=ed25519:…", v)
	}
	if strings.HasPrefix(src, protocol.Ed25519KeyPrefix) {
		signing, sealing, _ = strings.Cut(src, ",")
	} else {
		if signing, sealing, err = publicKeysOf(src); err != nil {
			return "", "", "", usageError("--principal %q: %v", v, err)
		}
	}
	if _, err := keys.ParseSigningKey(signing); err != nil {
		return "", "", "", usageError("--principal %q: %v", v, err)
	}
	if sealing != "" {
		if _, err := keys.ParseSealingKey(sealing); err != nil {
			return "", "", "", usageError("--principal %q: %v", v, err)
		}
	}
	return id, signing, sealing, nil
}

// publicKeysOf reads the public halves from a key file (made by 'cloister
// key new'; its permissions are checked as for any use of it) or from a
// file of public keys (what 'cloister key public' prints, with or without
// --json).
func publicKeysOf(path string) (signing, sealing string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	if len(data) > keys.MaxFileSize {
		return "", "", fmt.Errorf("%s: larger than a key file", path)
	}
	if bytes.Contains(data, []byte(keys.FileHeader)) {
		k, err := keys.Load(path)
		if err != nil {
			return "", "", err
		}
		pub := k.Public()
		return pub.SigningString(), pub.SealingString(), nil
	}
	signing = ed25519Token.FindString(string(data))
	sealing = hpkeToken.FindString(string(data))
	if signing == "" {
		return "", "", fmt.Errorf("%s holds no key: want a key file ('cloister key new') or what 'cloister key public' prints", path)
	}
	return signing, sealing, nil
}

// isolateEntry builds the policy's isolate entry from --isolate and where
// the platform keys come from.
func isolateEntry(ctx context.Context, w io.Writer, s *policySpec) (policy.Isolate, error) {
	class := s.class
	var pks []string
	if s.nodeURL != "" {
		info, err := nodeInfoOf(ctx, s.nodeURL)
		if err != nil {
			return policy.Isolate{}, err
		}
		if class == "" {
			class = info.IsolateClass
		}
		if class != "software" {
			return policy.Isolate{}, usageError("--node %s: a %s node's key is not in its answer; read it from its data directory (--node-data DIR) or give --platform-key FILE", s.nodeURL, class)
		}
		if info.IsolateClass != "software" {
			return policy.Isolate{}, usageError("--node %s: the node runs the %s class, not software", s.nodeURL, info.IsolateClass)
		}
		fmt.Fprintf(w, "platform key of the node at %s, as it says (compare it with its operator's): %s\n", s.nodeURL, info.PlatformKey)
		pks = append(pks, info.PlatformKey)
	}
	if class == "" {
		class = "software"
	}
	if s.nodeData != "" {
		k, err := platformKeyFromData(s.nodeData, class)
		if err != nil {
			return policy.Isolate{}, err
		}
		pks = append(pks, k)
	}
	for _, v := range s.platformKeys {
		k, err := platformKeyOf(v, class)
		if err != nil {
			return policy.Isolate{}, err
		}
		pks = append(pks, k)
	}
	iso := policy.Isolate{Class: class, PlatformKeys: pks, Measurements: s.measurements, AllowDebug: s.allowDebug}
	if (class == "software" || class == "tpm") && len(pks) == 0 {
		return iso, usageError("policy new: which nodes may run it? give --node-data DIR (a node's data directory, or that of 'cloister up'), --node URL or --platform-key KEY")
	}
	return iso, nil
}

// nodeInfoOf asks a running node for its class and platform key.
func nodeInfoOf(ctx context.Context, u string) (*cloisterv1.GetNodeInfoResponse, error) {
	c, err := client.Dial(ctx, nodeURL(u))
	if err != nil {
		return nil, usageError("--node: %v", err)
	}
	defer c.Close()
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := c.NodeInfo(ictx)
	if err != nil {
		return nil, failure(fmt.Errorf("--node: %w", explainNodeError(ctx, nodeURL(u), nil, err)))
	}
	return info, nil
}

// platformKeyFromData reads the key a policy lists for the node whose data
// directory is dir (or the node of the 'cloister up' directory dir).
func platformKeyFromData(dir, class string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, upConfigFile)); err == nil {
		dir = filepath.Join(dir, "node")
	}
	switch class {
	case "software":
		path := filepath.Join(dir, node.PlatformKeyFile)
		k, err := keys.Load(path)
		if errors.Is(err, fs.ErrNotExist) {
			return "", usageError("--node-data %s: no %s: is it a node's data directory? A node creates it on its first start ('cloister up', or 'cloister node --data DIR')", dir, node.PlatformKeyFile)
		}
		if err != nil {
			return "", usageError("--node-data: %v", err)
		}
		return k.Public().SigningString(), nil
	case "tpm":
		b, err := os.ReadFile(filepath.Join(dir, "tpm-ak.pem"))
		if err != nil {
			return "", usageError("--node-data: %v (a node with --isolate-class tpm writes it)", err)
		}
		return string(b), nil
	}
	return "", usageError("--node-data: the %s class names no platform key; give --measurement HEX", class)
}

// platformKeyOf reads one --platform-key: ed25519:… inline, a key or
// public key file, or a PEM file (tpm).
func platformKeyOf(v, class string) (string, error) {
	if strings.HasPrefix(v, protocol.Ed25519KeyPrefix) {
		if _, err := keys.ParseSigningKey(v); err != nil {
			return "", usageError("--platform-key: %v", err)
		}
		return v, nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return "", usageError("--platform-key: %v", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		return string(b), nil
	}
	sk, _, err := publicKeysOf(v)
	if err != nil {
		return "", usageError("--platform-key: %v", err)
	}
	return sk, nil
}

// parseExpiry reads an RFC 3339 time or a duration from now (Go syntax,
// or whole days as "30d").
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return time.Time{}, errors.New("want an RFC 3339 time such as 2030-01-01T00:00:00Z, or a duration such as 30d or 12h")
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return time.Time{}, errors.New("want an RFC 3339 time such as 2030-01-01T00:00:00Z, or a duration such as 30d or 12h")
		}
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}

// askPolicy fills s by asking on w and reading answers from r, each
// checked as it is given, then builds the policy.
func askPolicy(ctx context.Context, r io.Reader, w io.Writer, s *policySpec) ([]byte, *policy.Policy, error) {
	in := bufio.NewScanner(r)
	in.Buffer(make([]byte, 64<<10), 64<<10)
	eof := false
	ask := func(prompt, def string) string {
		if def != "" {
			fmt.Fprintf(w, "%s [%s]: ", prompt, def)
		} else {
			fmt.Fprintf(w, "%s: ", prompt)
		}
		if !in.Scan() {
			eof = true
			fmt.Fprintln(w)
			return def
		}
		if a := strings.TrimSpace(in.Text()); a != "" {
			return a
		}
		return def
	}
	// list asks for items until an empty answer; each is checked by ok.
	list := func(prompt string, have []string, ok func(string) error) []string {
		for _, h := range have {
			fmt.Fprintf(w, "  %s (given)\n", h)
		}
		for !eof {
			a := ask(prompt, "")
			if a == "" {
				break
			}
			if err := ok(a); err != nil {
				fmt.Fprintf(w, "  %v\n", unwrapExit(err))
				continue
			}
			have = append(have, a)
		}
		return have
	}
	known := func() map[string]bool {
		m := map[string]bool{}
		for _, v := range s.principals {
			if id, _, _, err := parsePrincipal(v); err == nil {
				m[id] = true
			}
		}
		return m
	}
	isPrincipal := func(flag string, ids ...string) error {
		m := known()
		for _, id := range ids {
			if !m[id] {
				return fmt.Errorf("%s is not among the principals given above", id)
			}
		}
		return nil
	}
	fmt.Fprintln(w, "The parties, by their key files (or public key files): one per line as FILE or ID=FILE; an empty line ends the list.")
	s.principals = list("principal", s.principals, func(a string) error { _, _, _, err := parsePrincipal(a); return err })
	if len(s.principals) == 0 {
		return nil, nil, usageError("policy new: a policy needs at least one principal")
	}
	fmt.Fprintln(w, "The program, as PROVIDER:NAME=FILE (or =sha256:HEX); an empty line ends the list.")
	s.programs = list("program", s.programs, func(a string) error {
		who, name, src, err := splitItem("program", a)
		if err == nil && (who == "" || src == "" || name == "") {
			err = errors.New("want PROVIDER:NAME=FILE, e.g. alice:psi-sum.wasm=examples/psi-sum/psi-sum.wasm")
		}
		if err == nil {
			_, err = pinOf("program", a, src)
		}
		if err == nil {
			err = isPrincipal("program", who)
		}
		return err
	})
	fmt.Fprintln(w, "The inputs, as PROVIDER:NAME; an empty line ends the list.")
	s.inputs = list("input", s.inputs, func(a string) error {
		in, err := parseInput(a)
		if err == nil && in.Provider != "" {
			err = isPrincipal("input", in.Provider)
		}
		return err
	})
	fmt.Fprintln(w, "The outputs, as READER:NAME (READER,READER:NAME for several readers); an empty line ends the list.")
	s.outputs = list("output", s.outputs, func(a string) error {
		who, _, src, err := splitItem("output", a)
		if err == nil && (who == "" || src != "") {
			err = errors.New("want READER:NAME, e.g. dave:result.json")
		}
		if err == nil {
			err = isPrincipal("output", strings.Split(who, ",")...)
		}
		return err
	})
	s.class = ask("Isolate class (software, tpm, sev-snp, tdx, sgx, nitro)", cmp.Or(s.class, "software"))
	if (s.class == "software" || s.class == "tpm") && s.nodeURL == "" && s.nodeData == "" && len(s.platformKeys) == 0 {
		def := ""
		if _, err := os.Stat(filepath.Join(defaultUpDir, upConfigFile)); err == nil {
			def = defaultUpDir
		}
		a := ""
		for a == "" && !eof {
			a = ask("Nodes trusted to run it: a node's data directory, a running node's URL (https://…), or its key (ed25519:…)", def)
		}
		switch {
		case strings.HasPrefix(a, "https://"):
			s.nodeURL = a
		case strings.HasPrefix(a, protocol.Ed25519KeyPrefix):
			s.platformKeys = []string{a}
		case a != "":
			if fi, err := os.Stat(a); err == nil && fi.IsDir() {
				s.nodeData = a
			} else {
				s.platformKeys = []string{a}
			}
		}
	}
	if s.class != "software" && s.class != "tpm" && len(s.measurements) == 0 {
		s.measurements = list("measurement (hex)", nil, func(string) error { return nil })
	}
	s.memory = ask("Memory limit", cmp.Or(s.memory, "256MiB"))
	s.timeout = ask("Time limit of a run", cmp.Or(s.timeout, "30s"))
	s.maxOutput = ask("Limit on all outputs together", cmp.Or(s.maxOutput, "16MiB"))
	det := ask("Deterministic: a fixed clock and seeded randomness, so that runs can be re-executed (yes/no)", map[bool]string{true: "yes", false: "no"}[s.determinist])
	s.determinist = !strings.HasPrefix(strings.ToLower(det), "n")
	s.expires = ask("Expires (an RFC 3339 time, or a duration such as 30d)", cmp.Or(s.expires, "30d"))
	s.name = ask("Name", cmp.Or(s.name, defaultPolicyName(s)))
	return buildPolicy(ctx, w, s)
}

func defaultPolicyName(s *policySpec) string {
	for _, v := range s.programs {
		if _, name, _, err := splitItem("program", v); err == nil {
			return strings.TrimSuffix(name, filepath.Ext(name))
		}
	}
	return "policy"
}

// unwrapExit is the message of an error without its exit status.
func unwrapExit(err error) error {
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err != nil {
		return ee.Err
	}
	return err
}
