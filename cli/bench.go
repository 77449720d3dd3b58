package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/godfs/godfs/bench"
	"github.com/godfs/godfs/devcluster"
)

func (e *env) benchCmd() *cobra.Command {
	var dev bool
	size := sizeFlag(1 << 30)
	var blockSize sizeFlag
	repls := "1,3"
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure put/get throughput against a local copy baseline",
		Long: "Writes and reads a file of --size at each --replication and prints MB/s next to a\n" +
			"plain local file copy measured in the same run. With --dev it starts its own\n" +
			"in-process cluster (3 datanodes) in a temporary directory.",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rs []int
			for _, s := range strings.Split(repls, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return usagef("--replication: %q is not a list of positive numbers", repls)
				}
				rs = append(rs, n)
			}
			if size <= 0 {
				return usagef("--size must be positive")
			}
			tmp, err := os.MkdirTemp("", "godfs-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			master := e.master
			if dev {
				c, err := devcluster.Start(devcluster.Config{Dir: tmp + "/cluster", Listen: "127.0.0.1:0",
					Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
				if err != nil {
					return err
				}
				defer c.Close()
				master = c.Addr()
			}
			fmt.Fprintf(e.stdout, "godfs bench: %d bytes per file, master %s\n", int64(size), master)
			_, err = bench.Run(e.ctx(cmd), bench.Config{Master: master, Size: int64(size), BlockSize: int64(blockSize),
				Replications: rs, TempDir: tmp, Out: e.stdout})
			return err
		},
	}
	cmd.Flags().BoolVar(&dev, "dev", false, "start an in-process cluster for the run")
	cmd.Flags().Var(&size, "size", "bytes per file")
	cmd.Flags().Var(&blockSize, "block-size", "block size (default: the master's)")
	cmd.Flags().StringVar(&repls, "replication", repls, "comma-separated replications to measure")
	return cmd
}
