package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
)

func newAdmissionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admission",
		Short: "Issue admission tokens for nodes in token mode",
		Long: `A node decides who may create sessions on it (cloister node --admission):
open (anyone, within the quotas; loopback only unless --allow-open), an
allow-list of creator keys (--admit-key), operator-signed admission tokens
(--token-issuer), or the consortium members recorded on its ledger
(member.admitted entries, 'cloister ledger member'). See docs/security.md.`,
		Example: `  cloister admission token --key operator.key --subject ed25519:AAAA... --valid 720h > org.token`,
	}
	cmd.AddCommand(newAdmissionTokenCmd())
	return cmd
}

func newAdmissionTokenCmd() *cobra.Command {
	var keyPath, subject, nodeKey string
	var valid time.Duration
	cmd := &cobra.Command{
		Use:   "token --key OPERATOR-KEY --subject KEY [--node KEY] [--valid DURATION]",
		Short: "Sign a token that lets one key create sessions",
		Long: `token signs, with the operator's key, an admission token for the creator key
--subject: nodes started with --admission token --token-issuer <operator's
public key> admit that key until the token expires. --node restricts it to
one node (its platform key); without it, every node that trusts the
operator admits the subject. The creator still signs each create request
with the subject key (cloister session create --key ... --token ...), so a
token that leaks admits nobody else. The token is printed on standard
output.

Exit status: 0 printed; 1 the key could not be read; 2 bad usage.`,
		Example: `  cloister admission token --key operator.key --subject ed25519:AAAA... --valid 720h > org.token
  cloister admission token --key operator.key --subject "$(cloister key public org.key --json | jq -r .signing_key)" --node ed25519:BBBB...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" || subject == "" {
				return usageError("admission token: --key and --subject are required")
			}
			sub, err := keys.ParseSigningKey(subject)
			if err != nil {
				return usageError("admission token: --subject: %v", err)
			}
			var nk []byte
			if nodeKey != "" {
				if nk, err = keys.ParseSigningKey(nodeKey); err != nil {
					return usageError("admission token: --node: %v", err)
				}
			}
			if valid <= 0 {
				return usageError("admission token: --valid %v: want a positive duration", valid)
			}
			k, err := loadKey(keyPath)
			if err != nil {
				return err
			}
			tok, err := node.IssueAdmissionToken(k, sub, nk, time.Now().Add(valid))
			if err != nil {
				return failure(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyPath, "key", "", "the operator's key file (its public signing key is what nodes trust with --token-issuer)")
	f.StringVar(&subject, "subject", "", "the creator's public signing key, ed25519:...")
	f.StringVar(&nodeKey, "node", "", "only this node's platform key (default: any node that trusts the operator)")
	f.DurationVar(&valid, "valid", 30*24*time.Hour, "how long the token admits the subject")
	return cmd
}
