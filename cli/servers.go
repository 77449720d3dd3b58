package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/godfs/godfs/datanode"
	"github.com/godfs/godfs/devcluster"
	"github.com/godfs/godfs/master"
	"github.com/godfs/godfs/protocol"
)

// applyConfigFile sets flags from a YAML file of flag-name: value pairs;
// flags given on the command line win.
func applyConfigFile(flags *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	for k, v := range m {
		f := flags.Lookup(k)
		if f == nil || k == "config" {
			return usagef("config %s: unknown setting %q", path, k)
		}
		if f.Changed {
			continue
		}
		var val string
		if list, ok := v.([]any); ok {
			parts := make([]string, len(list))
			for i, x := range list {
				parts[i] = fmt.Sprint(x)
			}
			val = strings.Join(parts, ",")
		} else {
			val = fmt.Sprint(v)
		}
		if err := flags.Set(k, val); err != nil {
			return usagef("config %s: %s: %v", path, k, err)
		}
	}
	return nil
}

// serve runs a server until ctx is cancelled (SIGINT/SIGTERM), then closes
// it cleanly.
func serve(ctx context.Context, run func() error, closeFn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- run() }()
	select {
	case err := <-errc:
		closeFn()
		return err
	case <-ctx.Done():
		return closeFn()
	}
}

func (e *env) masterCmd() *cobra.Command {
	var cfgFile string
	cfg := master.DefaultConfig("")
	var blockSize sizeFlag = sizeFlag(cfg.BlockSize)
	var repl uint16 = cfg.Replication
	heap := sizeFlag(defaultMinHeap)
	cmd := &cobra.Command{
		Use:   "master",
		Short: "Run the master (metadata service, Hadoop RPC on --listen)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyConfigFile(cmd.Flags(), cfgFile); err != nil {
				return err
			}
			if cfg.Dir == "" {
				return usagef("master needs --dir")
			}
			cfg.BlockSize, cfg.Replication, cfg.Logger = uint64(blockSize), repl, e.log
			if !cmd.Flags().Changed("stale-after") {
				cfg.StaleAfter = 0 // derived from dead-after
			}
			if !cmd.Flags().Changed("lease-soft-limit") {
				cfg.LeaseSoftLimit = 0 // derived from lease-limit
			}
			defer minHeap(int64(heap))()
			m, err := master.New(cfg)
			if err != nil {
				return err
			}
			if err := m.Listen(); err != nil {
				m.Close()
				return err
			}
			fmt.Fprintf(e.stdout, "godfs master ready rpc=%s url=hdfs://%s/\n", m.Addr(), m.Addr())
			return serve(e.ctx(cmd), m.Serve, m.Close)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file of settings (keys are these flag names)")
	f.StringVar(&cfg.Dir, "dir", "", "directory for the op log and checkpoints (required)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "Hadoop RPC address")
	f.Var(&blockSize, "block-size", "default block size (e.g. 64MiB)")
	f.Uint16Var(&repl, "replication", repl, "default replication")
	f.DurationVar(&cfg.StaleAfter, "stale-after", cfg.StaleAfter, "consider a datanode stale (no new replicas, read last) after this long without a heartbeat")
	f.DurationVar(&cfg.DeadAfter, "dead-after", cfg.DeadAfter, "declare a datanode dead (re-replicate its blocks) after this long without a heartbeat")
	f.IntVar(&cfg.MaxTransfersPerNode, "max-transfers", cfg.MaxTransfersPerNode, "block copies a datanode sends at once for re-replication and balancing")
	f.Float64Var(&cfg.SafeModeThreshold, "safemode-threshold", cfg.SafeModeThreshold, "fraction of blocks with a reported replica needed to leave safe mode after a restart")
	f.DurationVar(&cfg.LeaseLimit, "lease-limit", cfg.LeaseLimit, "recover (close) files whose writer has not renewed its lease for this long")
	f.DurationVar(&cfg.LeaseSoftLimit, "lease-soft-limit", time.Minute, "let another writer take over a file whose writer has been silent this long")
	f.Uint64Var(&cfg.CheckpointEvery, "checkpoint-every", cfg.CheckpointEvery, "log entries between checkpoints")
	f.IntVar(&cfg.MaxReportLeases, "max-report-leases", cfg.MaxReportLeases, "datanodes that may send a full block report at once")
	minHeapFlag(f, &heap)
	return cmd
}

func (e *env) datanodeCmd() *cobra.Command {
	var cfgFile string
	var opts datanode.Options
	scanRate, transferRate, reserved := sizeFlag(16<<20), sizeFlag(64<<20), sizeFlag(0)
	cmd := &cobra.Command{
		Use:   "datanode",
		Short: "Run a datanode (DataTransferProtocol on --listen)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyConfigFile(cmd.Flags(), cfgFile); err != nil {
				return err
			}
			if len(opts.DataDirs) == 0 {
				return usagef("datanode needs --data DIR")
			}
			opts.Master = e.master
			opts.Logger = e.log
			opts.ScanRate, opts.TransferRate, opts.Reserved = int64(scanRate), int64(transferRate), int64(reserved)
			d, err := datanode.New(opts)
			if err != nil {
				return err
			}
			if err := d.Listen(); err != nil {
				d.Close()
				return err
			}
			fmt.Fprintf(e.stdout, "godfs datanode ready data=%s uuid=%s master=%s\n", d.Addr(), d.UUID(), e.master)
			return serve(e.ctx(cmd), d.Serve, d.Close)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file of settings (keys are these flag names)")
	f.StringSliceVar(&opts.DataDirs, "data", nil, "data directories (repeat or comma-separate)")
	f.StringVar(&opts.Listen, "listen", "127.0.0.1:9866", "DataTransferProtocol address")
	f.StringVar(&opts.Rack, "rack", "/default-rack", "network location of this datanode")
	f.DurationVar(&opts.HeartbeatInterval, "heartbeat", 3*time.Second, "time between heartbeats")
	f.DurationVar(&opts.BlockReportInterval, "block-report-interval", time.Hour, "time between full block reports")
	f.IntVar(&opts.BlockReportPart, "block-report-part", 500_000, "replicas per call of a block report, full or incremental (bigger reports go in parts)")
	f.DurationVar(&opts.ScanPeriod, "scan-period", 24*time.Hour, "re-verify every replica's checksums this often")
	f.Var(&scanRate, "scan-rate", "bytes per second the checksum scanner reads")
	f.Var(&transferRate, "transfer-rate", "bytes per second of each re-replication copy")
	f.Var(&reserved, "reserved", "space on each data directory's disk left to other uses (replicas do not take it)")
	return cmd
}

func (e *env) devCmd() *cobra.Command {
	cfg := devcluster.Config{Dir: "./godfs-data", Listen: protocol.DefaultMasterAddr, DataNodes: 3}
	var blockSize sizeFlag = protocol.DefaultBlockSize
	heap := sizeFlag(defaultMinHeap)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole local cluster (master + datanodes) in one process",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.DataNodes < 1 {
				return usagef("dev needs at least one datanode")
			}
			cfg.BlockSize = uint64(blockSize)
			cfg.Logger = e.log
			defer minHeap(int64(heap))()
			c, err := devcluster.Start(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "godfs dev cluster ready: %d datanodes, data in %s\n", len(c.DataNodes), cfg.Dir)
			fmt.Fprintf(e.stdout, "  master:      %s   (godfs --master %s ..., or GODFS_MASTER=%s)\n", c.Addr(), c.Addr(), c.Addr())
			fmt.Fprintf(e.stdout, "  HDFS URL:    hdfs://%s/   (HADOOP_NAMENODE=%s hdfs ls /)\n", c.Addr(), c.Addr())
			fmt.Fprintf(e.stdout, "Press Ctrl-C to stop.\n")
			select {
			case <-e.ctx(cmd).Done():
			case err := <-c.Err():
				c.Close()
				return err
			}
			return c.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", cfg.Dir, "directory for all cluster state")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "master RPC address")
	f.IntVar(&cfg.DataNodes, "datanodes", cfg.DataNodes, "number of datanodes")
	f.Var(&blockSize, "block-size", "default block size")
	minHeapFlag(f, &heap)
	return cmd
}

// defaultMinHeap is the master's --min-heap. At Go's default the collector
// ran every ~0.2 s under load (see minHeap); at 128 MiB every ~4 s of
// creates at 10,000/s, each collection with 3-6 ms of assists taken
// from the RPCs and 200-300 of them slow behind it, ~0.5% of all ops,
// half the paced p99's budget. At 512 MiB one comes every ~18 s, with
// room enough to mark without assists (GODEBUG=gctrace=1: 0 ms assist,
// against 3-6 ms). A master that serves millions of files is above it.
const defaultMinHeap = 512 << 20

func minHeapFlag(f *pflag.FlagSet, heap *sizeFlag) {
	f.Var(heap, "min-heap", "heap the process grows to before it collects garbage, as Java's -Xms (0: Go's default; GOGC, if set, wins)")
}

// sizeFlag is a byte size flag that accepts 123, 64k, 64KiB, 1M, 1GiB.
type sizeFlag int64

// String prints whole KiB, MiB or GiB with their unit (help shows
// defaults so), other sizes in bytes.
func (s *sizeFlag) String() string {
	n := int64(*s)
	for _, u := range []struct {
		unit string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.unit)
		}
	}
	return fmt.Sprint(n)
}
func (s *sizeFlag) Type() string { return "size" }
func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1 << 10}, {"mb", 1 << 20},
		{"gb", 1 << 30}, {"tb", 1 << 40}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != s {
		return 0, errors.New("not a size (try 64MiB, 1G, 4096)")
	}
	if n > (1<<62)/mult {
		return 0, errors.New("size too large")
	}
	return n * mult, nil
}

// formatSize prints bytes exactly, or human-readable with human.
func formatSize(n int64, human bool) string {
	if !human {
		return fmt.Sprint(n)
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}
