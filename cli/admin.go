package cli

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// stallAfter is how long `godfs balance` waits without progress.
const stallAfter = 30 * time.Second

// errUnhealthy makes fsck exit non-zero after printing its report.
var errUnhealthy = errors.New("the file system is not healthy")

func (e *env) reportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "report",
		Short: "Show the datanodes, safe mode and replication work",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			defer c.Close()
			r, err := c.Report(e.ctx(cmd))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Safe mode: %s\n", r.SafeModeStatus)
			fmt.Fprintf(e.stdout, "Blocks: %d, under-replicated: %d, copies in flight: %d, deletions queued: %d",
				r.Blocks, r.UnderReplicated, r.PendingReplications, r.PendingDeletions)
			if r.Balancing {
				fmt.Fprint(e.stdout, ", balancer running")
			}
			fmt.Fprintln(e.stdout)
			counts := map[string]int{}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tSTATE\tADMIN\tRACK\tCAPACITY\tUSED\tREMAINING\tBLOCKS\tLAST HEARTBEAT")
			for _, n := range r.Datanodes {
				counts[n.State]++
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s ago\n", n.Addr, n.State, adminName(n.Admin), n.Rack,
					formatSize(n.Capacity, true), formatSize(n.Used, true), formatSize(n.Remaining, true), n.Blocks,
					time.Since(n.LastHeartbeat).Round(time.Second))
			}
			tw.Flush()
			fmt.Fprintf(e.stdout, "%d live, %d stale, %d dead datanodes\n", counts["live"], counts["stale"], counts["dead"])
			return nil
		},
	}
}

func adminName(s string) string {
	switch s {
	case "DECOMMISSION_INPROGRESS":
		return "decommissioning"
	case "DECOMMISSIONED":
		return "decommissioned"
	}
	return "in-service"
}

func (e *env) setrepCmd() *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "setrep [-R] N REMOTE...",
		Short: "Change files' replication (the master copies or deletes replicas to match)",
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return usagef("setrep: replication %q must be a positive number", args[0])
			}
			c := e.client()
			defer c.Close()
			ctx := e.ctx(cmd)
			var set func(p string) error
			set = func(p string) error {
				fi, err := c.Stat(ctx, p)
				if err != nil {
					return err
				}
				if !fi.IsDir() {
					return c.SetReplication(ctx, p, n)
				}
				if !recursive {
					return fmt.Errorf("setrep %s: is a directory (use -R)", p)
				}
				ents, err := c.ReadDir(ctx, p)
				if err != nil {
					return err
				}
				for _, fi := range ents {
					if err := set(path.Join(p, fi.Name())); err != nil {
						return err
					}
				}
				return nil
			}
			paths, err := remotePaths(args[1:])
			if err != nil {
				return err
			}
			for _, p := range paths {
				if err := set(p); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "every file under the directories")
	return cmd
}

func (e *env) fsckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fsck [REMOTE]",
		Short: "Check block replication; exits 1 when blocks are missing or under-replicated",
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) > 1 {
				return usagef("fsck takes at most one path")
			}
			if len(args) == 1 {
				var err error
				if p, err = remotePath(args[0]); err != nil {
					return err
				}
			}
			c := e.client()
			defer c.Close()
			r, err := c.Fsck(e.ctx(cmd), p)
			if err != nil {
				return err
			}
			for _, pr := range r.Problems {
				fmt.Fprintf(e.stdout, "%s: block %d %s (%d of %d replicas)\n", pr.Path, pr.BlockID, pr.Kind, pr.Live, pr.Expected)
			}
			if r.Truncated {
				fmt.Fprintln(e.stdout, "... more problems not listed")
			}
			status := "HEALTHY"
			if r.Missing > 0 {
				status = "CORRUPT (data lost)"
			} else if r.UnderReplicated > 0 {
				status = "UNDER-REPLICATED"
			}
			fmt.Fprintf(e.stdout, "Status: %s\n Files: %d (%d being written)\n Directories: %d\n Blocks: %d\n Bytes: %d\n"+
				" Missing blocks: %d\n Under-replicated blocks: %d\n Over-replicated blocks: %d\n",
				status, r.Files, r.UnderConst, r.Dirs, r.Blocks, r.Bytes, r.Missing, r.UnderReplicated, r.OverReplicated)
			if !r.Healthy() {
				return fmt.Errorf("fsck %s: %w: %d missing, %d under-replicated blocks", p, errUnhealthy, r.Missing, r.UnderReplicated)
			}
			return nil
		},
	}
}

func (e *env) decommissionCmd() *cobra.Command {
	var cancel, wait bool
	cmd := &cobra.Command{
		Use:   "decommission [--cancel] [--wait] NODE",
		Short: "Move every replica off a datanode (NODE is its data address or uuid)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			defer c.Close()
			ctx := e.ctx(cmd)
			state, err := c.Decommission(ctx, args[0], cancel)
			if err != nil {
				return err
			}
			for wait && state == "DECOMMISSION_INPROGRESS" {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
				r, err := c.Report(ctx)
				if err != nil {
					return err
				}
				for _, n := range r.Datanodes {
					if n.Addr == args[0] || n.UUID == args[0] {
						state = n.Admin
					}
				}
			}
			fmt.Fprintf(e.stdout, "%s: %s\n", args[0], adminName(state))
			return nil
		},
	}
	cmd.Flags().BoolVar(&cancel, "cancel", false, "put the node back in service")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the node is decommissioned")
	return cmd
}

func (e *env) balanceCmd() *cobra.Command {
	var threshold float64
	var stop bool
	cmd := &cobra.Command{
		Use:   "balance [--threshold 0.1] [--stop]",
		Short: "Move blocks from fuller to emptier datanodes until each is within the threshold of the mean",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stop && (threshold <= 0 || threshold >= 1) {
				return usagef("--threshold must be between 0 and 1")
			}
			c := e.client()
			defer c.Close()
			ctx := e.ctx(cmd)
			if stop {
				_, err := c.Balance(ctx, 0)
				return err
			}
			best, since := 2.0, time.Now()
			for {
				st, err := c.Balance(ctx, threshold)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "max deviation from mean usage: %.1f%%, moves in flight: %d\n", 100*st.MaxDeviation, st.Moving)
				if st.Balanced {
					fmt.Fprintln(e.stdout, "balanced")
					return nil
				}
				if st.MaxDeviation < best-0.001 || st.Moving > 0 {
					best, since = min(best, st.MaxDeviation), time.Now()
				} else if time.Since(since) > stallAfter {
					c.Balance(ctx, 0) // stop it
					return fmt.Errorf("balance: no progress for %v at %.1f%% from the mean (no datanode can take more?)", stallAfter, 100*st.MaxDeviation)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(2 * time.Second):
				}
			}
		},
	}
	cmd.Flags().Float64Var(&threshold, "threshold", 0.1, "allowed deviation of each datanode's usage from the mean (0.1 = 10%)")
	cmd.Flags().BoolVar(&stop, "stop", false, "stop a running balancer")
	return cmd
}

func (e *env) safemodeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "safemode get|enter|leave",
		Short: "Show or change the master's safe mode (read-only while blocks report in)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "get" && args[0] != "enter" && args[0] != "leave" {
				return usagef("safemode: %q is not get, enter or leave", args[0])
			}
			c := e.client()
			defer c.Close()
			on, err := c.SafeMode(e.ctx(cmd), args[0])
			if err != nil {
				return err
			}
			state := "OFF"
			if on {
				state = "ON"
			}
			fmt.Fprintf(e.stdout, "Safe mode is %s\n", state)
			return nil
		},
	}
}
