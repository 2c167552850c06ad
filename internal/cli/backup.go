package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/backup"
)

func newBackupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up a stopped node's data directory or validator's home, and restore it",
		Long: `backup create writes a node's data directory (platform key, sessions, entry
numbers, stored inputs, the embedded ledger) or a validator's home (keys,
genesis, blocks, the ledger's store) to one archive, with a manifest of
every file's size and SHA-256; backup restore unpacks it onto a fresh
directory, on this machine or another, and checks every file against the
manifest before moving the directory into place: a damaged or cut archive
restores nothing. Compiled-program caches are left out (rebuilt on use).

The directory must not be in use: a running node or validator holds its
lock (DIR/.cloister.lock) and the backup is refused until it stops.
On Kubernetes, scale the StatefulSet to 0 first, or snapshot the volume.

The archive holds the directory's private keys (platform key, validator
key): it is written with mode 0600; keep it as you keep those keys.

Restore only the latest backup of a validator, taken after it stopped, and
never run two copies: a validator restored from an older copy could sign
again at heights it already signed. A node restored from an older copy
sends its unconfirmed ledger entries again under new numbers if the ledger
holds others under theirs (it logs so); sessions taken since the backup
are lost to it. docs/operations.md has the procedures.

Exit status: 0 done; 1 refused (directory in use, not empty, archive not
as its manifest says) or failed; 2 bad usage.`,
		Example: `  cloister backup create --data ./node-data --out node-$(date +%F).tar
  cloister backup restore --from node-2026-01-31.tar --data /srv/cloister/node-data
  cloister backup create --data ./testnet/v0 --out v0.tar`,
	}
	cmd.AddCommand(newBackupCreateCmd(), newBackupRestoreCmd())
	return cmd
}

// backupSummary is what create and restore print with --json.
type backupSummary struct {
	Kind    string   `json:"kind"`
	Archive string   `json:"archive"`
	Dir     string   `json:"dir"`
	Files   int      `json:"files"`
	Bytes   int64    `json:"bytes"`
	Skipped []string `json:"skipped,omitempty"`
}

func newBackupCreateCmd() *cobra.Command {
	var dir, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create --data DIR --out FILE",
		Short: "Write a stopped node's or validator's directory to an archive",
		Example: `  cloister backup create --data ./node-data --out node.tar
  cloister backup create --data ./testnet/v0 --out v0.tar --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" || out == "" {
				return usageError("backup create: --data DIR and --out FILE are required")
			}
			m, err := backup.Create(dir, out)
			if err != nil {
				return failure(fmt.Errorf("backup create: %w", err))
			}
			s := backupSummary{Kind: m.Kind, Archive: out, Dir: dir, Files: len(m.Files), Bytes: m.Bytes(), Skipped: m.Skipped}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %s %s to %s: %d files, %s\n", m.Kind, dir, out, s.Files, approxSize(s.Bytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data", "", "the node's data directory or the validator's home")
	cmd.Flags().StringVar(&out, "out", "", "archive to write (replaced atomically if it exists)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was backed up as JSON")
	return cmd
}

func newBackupRestoreCmd() *cobra.Command {
	var dir, from string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore --from FILE --data DIR",
		Short: "Restore an archive onto a fresh directory",
		Example: `  cloister backup restore --from node.tar --data /srv/cloister/node-data
  cloister node --data /srv/cloister/node-data --listen 0.0.0.0:7443 ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" || from == "" {
				return usageError("backup restore: --from FILE and --data DIR are required")
			}
			f, err := os.Open(from)
			if err != nil {
				return failure(fmt.Errorf("backup restore: %w", err))
			}
			defer f.Close()
			m, err := backup.Restore(f, dir)
			if err != nil {
				return failure(fmt.Errorf("backup restore: %w", err))
			}
			s := backupSummary{Kind: m.Kind, Archive: from, Dir: dir, Files: len(m.Files), Bytes: m.Bytes(), Skipped: m.Skipped}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s from %s (taken %s) to %s: %d files, %s\n", m.Kind, from, m.Created.Format("2006-01-02 15:04:05Z"), dir, s.Files, approxSize(s.Bytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "archive written by 'backup create'")
	cmd.Flags().StringVar(&dir, "data", "", "directory to restore into: missing or empty")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was restored as JSON")
	return cmd
}
