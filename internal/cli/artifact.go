package cli

import (
	"encoding/json"
	"os"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/ledger/acl"
)

func newArtifactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "artifact",
		Short:   "Register sealed programs and data on the ledger as their owner's artifacts",
		Example: `  cloister artifact register --ledger http://127.0.0.1:26680 --key alice.key --sealed-json model.json`,
	}
	cmd.AddCommand(newArtifactRegisterCmd())
	return cmd
}

// sealedJSON is what "program seal --json" prints plus what "broker
// register --sealed-json" adds.
type sealedJSON struct {
	SHA256     string   `json:"sha256"`
	Digest     string   `json:"digest"`
	Size       int64    `json:"size"`
	Brokers    []string `json:"brokers"`
	BrokerKeys []string `json:"broker_keys"`
	Threshold  int      `json:"threshold"`
	Commitment []string `json:"commitment"`
}

func newArtifactRegisterCmd() *cobra.Command {
	var keyFile, file string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "register --ledger URL --key OWNER.key --sealed-json FILE",
		Short: "Record an artifact.registered entry: this key owns this sealed file",
		Long: `register appends an artifact.registered entry signed by the owner's key: the
ciphertext digest, the plaintext SHA-256, the brokers that hold the content
key's shares (their keys, in share order), the threshold and the sharing's
commitment. FILE is the JSON "cloister program seal --json" printed, after
"cloister broker register --sealed-json FILE" added the brokers to it.

An artifact is (owner, digest): another key registering the same digest
makes its own artifact and gets no say over this one. It prints the
entry's index.

Exit status: 0 registered; 1 refused by the ledger; 2 bad usage or input.`,
		Example: `  cloister artifact register --ledger http://127.0.0.1:26680 --key alice.key --sealed-json model.json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if keyFile == "" || file == "" {
			return usageError("artifact register: --key and --sealed-json are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			return usageError("artifact register: %v", err)
		}
		var sj sealedJSON
		if err := json.Unmarshal(raw, &sj); err != nil {
			return usageError("artifact register: %s: %v", file, err)
		}
		a := acl.Artifact{Digest: sj.Digest, PlaintextSHA256: sj.SHA256, Brokers: sj.BrokerKeys, Threshold: sj.Threshold, Commitment: sj.Commitment}
		if err := a.Check(); err != nil {
			return usageError("artifact register: %s: %v (run \"cloister broker register --sealed-json\" first)", file, err)
		}
		return appendEntry(cmd, c, k.Signer(), acl.KindArtifactRegistered, a, asJSON, "artifact register")
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the owner's principal key file")
	f.StringVar(&file, "sealed-json", "", "the sealed program's JSON, with its brokers")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	return cmd
}
