package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
)

// memberFile is the public part of one organisation's validator, the only
// thing an organisation hands the others ("ORG.member.json").
type memberFile struct {
	Version    int    `json:"version"`
	Org        string `json:"org"`
	PubKey     string `json:"validator_pub_key"`
	NodeID     string `json:"node_id"`
	P2PAddress string `json:"p2p_address"`
}

const memberFileVersion = 1

// maxMemberFile bounds a member file read from another organisation.
const maxMemberFile = 4 << 10

var orgNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func checkOrgName(s string) error {
	if !orgNameRE.MatchString(s) {
		return fmt.Errorf("organisation %q: want a DNS label (lower-case letters, digits, '-', at most 63)", s)
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("address %q: want host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port out of range", s)
	}
	return nil
}

func newConsortiumCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consortium",
		Short: "Set up the ledger of a consortium of organisations, one validator each",
		Long: `consortium prepares a ledger run by several organisations, each with one
validator, so that no organisation ever holds another's private keys:

  1. every organisation runs 'cloister consortium keygen': its keys stay in
     its own directory; it sends the others only ORG.member.json (public
     key, peer id, the address its validator is reached at);
  2. one of them runs 'cloister consortium init --orgs N --member ...'
     with every member file: it writes the genesis and one Helm values
     file per organisation, none holding a private key;
  3. each organisation puts its keys in a Kubernetes Secret and installs
     the chart (deploy/helm/cloister) with its values file.

docs/deploy.md walks through it for three organisations.`,
		Example: `  cloister consortium keygen --org org1 --p2p-address validator.org1.example:26656 --out ./org1
  cloister consortium init --orgs 3 --out ./consortium --member org1.member.json --member org2.member.json --member org3.member.json
  cloister consortium init --orgs 3 --out ./rehearsal`,
	}
	cmd.AddCommand(newConsortiumKeygenCmd(), newConsortiumInitCmd(), newConsortiumValidatorHomeCmd())
	return cmd
}

func newConsortiumKeygenCmd() *cobra.Command {
	var org, addr, out string
	cmd := &cobra.Command{
		Use:   "keygen --org NAME --p2p-address HOST:PORT --out DIR",
		Short: "Create this organisation's validator keys and its public member file",
		Long: `keygen creates the organisation's validator keys in DIR/keys (node_key.json,
priv_validator_key.json; readable by the owner only, never to leave the
organisation) and DIR/NAME.member.json: the public key, the peer id and the
address other validators dial (--p2p-address, e.g. the load balancer in front
of the validator's p2p Service). Send the member file to whoever runs
'cloister consortium init'. It prints the member file's path.

It never overwrites keys.

Exit status: 0 created; 1 the keys could not be created; 2 bad usage.`,
		Example: `  cloister consortium keygen --org org1 --p2p-address validator.org1.example:26656 --out ./org1
  kubectl -n org1 create secret generic cloister-validator-keys --from-file=./org1/keys/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || org == "" || addr == "" {
				return usageError("consortium keygen: --org, --p2p-address and --out are required")
			}
			if err := checkOrgName(org); err != nil {
				return usageError("consortium keygen: %v", err)
			}
			if err := checkHostPort(addr); err != nil {
				return usageError("consortium keygen: --p2p-address: %v", err)
			}
			path, err := keygenMember(out, org, addr)
			if err != nil {
				return failure(fmt.Errorf("consortium keygen: %w", err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), path)
			return nil
		},
	}
	cmd.Flags().StringVar(&org, "org", "", "this organisation's name (a DNS label)")
	cmd.Flags().StringVar(&addr, "p2p-address", "", "host:port at which the other validators reach this one")
	cmd.Flags().StringVar(&out, "out", "", "directory for keys/ and NAME.member.json")
	return cmd
}

// keygenMember creates out/keys and out/ORG.member.json, returning the
// member file's path.
func keygenMember(out, org, addr string) (string, error) {
	id, err := ledger.GenerateValidatorKeys(filepath.Join(out, "keys"))
	if err != nil {
		return "", err
	}
	m := memberFile{Version: memberFileVersion, Org: org, PubKey: keys.FormatSigningKey(id.PubKey), NodeID: id.NodeID, P2PAddress: addr}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(out, org+".member.json")
	return path, writeNewFile(path, append(b, '\n'), 0o644)
}

// readMember reads and checks a member file another organisation sent.
func readMember(path string) (memberFile, error) {
	var m memberFile
	f, err := os.Open(path)
	if err != nil {
		return m, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMemberFile+1))
	if err != nil {
		return m, err
	}
	if len(b) > maxMemberFile {
		return m, fmt.Errorf("%s: larger than %d bytes", path, maxMemberFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	if m.Version != memberFileVersion {
		return m, fmt.Errorf("%s: version %d, want %d", path, m.Version, memberFileVersion)
	}
	if err := checkOrgName(m.Org); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := keys.ParseSigningKey(m.PubKey); err != nil {
		return m, fmt.Errorf("%s: validator_pub_key: %w", path, err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(m.NodeID) {
		return m, fmt.Errorf("%s: node_id %q: want 40 hex digits", path, m.NodeID)
	}
	if err := checkHostPort(m.P2PAddress); err != nil {
		return m, fmt.Errorf("%s: p2p_address: %w", path, err)
	}
	return m, nil
}

func newConsortiumInitCmd() *cobra.Command {
	var (
		n        int
		out      string
		members  []string
		chainID  string
		addrTmpl string
	)
	cmd := &cobra.Command{
		Use:   "init --orgs N --out DIR [--member ORG.member.json ...]",
		Short: "Write a consortium's genesis and one Helm values file per organisation",
		Long: `init writes DIR/genesis.json (the ledger's genesis: one validator per
organisation, power 1 each), DIR/consortium.json (the members' public parts)
and DIR/values-ORG.yaml for each organisation: its validator's genesis,
chain id, peers and advertised address, for 'helm install -f'. None of
these files holds a private key.

With --member (one per organisation, N in all) it uses the member files the
organisations made with 'cloister consortium keygen': the real flow, in
which each private key stays with its owner.

Without --member it rehearses the whole exchange on this machine: it runs
keygen for org1 … orgN into DIR/orgs/ORG (each organisation's private keys
in a directory of its own, to be handed to that organisation only) with
--p2p-address from --address-template. That is for trying the consortium
out in one cluster or on one machine; whoever ran it has held every key.

Adding an organisation later needs a validator-set change on the ledger,
which this ledger version cannot make: the set is fixed at genesis
(docs/deploy.md).

Exit status: 0 written; 1 the files could not be written or a member file is
wrong; 2 bad usage.`,
		Example: `  cloister consortium init --orgs 3 --out ./consortium \
      --member org1.member.json --member org2.member.json --member org3.member.json
  cloister consortium init --orgs 3 --out ./rehearsal
  helm install cloister deploy/helm/cloister -n org1 -f ./consortium/values-org1.yaml --set image.tag=…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError("consortium init: --out DIR is required")
			}
			if n < 1 || n > 100 {
				return usageError("consortium init: --orgs %d: want 1 to 100", n)
			}
			if len(members) != 0 && len(members) != n {
				return usageError("consortium init: --orgs %d but %d --member files", n, len(members))
			}
			if chainID == "" {
				chainID = "cloister-consortium"
			}
			if !strings.Contains(addrTmpl, "{org}") {
				return usageError("consortium init: --address-template %q lacks {org}", addrTmpl)
			}
			if _, err := os.Stat(filepath.Join(out, "genesis.json")); err == nil {
				return failure(fmt.Errorf("consortium init: %s already holds a genesis; pick an empty directory", out))
			}
			var ms []memberFile
			if len(members) == 0 {
				for i := 1; i <= n; i++ {
					org := fmt.Sprintf("org%d", i)
					path, err := keygenMember(filepath.Join(out, "orgs", org), org, strings.ReplaceAll(addrTmpl, "{org}", org))
					if err != nil {
						return failure(fmt.Errorf("consortium init: %w", err))
					}
					members = append(members, path)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "consortium init: rehearsal: the keys of all %d organisations were made here, under %s; for a real consortium each organisation runs 'cloister consortium keygen'\n", n, filepath.Join(out, "orgs"))
			}
			for _, p := range members {
				m, err := readMember(p)
				if err != nil {
					return failure(fmt.Errorf("consortium init: %w", err))
				}
				ms = append(ms, m)
			}
			files, err := consortiumFiles(chainID, ms)
			if err != nil {
				return failure(fmt.Errorf("consortium init: %w", err))
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return failure(err)
			}
			names := make([]string, 0, len(files))
			for name := range files {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				if err := writeNewFile(filepath.Join(out, name), files[name], 0o644); err != nil {
					return failure(fmt.Errorf("consortium init: %w", err))
				}
				fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(out, name))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&n, "orgs", 3, "number of organisations (1 to 100; 3f+1 tolerate f faulty)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write genesis.json, consortium.json and values-ORG.yaml into")
	cmd.Flags().StringArrayVar(&members, "member", nil, "an organisation's member file from 'consortium keygen' (repeat, one per organisation)")
	cmd.Flags().StringVar(&chainID, "chain-id", "", `chain id (default "cloister-consortium")`)
	cmd.Flags().StringVar(&addrTmpl, "address-template", "cloister-validator-p2p.{org}.svc.cluster.local:26656",
		"rehearsal only: each validator's p2p address, {org} replaced by the organisation's name")
	return cmd
}

// consortiumFiles builds the genesis, the summary and every organisation's
// values file from the members' public parts.
func consortiumFiles(chainID string, ms []memberFile) (map[string][]byte, error) {
	seen := map[string]bool{}
	vals := make([]ledger.GenesisValidator, len(ms))
	for i, m := range ms {
		for _, k := range []string{"org:" + m.Org, "key:" + m.PubKey, "id:" + m.NodeID} {
			if seen[k] {
				return nil, fmt.Errorf("two member files share %s", k)
			}
			seen[k] = true
		}
		pub, err := keys.ParseSigningKey(m.PubKey)
		if err != nil {
			return nil, err
		}
		vals[i] = ledger.GenesisValidator{Name: m.Org, PubKey: pub}
	}
	genesis, err := ledger.NewGenesis(chainID, vals)
	if err != nil {
		return nil, err
	}
	summary, err := json.MarshalIndent(struct {
		ChainID string       `json:"chain_id"`
		Members []memberFile `json:"members"`
	}{chainID, ms}, "", "  ")
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, genesis); err != nil {
		return nil, err
	}
	files := map[string][]byte{"genesis.json": genesis, "consortium.json": append(summary, '\n')}
	for _, m := range ms {
		var b strings.Builder
		fmt.Fprintf(&b, "# Cloister values for organisation %s of consortium %s, from 'cloister consortium init'.\n", m.Org, chainID)
		fmt.Fprintf(&b, "# No private key is in here: the validator's keys come from the Secret\n")
		fmt.Fprintf(&b, "# validator.keysSecret, made from the keys 'consortium keygen' wrote.\n")
		fmt.Fprintf(&b, "organisation: %s\n", m.Org)
		fmt.Fprintf(&b, "validator:\n  enabled: true\n  chainId: %s\n  validators: %d\n", yamlSingleQuoted(chainID), len(ms))
		fmt.Fprintf(&b, "  externalAddress: %s\n", yamlSingleQuoted(m.P2PAddress))
		b.WriteString("  peers:\n")
		for _, p := range ms {
			if p.Org != m.Org {
				fmt.Fprintf(&b, "    - %s\n", yamlSingleQuoted(p.NodeID+"@"+p.P2PAddress))
			}
		}
		if len(ms) == 1 {
			b.WriteString("    []\n")
		}
		fmt.Fprintf(&b, "  genesis: %s\n", yamlSingleQuoted(compact.String()))
		files["values-"+m.Org+".yaml"] = []byte(strings.Replace(b.String(), "  peers:\n    []\n", "  peers: []\n", 1))
	}
	return files, nil
}

// yamlSingleQuoted quotes s as a YAML single-quoted scalar (no escapes; a quote
// inside is written twice), for one-line values only.
func yamlSingleQuoted(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// writeNewFile writes a file that must not exist yet, atomically: a crash
// leaves either nothing or the whole file, and an existing file is never
// replaced.
func writeNewFile(path string, data []byte, perm fs.FileMode) error {
	err := atomicfile.WriteFile(path, data, perm, atomicfile.NoReplace())
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; it is never overwritten", path)
	}
	return err
}

func newConsortiumValidatorHomeCmd() *cobra.Command {
	var (
		home, keysDir, genesis, p2p, api, apiURL, external string
		peers                                              []string
		validators                                         int
	)
	cmd := &cobra.Command{
		Use:   "validator-home --home DIR --keys DIR --genesis FILE --p2p-listen ADDR --api-listen ADDR",
		Short: "Lay out a validator home from its keys and the consortium's genesis",
		Long: `validator-home prepares DIR for 'cloister ledger start --home DIR': it copies the
validator's keys from --keys (node_key.json, priv_validator_key.json), writes
the genesis (checking that it lists this validator's key, and refusing a
genesis other than the one DIR already holds) and the addresses and peers.
It keeps the chain data and the signing state already in DIR: run it before
every start (the chart runs it as an init container), it changes only what
its flags change.

Exit status: 0 ready; 1 the home could not be prepared (wrong keys, another
chain's home); 2 bad usage.`,
		Example: `  cloister consortium validator-home --home /var/lib/cloister/validator --keys /keys \
      --genesis /genesis/genesis.json --p2p-listen 0.0.0.0:26656 --api-listen 0.0.0.0:26680 \
      --peer 3f…@validator.org2.example:26656 --peer 9a…@validator.org3.example:26656 --validators 3
  cloister ledger start --home /var/lib/cloister/validator`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if home == "" || keysDir == "" || genesis == "" || p2p == "" || api == "" {
				return usageError("consortium validator-home: --home, --keys, --genesis, --p2p-listen and --api-listen are required")
			}
			for _, a := range []string{p2p, api} {
				if err := checkHostPort(a); err != nil {
					return usageError("consortium validator-home: %v", err)
				}
			}
			if external != "" {
				if err := checkHostPort(external); err != nil {
					return usageError("consortium validator-home: --external-address: %v", err)
				}
			}
			g, err := os.ReadFile(genesis)
			if err != nil {
				return usageError("consortium validator-home: --genesis: %v", err)
			}
			if apiURL == "" {
				apiURL = "http://" + api
			}
			id, err := ledger.PrepareHome(home, ledger.HomeSpec{KeysDir: keysDir, Genesis: g, P2PListen: p2p, APIListen: api,
				APIURL: apiURL, ExternalAddress: external, Peers: peers, Validators: validators})
			if err != nil {
				return failure(fmt.Errorf("consortium validator-home: %w", err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "validator home %s ready: node id %s, key %s, %d peers\n", home, id.NodeID, keys.FormatSigningKey(id.PubKey), len(peers))
			return nil
		},
	}
	cmd.Flags().StringVar(&home, "home", "", "the validator home directory (created if missing)")
	cmd.Flags().StringVar(&keysDir, "keys", "", "directory holding node_key.json and priv_validator_key.json")
	cmd.Flags().StringVar(&genesis, "genesis", "", "the consortium's genesis.json")
	cmd.Flags().StringVar(&p2p, "p2p-listen", "", "host:port the peer-to-peer port binds")
	cmd.Flags().StringVar(&api, "api-listen", "", "host:port the ledger API binds")
	cmd.Flags().StringVar(&apiURL, "api-url", "", "the API's URL as clients reach it (default http://API-LISTEN)")
	cmd.Flags().StringVar(&external, "external-address", "", "host:port peers dial, if not the p2p listen address")
	cmd.Flags().StringArrayVar(&peers, "peer", nil, "another validator, nodeid@host:port (repeat)")
	cmd.Flags().IntVar(&validators, "validators", 0, "size of the validator set (default: the genesis's)")
	return cmd
}
