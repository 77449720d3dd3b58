package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/devcluster"
	"github.com/godfs/godfs/protocol"
)

const benchSize = 64 << 20

// BenchmarkLocalCopy is the baseline for BenchmarkPut and BenchmarkGet.
func BenchmarkLocalCopy(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	if err := writeRandomFile(src, benchSize); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := copyLocal(src, filepath.Join(dir, "dst")); err != nil {
			b.Fatal(err)
		}
	}
}

func startCluster(b *testing.B) (*client.Client, string) {
	c := startDev(b)
	cl := client.New(c.Addr())
	b.Cleanup(func() { cl.Close() })
	return cl, c.Addr()
}

func benchPut(b *testing.B, repl int) {
	cl, _ := startCluster(b)
	src := filepath.Join(b.TempDir(), "src")
	if err := writeRandomFile(src, benchSize); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, _ := os.Open(src)
		w, err := cl.Create(ctx, "/f", client.Replication(repl), client.Overwrite())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(w, f); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkPutReplication1(b *testing.B) { benchPut(b, 1) }
func BenchmarkPutReplication3(b *testing.B) { benchPut(b, 3) }

func BenchmarkGet(b *testing.B) {
	cl, _ := startCluster(b)
	ctx := context.Background()
	w, err := cl.Create(ctx, "/f")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(w, rngReader(), benchSize); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := cl.Open(ctx, "/f")
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, r); err != nil || n != benchSize {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		r.Close()
	}
}

// startDev starts an in-process cluster of 3 datanodes for the test.
func startDev(t testing.TB) *devcluster.Cluster {
	c, err := devcluster.Start(devcluster.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A run the master would refuse, or with no master, fails in the preflight
// that Run starts with, not after the baselines; one it takes passes and
// leaves nothing behind.
func TestPreflight(t *testing.T) {
	c := startDev(t)
	ctx := context.Background()
	good := Config{Master: c.Addr(), Replications: []int{1, 3}}
	if err := preflight(ctx, good); err != nil {
		t.Fatalf("preflight of a good run: %v", err)
	}
	cl := client.New(c.Addr())
	defer cl.Close()
	if list, err := cl.ReadDir(ctx, "/.bench"); err != nil || len(list) != 0 {
		t.Fatalf("preflight left %v (%v)", list, err)
	}
	bad := good
	bad.BlockSize = 3
	if err := preflight(ctx, bad); !errors.Is(err, protocol.ErrInvalidArgument) || !strings.Contains(err.Error(), "replication 1") {
		t.Fatalf("preflight of block size 3: %v, want an invalid argument for replication 1", err)
	}
	bad.Modes = []string{"meta"} // the block size is the stream mode's only
	if err := preflight(ctx, bad); err != nil {
		t.Fatalf("preflight of a meta run: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // nothing listens here now
	if err := preflight(ctx, Config{Master: ln.Addr().String()}); err == nil {
		t.Fatal("preflight with no master passed")
	}
}

// TestRunSmall runs every mode of the benchmark driver on small sizes, so
// `godfs bench` keeps working (it checks results exist, not speeds).
func TestRunSmall(t *testing.T) {
	c := startDev(t)
	r, err := Run(context.Background(), Config{Master: c.Addr(), Size: 3 << 20, Replications: []int{1, 3},
		Clients: 4, SmallFiles: 40, MetaOps: 100, ListEntries: 150, TempDir: t.TempDir(), Runs: 2})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Runs != 2 || len(r.Baselines) != 6 || len(r.Results) != 6+3+7 { // stream: a put and two gets per replication; meta: the fsync probe too
		t.Fatalf("%d baselines and %d results: %+v", len(r.Baselines), len(r.Results), r)
	}
	if v := resultValue(r, "list a 150-entry directory"); v <= 0 {
		t.Fatalf("no listing of the 100 files created and 50 more: %+v", r.Results)
	}
	for _, x := range r.Results {
		// Every figure is next to its baseline but the paced creates'
		// (beside the fsync probe) and the listing's (no operation of
		// the machine's lists).
		unpaired := x.Name == "create+complete at half that rate" || x.Name == probeName || strings.HasPrefix(x.Name, "list a ")
		if !unpaired && (x.Baseline == "" || x.Ratio <= 0) {
			t.Fatalf("%q has no baseline: %+v", x.Name, x)
		}
		if x.Name == "getFileInfo" && (x.Baseline != roundTripBaseline || x.Ratio <= 0) {
			t.Fatalf("getFileInfo is not compared with the round trips: %+v", x)
		}
		if x.Name == "create+complete at half that rate" && (x.Value >= resultValue(r, "create+complete (empty files)") || x.P99ms <= 0) {
			t.Fatalf("the paced creates ran at %.0f/s, not below the full rate, or have no latency: %+v", x.Value, x)
		}
		if x.Name == probeName && (x.Unit != "ms" || x.P50ms <= 0 || x.P99ms < x.P50ms || x.Value < x.P99ms) {
			t.Fatalf("the fsync probe alongside the paced creates: %+v", x)
		}
		if x.Unit == "ops/s" && x.CPUus <= 0 {
			t.Fatalf("no CPU time per operation: %+v", x)
		}
	}
	for _, x := range append(r.Baselines, r.Results...) {
		if x.StolenPct < 0 || x.StolenPct > 100 || x.IdlePct < 0 || x.IdlePct > 100 {
			t.Fatalf("%.1f%% of the CPU time stolen, %.1f%% idle: %+v", x.StolenPct, x.IdlePct, x)
		}
		if x.Value <= 0 {
			t.Fatalf("result %+v", x)
		}
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil || !json.Valid(buf.Bytes()) {
		t.Fatalf("JSON output: %v", err)
	}
	var got struct {
		Machine Machine `json:"machine"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || got.Machine != ThisMachine() {
		t.Fatalf("JSON output's machine %+v (%v), want %+v", got.Machine, err, ThisMachine())
	}
}

// TestRunStreamClients runs the stream mode with three clients: each
// puts a file of its own, then gets its own (a get of a file its put did
// not write fails the run), and the figures say how many there were.
func TestRunStreamClients(t *testing.T) {
	c := startDev(t)
	r, err := Run(context.Background(), Config{Master: c.Addr(), Modes: []string{"stream"}, Size: 2 << 20,
		Replications: []int{2}, StreamClients: 3, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"put 2MiB x 3 clients, replication 2", "get 2MiB x 3 clients, replication 2, first read",
		"get 2MiB x 3 clients, replication 2, warm"}
	if len(r.Results) != len(want) {
		t.Fatalf("results %+v, want %q", r.Results, want)
	}
	for i, x := range r.Results {
		if x.Name != want[i] || x.Unit != "MB/s" || x.Value <= 0 || x.Ratio <= 0 {
			t.Fatalf("result %d: %+v, want %q in MB/s against its baseline", i, x, want[i])
		}
	}
}

func TestParseCPUTimes(t *testing.T) {
	const stat = "cpu  25215 0 33111 264228 6183 0 5017 7748 0 0\n" +
		"cpu0 12000 0 16000 132000 3000 0 2500 3874 0 0\ncpu1 13215 0 17111 132228 3183 0 2517 3874 0 0\nintr 12345 0\n"
	want := cpuTimes{stolen: 77480 * time.Millisecond, idle: 2704110 * time.Millisecond, cpus: 2}
	if got, ok := parseCPUTimes(stat); !ok || got != want {
		t.Fatalf("times of %q: %+v (%v), want %+v", stat, got, ok, want)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 3\n", "cpu 1 2 3 4 5 6 7 x 9\n", "cpu 1 2 3 x 5 6 7 8 9\ncpu0 1\n", "cpu 1 2 3 4 5 6 7 8 9\nintr 1\n"} {
		if got, ok := parseCPUTimes(bad); ok {
			t.Fatalf("times of %q: %+v, want none", bad, got)
		}
	}
}

func TestCPUShares(t *testing.T) {
	start := cpuTimes{stolen: time.Second, idle: 10 * time.Second, cpus: 2}
	end := cpuTimes{stolen: 1500 * time.Millisecond, idle: 10600 * time.Millisecond, cpus: 2}
	if stolen, idle := end.sharesSince(start, 2*time.Second); stolen != 12.5 || idle != 15 {
		t.Fatalf("0.5 s stolen and 0.6 s idle of 2 CPUs over 2 s: %.1f%% and %.1f%%, want 12.5%% and 15%%", stolen, idle)
	}
	// A span shorter than a tick gets no shares, where one tick in it
	// would read as hundreds of percent (as steal did in CI).
	if stolen, idle := end.sharesSince(start, time.Millisecond); stolen != 0 || idle != 0 {
		t.Fatalf("a span of 1 ms had %.1f%% stolen and %.1f%% idle, want none given", stolen, idle)
	}
	// A tick's rounding over a short span carries no share past 100%.
	if _, idle := end.sharesSince(start, cpuMinSpan); idle != 100 {
		t.Fatalf("0.6 s idle of 2 CPUs over %v: %.1f%%, want 100%%", cpuMinSpan, idle)
	}
	if _, ok := readCPUTimes(); !ok {
		return // no /proc/stat here
	}
	if stolen, idle := (cpuWatch{at: time.Now(), ok: true}).shares(); stolen != 0 || idle != 0 {
		t.Fatalf("a watch of microseconds had %.1f%% stolen and %.1f%% idle, want none given", stolen, idle)
	}
}

func TestThisMachine(t *testing.T) {
	m := ThisMachine()
	if m.CPUs != runtime.NumCPU() || m.Go != runtime.Version() || m.OS != runtime.GOOS+"/"+runtime.GOARCH || m.Procs != runtime.GOMAXPROCS(0) {
		t.Fatalf("machine %+v", m)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil && m.Kernel != strings.TrimSpace(string(b)) {
		t.Fatalf("kernel %q, /proc says %q", m.Kernel, b)
	}
	if runtime.GOOS == "linux" && m.CPU == "" && runtime.GOARCH == "amd64" {
		t.Fatalf("no CPU model from /proc/cpuinfo: %+v", m)
	}
	if s := m.String(); !strings.Contains(s, fmt.Sprintf("%d CPUs", m.CPUs)) || !strings.Contains(s, m.Go) || !strings.Contains(s, fmt.Sprintf("GOMAXPROCS %d", m.Procs)) {
		t.Fatalf("machine as text: %q", s)
	}
}

func TestMedian(t *testing.T) {
	run := func(v, base float64) *Report {
		return &Report{Baselines: []Result{{Name: "disk", Value: base}},
			Results: []Result{{Name: "put", Value: v, P99ms: v / 10, Baseline: "disk", Ratio: v / base, CPUus: v * 2, StolenPct: v / 100, IdlePct: 100 - v}}}
	}
	m := median([]*Report{run(30, 100), run(10, 100), run(50, 50), run(20, 100), run(40, 100)})
	got := m.Results[0]
	if m.Runs != 5 || got.Value != 30 || got.P99ms != 3 || got.Ratio != 0.3 || got.CPUus != 60 || got.StolenPct != 0.3 || got.IdlePct != 70 || m.Baselines[0].Value != 100 ||
		!slices.Equal(got.RunsP99ms, []float64{3, 1, 5, 2, 4}) || !slices.Equal(got.RunsStolenPct, []float64{0.3, 0.1, 0.5, 0.2, 0.4}) ||
		!slices.Equal(got.RunsIdlePct, []float64{70, 90, 50, 80, 60}) {
		t.Fatalf("median of five runs: %+v, baseline %+v", got, m.Baselines[0])
	}
}

// benchParallel runs op b.N times over 16 clients, each with its own
// connection to an in-process cluster, and reports operations per second.
func benchParallel(b *testing.B, master string, op func(c *client.Client, i int) error) {
	b.ResetTimer()
	res, err := parallel(16, b.N, 0, master, op)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.Value, "ops/s")
	b.ReportMetric(res.P99ms, "p99-ms")
	b.ReportMetric(res.CPUus, "cpu-us/op")
}

// BenchmarkCreateComplete: durable creates of empty files (create and
// complete, two RPCs each), 16 clients.
func BenchmarkCreateComplete(b *testing.B) {
	_, master := startCluster(b)
	ctx := context.Background()
	benchParallel(b, master, func(c *client.Client, i int) error {
		w, err := c.Create(ctx, fmt.Sprintf("/f%d", i))
		if err != nil {
			return err
		}
		return w.Close()
	})
}

// BenchmarkGetFileInfo: stats of existing files, 16 clients.
func BenchmarkGetFileInfo(b *testing.B) {
	master := clusterWithFiles(b, 100, 0)
	ctx := context.Background()
	benchParallel(b, master, func(c *client.Client, i int) error {
		_, err := c.Stat(ctx, fmt.Sprintf("/f%d", i%100))
		return err
	})
}

// BenchmarkSmallWrite: 4 KiB files written at replication 3 (create,
// addBlock, a three-datanode pipeline, complete), 16 clients.
func BenchmarkSmallWrite(b *testing.B) {
	_, master := startCluster(b)
	ctx := context.Background()
	data := make([]byte, 4096)
	benchParallel(b, master, func(c *client.Client, i int) error {
		w, err := c.Create(ctx, fmt.Sprintf("/f%d", i), client.Replication(3))
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			w.Close()
			return err
		}
		return w.Close()
	})
}

// BenchmarkSmallRead: whole reads of 4 KiB files (open, one block from
// one datanode), 16 clients.
func BenchmarkSmallRead(b *testing.B) {
	master := clusterWithFiles(b, 100, 4096)
	ctx := context.Background()
	benchParallel(b, master, func(c *client.Client, i int) error {
		r, err := c.Open(ctx, fmt.Sprintf("/f%d", i%100))
		if err != nil {
			return err
		}
		defer r.Close()
		if n, err := io.Copy(io.Discard, r); err != nil || n != 4096 {
			return fmt.Errorf("read %d bytes: %v", n, err)
		}
		return nil
	})
}

// clusterWithFiles starts a cluster holding files /f0 ... /f<n-1> of size
// bytes each and returns its master's address.
func clusterWithFiles(b *testing.B, n, size int) string {
	cl, master := startCluster(b)
	data := make([]byte, size)
	for i := range n {
		w, err := cl.Create(context.Background(), fmt.Sprintf("/f%d", i))
		if err != nil {
			b.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	return master
}

// resultValue is the value of the result called name.
func resultValue(r *Report, name string) float64 {
	for _, x := range r.Results {
		if x.Name == name {
			return x.Value
		}
	}
	return 0
}
