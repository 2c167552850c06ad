// Package cli holds the cobra commands of the cloister binary. Each noun
// (run, attest, key, policy, session, node, ledger, demo) lives in its own
// file with a constructor (newAttestCmd, …) that newRoot calls; commands
// are built afresh for each execution, never kept in package variables.
package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit statuses shared by every command (ARCHITECTURE.md "Interfaces").
const (
	ExitOK      = 0
	ExitFailure = 1 // the operation failed: verification failed, refused
	ExitUsage   = 2 // bad usage or unreadable input; nothing was done
)

// ExitError carries the process exit status a command wants, with the error
// printed to stderr. Commands return it instead of calling os.Exit so that
// deferred cleanup still runs.
type ExitError struct {
	Code int
	Err  error
	// Silent suppresses printing Err (the command already reported it,
	// e.g. as JSON on stdout).
	Silent bool
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError reports bad usage or unreadable input (exit 2).
func usageError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// failure reports that the operation itself failed or was refused (exit 1).
func failure(err error) error {
	return &ExitError{Code: ExitFailure, Err: err}
}

// newRoot builds the whole command tree afresh: no command is a package
// variable and nothing is registered from init, so every call (each test,
// each documentation generator) gets commands with default flag values.
// Each noun's constructor lives in the noun's own file; a new noun is one
// more line here.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cloister",
		Short: "Confidential, verifiable computation among parties who do not trust each other",
		Long: `cloister runs WebAssembly programs in attested isolates, releases keys and data
only to isolates whose evidence matches a signed policy, and records who did
what on a verifiable ledger.`,
		Example: `  cloister demo            # a three-party computation on one machine
  cloister run --help      # run a program in a jailed isolate`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Flag errors (unknown flag, bad value) are usage errors: exit 2.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())}
	})
	root.PersistentFlags().BoolP(quietFlag, "q", false, "no progress reports on standard error (they are off anyway when it is not a terminal)")
	root.AddCommand(
		newRunCmd(),
		newAttestCmd(),
		newKeyCmd(),
		newPolicyCmd(),
		newSessionCmd(),
		newNodeCmd(),
		newLedgerCmd(),
		newConsortiumCmd(),
		newStatusCmd(),
		newBackupCmd(),
		newDemoCmd(),
		newProgramCmd(),
		newBlobCmd(),
		newAdmissionCmd(),
		newUpCmd(),
		newDownCmd(),
		newTestnetCmd(),
		newBrokerCmd(),
		newArtifactCmd(),
		newACLCmd(),
		newOfferCmd(),
		newPieeCmd(),
		newDispatchCmd(),
		newRequestCmd(),
		newReceiptCmd(),
		newModelCmd(),
		newDatasetCmd(),
		newWorkflowCmd(),
		newApprovalCmd(),
	)
	return root
}

// Root returns a new root command, for tests and documentation generators.
func Root() *cobra.Command { return newRoot() }

// Execute runs the command line and returns the process exit status.
func Execute() int {
	return run(newRoot(), os.Args[1:])
}

// run executes cmd with args and returns the exit status, printing the
// error, if any, on cmd's standard error.
func run(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if !ee.Silent && ee.Err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "cloister:", ee.Err)
		}
		return ee.Code
	}
	// Errors cobra produces itself (unknown command, wrong number of
	// arguments) are usage errors.
	fmt.Fprintln(cmd.ErrOrStderr(), "cloister:", err)
	return ExitUsage
}
