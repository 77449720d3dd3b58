package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/godfs/godfs/client"
)

// remotePaths checks every remote path before any is acted on.
func remotePaths(args []string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		p, err := remotePath(a)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// remotePath checks that a remote path is absolute and cleans it.
func remotePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", usagef("remote path %q must be absolute (start with /)", p)
	}
	return path.Clean(p), nil
}

func (e *env) putCmd() *cobra.Command {
	var repl int
	var blockSize sizeFlag
	var force bool
	cmd := &cobra.Command{
		Use:   "put LOCAL REMOTE",
		Short: "Copy a local file (- for stdin) into godfs",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := remotePath(args[1])
			if err != nil {
				return err
			}
			if repl < 0 || blockSize < 0 {
				return usagef("--replication and --block-size must not be negative")
			}
			var src io.Reader = e.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil && st.IsDir() {
					return fmt.Errorf("put %s: is a directory", args[0])
				}
				src = f
			}
			ctx := e.ctx(cmd)
			c := e.client()
			defer c.Close()
			// A remote directory receives the file under its own name.
			if fi, err := c.Stat(ctx, dst); err == nil && fi.IsDir() {
				if args[0] == "-" {
					return fmt.Errorf("put: %s is a directory", dst)
				}
				dst = path.Join(dst, path.Base(args[0]))
			}
			if err := e.capReplication(cmd, c, &repl); err != nil {
				return err
			}
			opts := []client.CreateOption{client.Replication(repl), client.BlockSize(int64(blockSize))}
			if force {
				opts = append(opts, client.Overwrite())
			}
			w, err := c.Create(ctx, dst, opts...)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, src); err != nil {
				w.Close()
				return fmt.Errorf("put %s: %w", dst, err)
			}
			return w.Close()
		},
	}
	cmd.Flags().IntVarP(&repl, "replication", "r", 0, "replication (default: the master's)")
	cmd.Flags().Var(&blockSize, "block-size", "block size (default: the master's)")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "replace an existing file")
	return cmd
}

// capReplication lowers the requested replication to the number of live
// datanodes, saying so, as the issue asks: the file is still written.
func (e *env) capReplication(cmd *cobra.Command, c *client.Client, repl *int) error {
	ctx := e.ctx(cmd)
	want := *repl
	if want == 0 {
		_, r, err := c.ServerDefaults(ctx)
		if err != nil {
			return err
		}
		want = r
	}
	nodes, err := c.Datanodes(ctx)
	if err != nil {
		return err
	}
	live := 0
	for _, n := range nodes {
		if n.Live {
			live++
		}
	}
	if live == 0 {
		return fmt.Errorf("no live datanodes: start one with `godfs datanode` (or use `godfs dev`)")
	}
	if want > live {
		fmt.Fprintf(e.stderr, "godfs: replication %d capped to %d: only %d live datanode(s)\n", want, live, live)
		want = live
	}
	*repl = want
	return nil
}

func (e *env) appendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "append LOCAL REMOTE",
		Short: "Append a local file (- for stdin) to a file in godfs",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := remotePath(args[1])
			if err != nil {
				return err
			}
			var src io.Reader = e.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				src = f
			}
			c := e.client()
			defer c.Close()
			w, err := c.Append(e.ctx(cmd), dst)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, src); err != nil {
				w.Close()
				return fmt.Errorf("append %s: %w", dst, err)
			}
			return w.Close()
		},
	}
}

func (e *env) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get REMOTE LOCAL",
		Short: "Copy a file from godfs to a local file (- for stdout)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := remotePath(args[0])
			if err != nil {
				return err
			}
			if args[1] == "-" {
				return e.copyOut(cmd, src, e.stdout)
			}
			dst := args[1]
			if st, err := os.Stat(dst); err == nil && st.IsDir() {
				dst = path.Join(dst, path.Base(src))
			}
			// Write beside the target and rename, so a failed get leaves
			// no partial file under the target name.
			tmp, err := os.CreateTemp(path.Dir(dst), ".godfs-get-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if err := e.copyOut(cmd, src, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			return os.Rename(tmp.Name(), dst)
		},
	}
}

func (e *env) copyOut(cmd *cobra.Command, src string, w io.Writer) error {
	c := e.client()
	defer c.Close()
	r, err := c.Open(e.ctx(cmd), src)
	if err != nil {
		return err
	}
	defer r.Close()
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := io.Copy(bw, r); err != nil {
		return err
	}
	return bw.Flush()
}

func (e *env) catCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cat REMOTE...",
		Short: "Print files to stdout",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				if err := e.copyOut(cmd, p, e.stdout); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (e *env) lsCmd() *cobra.Command {
	var long, human bool
	cmd := &cobra.Command{
		Use:   "ls [-l] [-h] [REMOTE...]",
		Short: "List directories",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"/"}
			}
			c := e.client()
			defer c.Close()
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', tabwriter.AlignRight)
			defer tw.Flush()
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				ents, err := c.ReadDir(e.ctx(cmd), p)
				if err != nil {
					return err
				}
				for _, fi := range ents {
					if !long {
						fmt.Fprintln(tw, fi.Name())
						continue
					}
					repl := "-"
					if !fi.IsDir() {
						repl = fmt.Sprint(fi.Replication)
					}
					fmt.Fprintf(tw, "%s\t %s\t %s\t %s\t %s\t %s\t %s\n", modeString(fi), repl, fi.Owner, fi.Group,
						formatSize(fi.Size(), human), fi.ModTime().Format("2006-01-02 15:04"), fi.Name())
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "long format: mode, replication, owner, group, size, mtime, name")
	cmd.Flags().BoolVarP(&human, "human", "h", false, "sizes as 1.5K, 2.0M, ...")
	cmd.Flags().Bool("help", false, "help for ls")
	return cmd
}

func modeString(fi *client.FileInfo) string {
	s := fi.Mode().Perm().String()
	if fi.IsDir() {
		return "d" + s[1:]
	}
	return s
}

func (e *env) mkdirCmd() *cobra.Command {
	var parents bool
	cmd := &cobra.Command{
		Use:   "mkdir [-p] REMOTE...",
		Short: "Create directories",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			defer c.Close()
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				if err := c.Mkdir(e.ctx(cmd), p, 0o755, parents); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "create missing parents; an existing directory is fine")
	return cmd
}

func (e *env) rmCmd() *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "rm [-r] REMOTE...",
		Short: "Remove files (and with -r, directories)",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			defer c.Close()
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				if p == "/" {
					return fmt.Errorf("rm: refusing to remove /")
				}
				if !recursive {
					if fi, err := c.Stat(e.ctx(cmd), p); err == nil && fi.IsDir() {
						return fmt.Errorf("rm %s: is a directory (use rm -r)", p)
					}
				}
				if err := c.Remove(e.ctx(cmd), p, recursive); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove directories and their contents")
	return cmd
}

func (e *env) mvCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mv SRC DST",
		Short: "Rename or move a file or directory (atomic)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := remotePath(args[0])
			if err != nil {
				return err
			}
			dst, err := remotePath(args[1])
			if err != nil {
				return err
			}
			c := e.client()
			defer c.Close()
			// Into an existing directory, as mv does.
			if fi, err := c.Stat(e.ctx(cmd), dst); err == nil && fi.IsDir() {
				dst = path.Join(dst, path.Base(src))
			}
			return c.Rename(e.ctx(cmd), src, dst)
		},
	}
}

func (e *env) statCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stat REMOTE...",
		Short: "Show a file's or directory's attributes",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			defer c.Close()
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				fi, err := c.Stat(e.ctx(cmd), p)
				if err != nil {
					return err
				}
				kind := "file"
				if fi.IsDir() {
					kind = "directory"
				}
				fmt.Fprintf(e.stdout, "  Path: %s\n  Type: %s\n  Size: %d\n  Mode: %s (%04o)\n Owner: %s\n Group: %s\n",
					p, kind, fi.Size(), modeString(fi), fi.Mode().Perm(), fi.Owner, fi.Group)
				if !fi.IsDir() {
					fmt.Fprintf(e.stdout, "  Repl: %d\n Block: %d\n", fi.Replication, fi.BlockSize)
				}
				fmt.Fprintf(e.stdout, "Modify: %s\nAccess: %s\n", fi.ModTime().Format(time.RFC3339), fi.Atime.Format(time.RFC3339))
			}
			return nil
		},
	}
}

func (e *env) duCmd() *cobra.Command {
	var summary, human bool
	cmd := &cobra.Command{
		Use:   "du [-s] [-h] REMOTE...",
		Short: "Show space used (bytes, and bytes on disk counting replicas)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"/"}
			}
			c := e.client()
			defer c.Close()
			ctx := e.ctx(cmd)
			paths, err := remotePaths(args)
			if err != nil {
				return err
			}
			for _, p := range paths {
				targets := []string{p}
				if !summary {
					if fi, err := c.Stat(ctx, p); err == nil && fi.IsDir() {
						ents, err := c.ReadDir(ctx, p)
						if err != nil {
							return err
						}
						targets = targets[:0]
						for _, fi := range ents {
							targets = append(targets, path.Join(p, fi.Name()))
						}
					}
				}
				for _, t := range targets {
					s, err := c.Du(ctx, t)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "%s\t%s\t%s\n", formatSize(s.Length, human), formatSize(s.SpaceConsumed, human), t)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&summary, "summary", "s", false, "one total per argument")
	cmd.Flags().BoolVarP(&human, "human", "h", false, "human-readable sizes")
	cmd.Flags().Bool("help", false, "help for du")
	return cmd
}
