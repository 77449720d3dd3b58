// Package cli is the godfs command line: the servers (master, datanode,
// dev) and the file commands. Only this package knows about flags; it
// builds Options and Configs and calls the packages that do the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/hrpc"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks a command line that does not make sense.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the godfs command and returns its exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "godfs: %s\n", oneLine(describe(err)))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return exitUsage
	}
	return exitError
}

// describe renders an error for a person: the server's own message for
// remote errors (it names the operation and path already).
func describe(err error) string {
	var re *hrpc.RemoteError
	if errors.As(err, &re) {
		var pe *fs.PathError
		if errors.As(err, &pe) && !strings.Contains(re.Error(), pe.Path) {
			return pe.Op + " " + pe.Path + ": " + re.Error()
		}
		return re.Error()
	}
	return err.Error()
}

// oneLine joins a message's non-empty lines with "; " (cobra's
// suggestions come as lines of their own, some blank, some indented).
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	// Flag errors arrive as usageError already (SetFlagErrorFunc); what is
	// left is cobra's own wording for a command it does not know.
	for _, p := range []string{"unknown command"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// env holds what commands share: streams and the master address.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	master string
	log    *slog.Logger
	level  slog.LevelVar
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &e.level}))
	root := &cobra.Command{
		Use:           "godfs",
		Short:         "godfs: a distributed file system that speaks HDFS",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if e.master == "" {
				e.master = os.Getenv("GODFS_MASTER")
			}
			if e.master == "" {
				e.master = protocol.DefaultMasterAddr
			}
			return nil
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&e.master, "master", "", "master address host:port (env GODFS_MASTER, default "+protocol.DefaultMasterAddr+")")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		e.masterCmd(), e.datanodeCmd(), e.devCmd(),
		e.putCmd(), e.appendCmd(), e.getCmd(), e.catCmd(), e.lsCmd(), e.mkdirCmd(), e.rmCmd(), e.mvCmd(),
		e.statCmd(), e.duCmd(), e.reportCmd(), e.benchCmd(),
		e.setrepCmd(), e.fsckCmd(), e.decommissionCmd(), e.balanceCmd(), e.safemodeCmd(),
	)
	return root
}

// client returns a client for the configured master.
func (e *env) client(opts ...client.Option) *client.Client {
	return client.New(e.master, opts...)
}

// ctx is the context file commands run under: cancelled by SIGINT.
func (e *env) ctx(cmd *cobra.Command) context.Context {
	if c := cmd.Context(); c != nil {
		return c
	}
	return context.Background()
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), got %d (see godfs %s --help)", cmd.Name(), n, len(args), cmd.Name())
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s needs at least %d argument(s) (see godfs %s --help)", cmd.Name(), n, cmd.Name())
		}
		return nil
	}
}
