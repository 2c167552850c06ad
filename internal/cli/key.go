package cli

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/keys"
)

func newKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Create principal key files and print their public halves",
		Long: `A key file holds one principal's (or one node's) two private keys: an Ed25519
key that signs requests, and an HPKE MLKEM768-X25519 key that inputs and
outputs are sealed to. Policies name principals by the public halves, in the
forms "ed25519:<base64>" and "hpke:<base64>". The file format is described in
docs/keys.md. Keep key files private: they are written with mode 0600, and
cloister refuses to use a key file other users can read.`,
		Example: `  cloister key new --out alice.key
  cloister key public alice.key --json`,
	}
	cmd.AddCommand(newKeyNewCmd(), newKeyPublicCmd())
	return cmd
}

func newKeyNewCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "new --out FILE",
		Short: "Generate a key pair and write it to a new key file",
		Long: `new generates an Ed25519 signing key and an HPKE sealing key and writes them
to FILE with mode 0600. It never overwrites: if FILE exists it exits 1 and
leaves the file alone. The public halves are printed on standard error; get
them again at any time with "cloister key public".

Exit status: 0 written; 1 FILE exists or could not be written; 2 bad usage.`,
		Example: `  cloister key new --out alice.key
  cloister key new --out bob.key && cloister key public bob.key --json > bob.pub.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError("key new: --out FILE is required")
			}
			k, err := keys.Generate()
			if err != nil {
				return failure(err)
			}
			if err := k.Save(out); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return failure(fmt.Errorf("%s already exists; refusing to overwrite a key file (choose another --out, or delete it first if you are sure)", out))
				}
				return failure(err)
			}
			pub := k.Public()
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\nsigning_key: %s\n", out, pub.SigningString())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "key file to create (must not exist)")
	return cmd
}

func newKeyPublicCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "public FILE",
		Short: "Print the public halves of a key file",
		Long: `public prints the signing and sealing public keys of the key file FILE, in
the forms a policy lists them. With --json it prints exactly
{"signing_key": "ed25519:...", "sealing_key": "hpke:..."}.

Exit status: 0 printed; 1 the file is readable by other users (fix with
chmod 600); 2 FILE is missing or not a key file.`,
		Example: `  cloister key public alice.key
  cloister key public /var/lib/cloister/platform.key --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := keys.Load(args[0])
			if err != nil {
				if errors.Is(err, keys.ErrPermissions) {
					return failure(err)
				}
				return usageError("%v", err)
			}
			pub := k.Public()
			w := cmd.OutOrStdout()
			if asJSON {
				// Written by hand to match the documented spacing exactly;
				// base64 and the prefixes need no JSON escaping.
				fmt.Fprintf(w, "{\"signing_key\": %q, \"sealing_key\": %q}\n", pub.SigningString(), pub.SealingString())
				return nil
			}
			fmt.Fprintf(w, "signing_key: %s\nsealing_key: %s\n", pub.SigningString(), pub.SealingString())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"signing_key": ..., "sealing_key": ...}`)
	return cmd
}
