package cli

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/godfs/godfs/bench"
	"github.com/godfs/godfs/devcluster"
)

func (e *env) benchCmd() *cobra.Command {
	var dev, asJSON bool
	var cpuProfile, memProfile string
	size := sizeFlag(1 << 30)
	var blockSize sizeFlag
	heap := sizeFlag(defaultMinHeap)
	repls, modes := "1,3", "stream,small,meta"
	cfg := bench.Config{StreamClients: 1, Clients: 16, SmallFiles: 2000, MetaOps: 20000, ListEntries: 100_000}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure godfs against disk, network, round-trip, fsync and CRC32C baselines from the same run",
		Long: "Measures large-file put/get (stream), 4 KiB files (small) and metadata operations (meta)\n" +
			"and prints each next to a baseline measured in the same run on the same machine: a local\n" +
			"copy with fsync, a loopback TCP copy, small-message round trips over loopback with as many\n" +
			"connections as clients, the fsync rate and CRC32C speed; alongside the paced creates, the\n" +
			"local disk's fdatasync latency. Before each mode it waits until the datanodes have deleted\n" +
			"what the last one removed, and syncs. With --dev it starts its own in-process cluster\n" +
			"(3 datanodes) in a temporary directory. \"cpu us/op\" is the CPU time this process used\n" +
			"per operation (with --dev, the servers' too); \"stolen\" the share of all CPUs' time that\n" +
			"a hypervisor took during the measurement (Linux's steal), which slows everything in it;\n" +
			"\"idle\" the share that went idle (idle and iowait): what a figure left of the CPUs.",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, s := range strings.Split(repls, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return usagef("--replication: %q is not a list of positive numbers", repls)
				}
				cfg.Replications = append(cfg.Replications, n)
			}
			for _, m := range strings.Split(modes, ",") {
				if m = strings.TrimSpace(m); m != "stream" && m != "small" && m != "meta" {
					return usagef("--modes: %q is not stream, small or meta", m)
				}
				cfg.Modes = append(cfg.Modes, strings.TrimSpace(m))
			}
			if size <= 0 || cfg.StreamClients < 1 || cfg.Clients < 1 || cfg.SmallFiles < 1 || cfg.MetaOps < 1 || cfg.ListEntries < 1 || cfg.Runs < 1 {
				return usagef("--size, --stream-clients, --clients, --small-files, --meta-ops, --list-entries and --runs must be positive")
			}
			tmp, err := os.MkdirTemp("", "godfs-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			cfg.Master, cfg.TempDir, cfg.Size, cfg.BlockSize = e.master, tmp, int64(size), int64(blockSize)
			if memProfile != "" { // before the cluster starts: its allocations count too
				f, err := os.Create(memProfile)
				if err != nil {
					return err
				}
				// A sample every 4 KiB allocated, not every 512 KiB: the
				// profile is for finding what allocates per operation.
				defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
				runtime.MemProfileRate = 4096
				defer func() {
					err := pprof.Lookup("allocs").WriteTo(f, 0)
					if cerr := f.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						fmt.Fprintf(e.stderr, "godfs: --memprofile %s: %v\n", memProfile, err)
					}
				}()
			}
			if dev {
				defer minHeap(int64(heap))() // the master's, which this process runs
				c, err := devcluster.Start(devcluster.Config{Dir: tmp + "/cluster", Listen: "127.0.0.1:0",
					Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
				if err != nil {
					return err
				}
				defer c.Close()
				cfg.Master = c.Addr()
			}
			if !asJSON {
				fmt.Fprintf(e.stdout, "godfs bench: master %s, %d clients (stream: %d), %d run(s), medians\n", cfg.Master, cfg.Clients, cfg.StreamClients, cfg.Runs)
				fmt.Fprintf(e.stdout, "machine: %s\n", bench.ThisMachine())
			}
			if cpuProfile != "" { // with --dev this profiles the servers too
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			r, err := bench.Run(e.ctx(cmd), cfg)
			if r != nil {
				if asJSON {
					r.WriteJSON(e.stdout)
				} else {
					r.WriteTable(e.stdout)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dev, "dev", false, "start an in-process cluster for the run")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	f.StringVar(&modes, "modes", modes, "what to measure: stream, small, meta (comma-separated)")
	f.Var(&size, "size", "stream: bytes per file")
	f.Var(&blockSize, "block-size", "stream: block size (default: the master's)")
	f.StringVar(&repls, "replication", repls, "stream: comma-separated replications")
	f.IntVar(&cfg.StreamClients, "stream-clients", cfg.StreamClients, "stream: concurrent clients, each putting and getting a file of --size")
	f.IntVar(&cfg.Clients, "clients", cfg.Clients, "small, meta: concurrent clients")
	f.IntVar(&cfg.SmallFiles, "small-files", cfg.SmallFiles, "small: 4 KiB files")
	f.IntVar(&cfg.MetaOps, "meta-ops", cfg.MetaOps, "meta: files to create, stat and rename")
	f.IntVar(&cfg.ListEntries, "list-entries", cfg.ListEntries, "meta: entries of the directory listed (the creates' files, and more to make this many)")
	f.IntVar(&cfg.Runs, "runs", 1, "whole runs; the report gives each figure's median")
	f.Var(&heap, "min-heap", "with --dev: the in-process master's --min-heap")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run (pprof) to this file")
	f.StringVar(&memProfile, "memprofile", "", "write a profile of the run's allocations (pprof) to this file")
	return cmd
}
