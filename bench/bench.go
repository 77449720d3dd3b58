// Package bench measures godfs against baselines measured in the same run
// on the same machine — a local copy with fsync (disk), a single-stream
// loopback TCP copy (network), the data directory's fsync rate, and CRC32C
// speed — since absolute numbers on shared machines mean little. Modes:
// stream (large files), small (4 KiB files) and meta (metadata only).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godfs/godfs/client"
)

// Config says what to measure.
type Config struct {
	Master       string   // master address
	Modes        []string // stream, small, meta; empty: all
	Size         int64    // stream: bytes per file
	BlockSize    int64    // stream: 0 = the master's default
	Replications []int    // stream: one put/get pair per replication
	// StreamClients put (then get) a file of Size each at once, every one
	// its own client; the figure is their bytes over the time all took
	// (default 1).
	StreamClients int
	Clients       int    // small, meta: concurrent clients (default 16)
	SmallFiles    int    // small: 4 KiB files to write, stat and read (default 2000)
	MetaOps       int    // meta: files to create (and stat, list, rename) (default 20000)
	ListEntries   int    // meta: entries of the directory listed, at least MetaOps (default 100,000)
	TempDir       string // where local files go (the disk baseline is measured here)
	Runs          int    // whole runs (baselines and modes); the report gives medians (default 1)
}

// Result is one measurement.
type Result struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"` // MB/s or ops/s
	P50ms    float64 `json:"p50_ms,omitempty"`
	P99ms    float64 `json:"p99_ms,omitempty"`
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"` // Value / the baseline's value
	// CPUus is the CPU time (user and system) this process used per
	// operation: with --dev the servers' with the clients', a figure the
	// VM's slow hours move less than the rate (they take CPU away, the
	// work per op stays).
	CPUus float64 `json:"cpu_us_per_op,omitempty"`
	// RunsP99ms is each run's p99, in run order, beside their median:
	// a p99 over seconds moves with what the VM does in them.
	RunsP99ms []float64 `json:"p99_ms_runs,omitempty"`
	// StolenPct is the share of the machine's CPU time (all its CPUs)
	// that the hypervisor took while this was measured, where the system
	// tells it (Linux's steal) and the measurement took a quarter of a second
	// or more (cpuMinSpan). A vCPU the host runs something else on stops dead:
	// in six paced runs of the seventh machine (docs/performance.md),
	// 21-34% was stolen in the four with a p99 of 12-58 ms, 1.2-1.6% in
	// the two with 2.6-3.5 ms.
	StolenPct float64 `json:"stolen_pct,omitempty"`
	// RunsStolenPct is each run's StolenPct beside RunsP99ms, so that
	// a run's p99 can be read with the theft in it.
	RunsStolenPct []float64 `json:"stolen_pct_runs,omitempty"`
	// IdlePct is the share of the machine's CPU time that went idle
	// (idle and iowait) while this was measured, on the same terms: what
	// a figure left unused. Waiting on the disk shows here; so does a
	// kernel that leaves a CPU idle while threads queue on another: the
	// ninth machine's kept Go's two threads on one vCPU for milliseconds
	// at a time (perf sched), and its getFileInfo and round-trip baseline
	// left a third of the CPU idle with 16 clients in flight
	// (docs/performance.md).
	IdlePct float64 `json:"idle_pct,omitempty"`
	// RunsIdlePct is each run's IdlePct beside RunsP99ms.
	RunsIdlePct []float64 `json:"idle_pct_runs,omitempty"`
}

// Report is a run's baselines and results; of several runs, the medians.
type Report struct {
	Machine   Machine  `json:"machine"`
	Runs      int      `json:"runs"`
	Baselines []Result `json:"baselines"`
	Results   []Result `json:"results"`
}

func (r *Report) baseline(name string) float64 {
	for _, b := range r.Baselines {
		if b.Name == name {
			return b.Value
		}
	}
	return 0
}

func (r *Report) add(res Result, baseline string) {
	if b := r.baseline(baseline); b > 0 {
		res.Baseline, res.Ratio = baseline, res.Value/b
	}
	r.Results = append(r.Results, res)
}

// WriteTable prints the report for a person.
func (r *Report) WriteTable(w io.Writer) {
	width := len("measurement")
	for _, x := range append(r.Baselines[:len(r.Baselines):len(r.Baselines)], r.Results...) {
		width = max(width, len(x.Name))
	}
	fmt.Fprintf(w, "%-*s %12s %-6s %8s %8s %9s %7s %7s  %s\n", width, "measurement", "value", "unit", "p50 ms", "p99 ms", "cpu us/op", "stolen", "idle", "vs baseline")
	row := func(x Result) {
		ratio := ""
		if x.Baseline != "" {
			ratio = fmt.Sprintf("%.2fx %s", x.Ratio, x.Baseline)
		}
		p := func(v float64, digits int) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.*f", digits, v)
		}
		pct := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f%%", v)
		}
		fmt.Fprintf(w, "%-*s %12.1f %-6s %8s %8s %9s %7s %7s  %s\n", width, x.Name, x.Value, x.Unit, p(x.P50ms, 2), p(x.P99ms, 2), p(x.CPUus, 1), pct(x.StolenPct), pct(x.IdlePct), ratio)
	}
	for _, b := range r.Baselines {
		row(b)
	}
	for _, x := range r.Results {
		row(x)
	}
}

// WriteJSON prints the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Run measures the baselines, then the modes asked for, cfg.Runs times,
// and reports each figure's median over the runs. A ratio is the median
// of the per-run ratios, each against its own run's baseline, so a noisy
// moment moves a figure and its baseline together.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := preflight(ctx, cfg); err != nil {
		return nil, err
	}
	var runs []*Report
	for i := 0; i < max(cfg.Runs, 1); i++ {
		r, err := runOnce(ctx, cfg)
		if err != nil {
			return r, err
		}
		runs = append(runs, r)
	}
	m := median(runs)
	m.Machine = ThisMachine()
	return m, nil
}

// preflight asks the master for what the run will, before the baselines
// take half a minute: that it answers and, for the stream mode, that it
// takes files of the block size and replications asked for.
func preflight(ctx context.Context, cfg Config) error {
	c := client.New(cfg.Master)
	defer c.Close()
	if _, _, err := c.ServerDefaults(ctx); err != nil {
		return err
	}
	if len(cfg.Modes) > 0 && !slices.Contains(cfg.Modes, "stream") {
		return nil
	}
	for _, repl := range cfg.Replications {
		name := fmt.Sprintf("/.bench/preflight-r%d", repl)
		w, err := c.Create(ctx, name, client.Replication(repl), client.BlockSize(cfg.BlockSize), client.CreateParents(), client.Overwrite())
		if err == nil {
			err = w.Close()
			c.Remove(ctx, name, false)
		}
		if err != nil {
			return fmt.Errorf("stream, replication %d: %w", repl, err)
		}
	}
	return nil
}

// median merges reports of the same measurements into their medians.
func median(runs []*Report) *Report {
	if len(runs) == 1 {
		runs[0].Runs = 1
		return runs[0]
	}
	merge := func(pick func(*Report) []Result) []Result {
		var out []Result
		for i, first := range pick(runs[0]) {
			m := first
			field := func(f func(Result) float64) float64 {
				v := make([]float64, len(runs))
				for j, r := range runs {
					v[j] = f(pick(r)[i])
				}
				sort.Float64s(v)
				return v[len(v)/2]
			}
			m.Value = field(func(x Result) float64 { return x.Value })
			m.P50ms = field(func(x Result) float64 { return x.P50ms })
			m.P99ms = field(func(x Result) float64 { return x.P99ms })
			m.Ratio = field(func(x Result) float64 { return x.Ratio })
			m.CPUus = field(func(x Result) float64 { return x.CPUus })
			m.StolenPct = field(func(x Result) float64 { return x.StolenPct })
			m.IdlePct = field(func(x Result) float64 { return x.IdlePct })
			if m.P99ms > 0 {
				m.RunsP99ms, m.RunsStolenPct, m.RunsIdlePct = nil, nil, nil
				for _, r := range runs {
					x := pick(r)[i]
					m.RunsP99ms = append(m.RunsP99ms, x.P99ms)
					m.RunsStolenPct = append(m.RunsStolenPct, x.StolenPct)
					m.RunsIdlePct = append(m.RunsIdlePct, x.IdlePct)
				}
			}
			out = append(out, m)
		}
		return out
	}
	return &Report{Runs: len(runs),
		Baselines: merge(func(r *Report) []Result { return r.Baselines }),
		Results:   merge(func(r *Report) []Result { return r.Results })}
}

func runOnce(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Clients <= 0 {
		cfg.Clients = 16
	}
	if cfg.StreamClients <= 0 {
		cfg.StreamClients = 1
	}
	if cfg.SmallFiles <= 0 {
		cfg.SmallFiles = 2000
	}
	if cfg.MetaOps <= 0 {
		cfg.MetaOps = 20000
	}
	if cfg.ListEntries <= 0 {
		cfg.ListEntries = 100_000
	}
	modes := map[string]bool{}
	for _, m := range cfg.Modes {
		modes[m] = true
	}
	all := len(modes) == 0
	r := &Report{}
	createDir, err := os.MkdirTemp(cfg.TempDir, "creates-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(createDir)
	if err := r.measureBaselines(cfg, createDir); err != nil {
		return nil, err
	}
	c := client.New(cfg.Master)
	defer c.Close()
	defer c.Remove(context.Background(), "/.bench", true)
	for _, m := range []struct {
		name string
		run  func(context.Context, *client.Client, Config) error
	}{{"stream", r.stream}, {"small", r.small}, {"meta", r.meta}} {
		if !all && !modes[m.name] {
			continue
		}
		settle(ctx, c)
		if err := m.run(ctx, c, cfg); err != nil {
			return r, err
		}
	}
	return r, nil
}

// settle waits until the datanodes have deleted what was removed before
// (their used space holds still for settleFor, at most settleMax) and
// flushes this machine's file systems: in full runs, a mode measured while
// the one before was still being deleted lost a fifth of its creates a
// second to the disk's work.
func settle(ctx context.Context, c *client.Client) {
	last, since := int64(-1), time.Now()
	for start := time.Now(); time.Since(start) < settleMax; time.Sleep(settleFor / 4) {
		dns, err := c.Datanodes(ctx)
		if err != nil {
			break
		}
		var used int64
		for _, d := range dns {
			used += d.Used
		}
		if used != last {
			last, since = used, time.Now()
		} else if time.Since(since) >= settleFor {
			break
		}
	}
	syncDisks()
}

// syncDisks writes back what the modes before left dirty (sync(2)).
func syncDisks() { unix.Sync() }

// settleFor is a few heartbeats of a dev cluster (1 s) and one of a real
// one (3 s).
const (
	settleFor = 3 * time.Second
	settleMax = 60 * time.Second
)

// stream puts and gets large files, one per stream client, for each
// replication.
func (r *Report) stream(ctx context.Context, c *client.Client, cfg Config) error {
	src := filepath.Join(cfg.TempDir, "bench-src")
	if err := writeRandomFile(src, cfg.Size); err != nil {
		return err
	}
	defer os.Remove(src)
	n := cfg.StreamClients
	what := size(cfg.Size)
	if n > 1 {
		what = fmt.Sprintf("%s x %d clients", what, n)
	}
	// Each client's bytes over the time they all took: parallel's rate
	// in files a second, times a file's size.
	rate := func(name string, op func(c *client.Client, i int) error) (Result, error) {
		res, err := parallel(n, n, 0, cfg.Master, op)
		res.Name, res.Value, res.Unit = name, res.Value*float64(cfg.Size)/1e6, "MB/s"
		res.P50ms, res.P99ms, res.CPUus = 0, 0, 0 // of whole files, not of operations
		return res, err
	}
	for _, repl := range cfg.Replications {
		name := func(i int) string { return fmt.Sprintf("/.bench/stream-r%d/%d", repl, i) }
		res, err := rate(fmt.Sprintf("put %s, replication %d", what, repl), func(c *client.Client, i int) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			w, err := c.Create(ctx, name(i), client.Replication(repl), client.BlockSize(cfg.BlockSize), client.CreateParents(), client.Overwrite())
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, f); err != nil {
				w.Close()
				return err
			}
			return w.Close()
		})
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		r.add(res, "disk: cp+fsync")
		// Datanodes write big replicas past the page cache (O_DIRECT), so
		// the first read comes from the disk and the second from memory.
		for _, read := range []string{"first read", "warm"} {
			res, err = rate(fmt.Sprintf("get %s, replication %d, %s", what, repl, read), func(c *client.Client, i int) error {
				rd, err := c.Open(ctx, name(i))
				if err != nil {
					return err
				}
				defer rd.Close()
				_, err = io.Copy(io.Discard, rd)
				return err
			})
			if err != nil {
				return fmt.Errorf("get: %w", err)
			}
			r.add(res, "network: loopback TCP")
		}
		c.Remove(ctx, fmt.Sprintf("/.bench/stream-r%d", repl), true)
	}
	return nil
}

// small writes, stats and reads 4 KiB files with many clients.
func (r *Report) small(ctx context.Context, c *client.Client, cfg Config) error {
	data := make([]byte, 4096)
	rand.NewChaCha8([32]byte{9}).Read(data)
	name := func(i int) string { return fmt.Sprintf("/.bench/small/d%d/f%d", i%cfg.Clients, i) }
	for i := 0; i < cfg.Clients; i++ {
		if err := c.Mkdir(ctx, fmt.Sprintf("/.bench/small/d%d", i), 0o755, true); err != nil {
			return err
		}
	}
	err := r.measure("4 KiB files written, replication 3", "file creates", cfg, cfg.SmallFiles, func(c *client.Client, i int) error {
		w, err := c.Create(ctx, name(i), client.Replication(3))
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			w.Close()
			return err
		}
		return w.Close()
	})
	if err == nil {
		err = r.measure("4 KiB files stat", roundTripBaseline, cfg, cfg.SmallFiles, func(c *client.Client, i int) error {
			_, err := c.Stat(ctx, name(i))
			return err
		})
	}
	if err == nil {
		// A read is two round trips at least: the block's locations from
		// the master, then the replica from a datanode.
		err = r.measure("4 KiB files read", roundTripBaseline, cfg, cfg.SmallFiles, func(c *client.Client, i int) error {
			rd, err := c.Open(ctx, name(i))
			if err != nil {
				return err
			}
			defer rd.Close()
			_, err = io.Copy(io.Discard, rd)
			return err
		})
	}
	if err != nil {
		return err
	}
	return c.Remove(ctx, "/.bench/small", true)
}

// meta measures metadata operations only: no datanode is involved.
func (r *Report) meta(ctx context.Context, c *client.Client, cfg Config) error {
	name := func(i int) string { return fmt.Sprintf("/.bench/meta/f%d", i) }
	for _, d := range []string{"/.bench/meta", "/.bench/paced"} {
		if err := c.Mkdir(ctx, d, 0o755, true); err != nil {
			return err
		}
	}
	createComplete := func(name func(int) string) func(c *client.Client, i int) error {
		return func(c *client.Client, i int) error {
			w, err := c.Create(ctx, name(i))
			if err != nil {
				return err
			}
			return w.Close()
		}
	}
	err := r.measure("create+complete (empty files)", "fsync rate", cfg, cfg.MetaOps, createComplete(name))
	if err == nil {
		// Latency under a load the master keeps up with, as a service
		// would run: at half the rate just measured, each op started at
		// its time whether or not the one before has finished.
		half := r.Results[len(r.Results)-1].Value / 2
		err = r.measurePaced("create+complete at half that rate", cfg, cfg.MetaOps, half,
			createComplete(func(i int) string { return fmt.Sprintf("/.bench/paced/f%d", i) }))
	}
	if err == nil {
		err = r.measure("mkdirs", "fsync rate", cfg, cfg.MetaOps, func(c *client.Client, i int) error {
			return c.Mkdir(ctx, fmt.Sprintf("/.bench/dirs/d%d", i), 0o755, true)
		})
	}
	if err == nil {
		err = r.measure("getFileInfo", roundTripBaseline, cfg, cfg.MetaOps, func(c *client.Client, i int) error {
			_, err := c.Stat(ctx, name(i))
			return err
		})
	}
	if err != nil {
		return err
	}
	// The listed directory holds the creates' files and, untimed, as many
	// more as make ListEntries.
	entries := max(cfg.ListEntries, cfg.MetaOps)
	if more := entries - cfg.MetaOps; more > 0 {
		fill := createComplete(func(i int) string { return name(cfg.MetaOps + i) })
		if _, err := parallel(cfg.Clients, more, 0, cfg.Master, fill); err != nil {
			return fmt.Errorf("fill the directory to list: %w", err)
		}
	}
	d, err := timeIt(func() error {
		ents, err := c.ReadDir(ctx, "/.bench/meta")
		if err == nil && len(ents) != entries {
			err = fmt.Errorf("listing has %d entries, want %d", len(ents), entries)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("listing: %w", err)
	}
	r.add(Result{Name: fmt.Sprintf("list a %d-entry directory", entries), Value: float64(entries) / d.Seconds(), Unit: "ent/s"}, "")
	if err := r.measure("rename", "fsync rate", cfg, cfg.MetaOps, func(c *client.Client, i int) error {
		return c.Rename(ctx, name(i), name(i)+".renamed")
	}); err != nil {
		return err
	}
	c.Remove(ctx, "/.bench/dirs", true)
	c.Remove(ctx, "/.bench/paced", true)
	return c.Remove(ctx, "/.bench/meta", true)
}

// measure runs op n times over the clients and records it under name.
func (r *Report) measure(name, baseline string, cfg Config, n int, op func(c *client.Client, i int) error) error {
	res, err := parallel(cfg.Clients, n, 0, cfg.Master, op)
	return r.record(name, baseline, res, err)
}

// measurePaced is measure at rate ops a second: an op's latency counts
// from the time it was due, so one held up by the op before it on its
// client counts that wait too (no coordinated omission). Alongside, a
// probe times the local disk's fdatasyncs (see startFsyncProbe) and is
// recorded after it. It starts after pacedRest idle and pacedWarmup.
func (r *Report) measurePaced(name string, cfg Config, n int, rate float64, op func(c *client.Client, i int) error) error {
	time.Sleep(pacedRest)
	// Ops n, n+1, ... warm up: op must take indices past n.
	warm := func(c *client.Client, i int) error { return op(c, n+i) }
	if _, err := parallel(cfg.Clients, int(rate*pacedWarmup.Seconds()), rate, cfg.Master, warm); err != nil {
		return fmt.Errorf("%s, warming up: %w", name, err)
	}
	probe, err := startFsyncProbe(cfg.TempDir)
	if err != nil {
		return fmt.Errorf("fsync probe: %w", err)
	}
	res, err := parallel(cfg.Clients, n, rate, cfg.Master, op)
	disk, perr := probe.stop()
	if err = r.record(name, "", res, err); err != nil {
		return err
	}
	return r.record(probeName, "", disk, perr)
}

// pacedRest is how long the machine idles before a paced run. Right
// after a run that kept both vCPUs busy, this VM's hypervisor took the
// CPU away for 20-25 ms early in the paced run (only then did steal
// move in /proc/stat), and that one stall made the run's p99; a service
// at half its peak rate does not follow a burst at its peak
// (docs/performance.md, 2026-12-02).
const pacedRest = time.Second

// pacedWarmup is how long a paced run goes on unrecorded first, at its
// rate. Right after the rest the op log's syncs, and the disk probe's,
// took ~1 ms instead of 0.2 for the first 60 ms in half the runs, 60-530
// slow ops; a service running at half its peak is past that. Five
// alternating pairs of single --modes meta runs: p99 1.08-4.39 ms
// (median 1.58) with it, 1.13-21.4 (median 4.95) without, no slow op in
// the first 60 ms with it.
const pacedWarmup = time.Second

func (r *Report) record(name, baseline string, res Result, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	res.Name = name
	r.add(res, baseline)
	return nil
}

// parallel runs n operations over `clients` clients (each with its own
// connection, made before the clock starts) and returns the throughput
// and latency percentiles. With a rate (ops a second; 0 for as fast as
// they go), op i is due at i/rate seconds from the start and its latency
// counts from then.
func parallel(clients, n int, rate float64, master string, op func(c *client.Client, i int) error) (Result, error) {
	lat := make([][]time.Duration, clients)
	errs := make(chan error, clients)
	var wg, connected sync.WaitGroup
	var start time.Time
	begin := make(chan struct{})
	for k := 0; k < clients; k++ {
		wg.Add(1)
		connected.Add(1)
		go func(k int) {
			defer wg.Done()
			c := client.New(master)
			defer c.Close()
			// Connected before the clock starts: a service's clients
			// keep their connections, and 16 handshakes at once were up
			// to 300 slow ops at the start of a paced run.
			_, _, err := c.ServerDefaults(context.Background())
			connected.Done()
			<-begin
			if err != nil {
				errs <- err
				return
			}
			for i := k; i < n; i += clients {
				t := time.Now()
				if rate > 0 {
					t = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
					time.Sleep(time.Until(t))
				}
				if err := op(c, i); err != nil {
					errs <- err
					return
				}
				lat[k] = append(lat[k], time.Since(t))
			}
		}(k)
	}
	connected.Wait()
	cpu := processCPU()
	watch := watchCPU()
	start = time.Now()
	close(begin)
	wg.Wait()
	elapsed := time.Since(start)
	cpu = processCPU() - cpu
	stolen, idle := watch.shares()
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	res := latencies(all)
	res.Value, res.Unit = float64(n)/elapsed.Seconds(), "ops/s"
	res.CPUus = float64(cpu) / float64(time.Microsecond) / float64(n)
	res.StolenPct, res.IdlePct = stolen, idle
	return res, nil
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latencies sorts lat and returns a Result with its p50 and p99 (Value is
// the slowest, in ms).
func latencies(lat []time.Duration) Result {
	if len(lat) == 0 {
		return Result{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	return Result{Value: ms(lat[len(lat)-1]), P50ms: pct(0.50), P99ms: pct(0.99)}
}

func timeIt(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dB", n)
}

// writeRandomFile writes n pseudo-random (incompressible) bytes and syncs.
func writeRandomFile(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(f, rngReader(), n); err != nil {
		return err
	}
	return f.Sync()
}

func rngReader() io.Reader { return rand.NewChaCha8([32]byte{4, 5, 6}) }
