package cli

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// demoPlay plays one demo flow with self as the binary of every component
// it starts; verbose sends what the components tell to errOut.
type demoPlay func(ctx context.Context, out, errOut io.Writer, self string, verbose bool) error

// componentsDemo gives a demo command what every demo that starts its
// components as processes does: this binary is each of them, a signal
// stops the flow, and --verbose (described by verboseHelp) shows what they
// tell.
func componentsDemo(cmd *cobra.Command, verboseHelp string, play demoPlay) *cobra.Command {
	var verbose bool
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		self, err := os.Executable()
		if err != nil {
			return failure(err)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		if err := play(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), self, verbose); err != nil {
			return failure(err)
		}
		return nil
	}
	cmd.Flags().BoolVar(&verbose, "verbose", false, verboseHelp)
	return cmd
}

// demoStage is what a demo flow starts from: the printer of its steps, a
// scratch directory, and where its components' own output goes.
type demoStage struct {
	pr     *demoPrinter
	dir    string
	events io.Writer // errOut with --verbose, else discarded
}

// stageDemo starts a demo flow named name: its printer, a deadline of
// limit on ctx, and a scratch directory; end removes the directory and
// releases the deadline.
func stageDemo(ctx context.Context, out, errOut io.Writer, verbose bool, name string, limit time.Duration) (context.Context, *demoStage, func(), error) {
	st := &demoStage{pr: &demoPrinter{w: out, start: time.Now(), last: time.Now()}, events: io.Discard}
	if verbose {
		st.events = errOut
	}
	dir, err := os.MkdirTemp("", "cloister-demo-"+name+"-")
	if err != nil {
		return nil, nil, nil, err
	}
	st.dir = dir
	ctx, cancel := context.WithTimeout(ctx, limit)
	return ctx, st, func() { cancel(); os.RemoveAll(dir) }, nil
}
