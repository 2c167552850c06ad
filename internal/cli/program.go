package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/sealed"
)

func newProgramCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "program",
		Short: "Seal programs (and data) for content-addressed storage, and open them",
		Long: `A sealed file is a program or data file encrypted under a fresh content key
(age's STREAM payload; docs/storage.md). Policies pin the plaintext SHA-256;
stores address the ciphertext by its digest; the content key goes to a key
file only its owner can read, from where it is registered with key brokers.`,
		Example: `  cloister program seal model.wasm --out model.wasm.sealed --json
  cloister blob put model.wasm.sealed --store http://127.0.0.1:7444/programs
  cloister program open model.wasm.sealed --key model.wasm.sealed.key --out model.wasm`,
	}
	cmd.AddCommand(newProgramSealCmd(), newProgramOpenCmd())
	return cmd
}

func newProgramSealCmd() *cobra.Command {
	var out, keyOut string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "seal FILE --out FILE [--key-out FILE] [--json]",
		Short: "Encrypt a file under a fresh content key, streaming",
		Long: `seal encrypts FILE under a fresh content key and writes the sealed file to
--out and the key to --key-out (default: the --out path with ".key" added),
mode 0600. Neither is ever overwritten: if one exists, nothing is written.
Files of any size are sealed in a few hundred KiB of memory.

It prints the plaintext SHA-256 (what a policy pins), the ciphertext digest
(what stores address) and the ciphertext size; with --json exactly
{"sha256": "<plaintext hex>", "digest": "sha256:<ciphertext hex>", "size": N}.

Exit status: 0 sealed; 1 an output exists or could not be written; 2 bad
usage or FILE unreadable.`,
		Example: `  cloister program seal model.wasm --out model.wasm.sealed
  cloister program seal weights.bin --out weights.sealed --key-out keys/weights.key --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError("program seal: --out FILE is required")
			}
			if keyOut == "" {
				keyOut = out + ".key"
			}
			in, err := os.Open(args[0])
			if err != nil {
				return usageError("program seal: %v", err)
			}
			defer in.Close()
			if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
				return usageError("program seal: %s is not a regular file", args[0])
			}
			for _, p := range []string{out, keyOut} {
				if _, err := os.Lstat(p); err == nil {
					return failure(fmt.Errorf("program seal: %s already exists; refusing to overwrite it", p))
				}
			}
			dst, err := atomicfile.Create(out, 0o644, atomicfile.NoReplace())
			if err != nil {
				return failure(fmt.Errorf("program seal: %w", err))
			}
			defer dst.Abort()
			key, sum, err := sealed.Seal(dst, in)
			if err != nil {
				return failure(fmt.Errorf("program seal %s: %w", args[0], err))
			}
			// The key first: a sealed file without its key is useless,
			// a key without its file is only removed again.
			if err := sealed.SaveKeyFile(keyOut, key, sum); err != nil {
				return failure(err)
			}
			if err := dst.Commit(); err != nil {
				os.Remove(keyOut)
				if errors.Is(err, fs.ErrExist) {
					return failure(fmt.Errorf("program seal: %s appeared meanwhile; refusing to overwrite it", out))
				}
				return failure(fmt.Errorf("program seal: %w", err))
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, sum)
			}
			fmt.Fprintf(w, "sealed %s -> %s (%d bytes), key in %s\n", args[0], out, sum.Size, keyOut)
			fmt.Fprintf(w, "sha256 %s   (pin this in a policy)\n", sum.SHA256)
			fmt.Fprintf(w, "digest %s   (stores address this)\n", sum.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "sealed file to create (must not exist)")
	f.StringVar(&keyOut, "key-out", "", `content key file to create, mode 0600 (default: OUT + ".key")`)
	f.BoolVar(&asJSON, "json", false, `print {"sha256", "digest", "size"}`)
	return cmd
}

func newProgramOpenCmd() *cobra.Command {
	var out, keyFile, want string
	cmd := &cobra.Command{
		Use:   "open FILE --key FILE --out FILE",
		Short: "Decrypt a sealed file with its content key, streaming",
		Long: `open decrypts the sealed FILE with the content key file --key and writes the
plaintext to --out, which appears only once all of it has authenticated
and its SHA-256 matches (the key file's, or --sha256 if given): a
truncated, reordered or modified ciphertext leaves no --out at all.

Exit status: 0 opened; 1 wrong key, tampered ciphertext, hash mismatch or
--out exists; 2 bad usage or unreadable files.`,
		Example: `  cloister program open model.wasm.sealed --key model.wasm.sealed.key --out model.wasm`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || keyFile == "" {
				return usageError("program open: --key FILE and --out FILE are required")
			}
			key, sum, err := sealed.LoadKeyFile(keyFile)
			if errors.Is(err, sealed.ErrKeyFile) {
				return failure(err)
			} else if err != nil {
				return usageError("program open: %v", err)
			}
			if want == "" {
				want = sum.SHA256
			}
			var wantSum [32]byte
			if b, err := hex.DecodeString(want); err != nil || len(b) != 32 {
				return usageError("program open: --sha256 %q is not 64 hex digits", want)
			} else {
				copy(wantSum[:], b)
			}
			in, err := os.Open(args[0])
			if err != nil {
				return usageError("program open: %v", err)
			}
			defer in.Close()
			dst, err := atomicfile.Create(out, 0o600, atomicfile.NoReplace())
			if err != nil {
				return failure(fmt.Errorf("program open: %w", err))
			}
			defer dst.Abort()
			if _, _, err := sealed.Open(dst, in, key, &wantSum); err != nil {
				return failure(fmt.Errorf("program open %s: %w", args[0], err))
			}
			if err := dst.Commit(); err != nil {
				return failure(fmt.Errorf("program open: %w", err))
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "opened %s -> %s (sha256 %s)\n", args[0], out, want)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "content key file written by seal")
	f.StringVar(&out, "out", "", "plaintext file to create (must not exist)")
	f.StringVar(&want, "sha256", "", "expected plaintext SHA-256 (default: the key file's)")
	return cmd
}
