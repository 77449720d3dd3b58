// Package godfstest starts real godfs clusters for tests: the godfs binary
// built from this module, run as separate processes (a master and N
// datanodes) on 127.0.0.1 with free ports and temporary directories, so
// tests can kill -9 and restart them like an operator would.
package godfstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/datanode"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the godfs binary once per test process and returns its
// path. With GODFS_RACE=1 in the environment it is built with -race, and
// a server that hits a data race exits non-zero with the report in its log.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "godfs-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "godfs")
		args := []string{"build", "-o", binPath}
		if os.Getenv("GODFS_RACE") != "" { // servers built with the race detector
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/godfs")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build godfs: %v", buildErr)
	}
	return binPath
}

// Config shapes a test cluster.
type Config struct {
	DataNodes   int    // default 3
	BlockSize   string // default "1MiB"
	Replication int    // default 3
	// DeadAfter is how long the master waits for a silent datanode.
	// Default 4s (datanodes heartbeat every second).
	DeadAfter time.Duration
	// LeaseLimit is how long a vanished writer's files stay open. Default 1m.
	LeaseLimit time.Duration
	// ScanPeriod is how often datanodes re-verify every replica. Default:
	// the datanode's own (a day).
	ScanPeriod time.Duration
	// BlockReportPart bounds the replicas per block-report call, full or
	// incremental. Default: the datanode's own.
	BlockReportPart int
	// CheckpointEvery is the master's --checkpoint-every. Default: its own.
	CheckpointEvery uint64
	// MaxReportLeases is the master's --max-report-leases. Default: its own.
	MaxReportLeases int
	// Dir holds the servers' directories. Default: a temporary one.
	Dir string
	// Volumes is how many data directories each datanode has, v1, v2, ...
	// in its directory. Default 1: the directory itself.
	Volumes int
}

// Proc is one running godfs server process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	Addr string // the address it reported ready on
	Dir  string // its data directory
	log  *bytes.Buffer
}

// Cluster is a master and datanodes running as processes.
type Cluster struct {
	t         testing.TB
	cfg       Config
	bin       string
	dir       string
	Master    *Proc
	DataNodes []*Proc
}

// NewCluster starts a cluster and waits until every datanode is live. It
// is stopped when the test ends.
func NewCluster(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.DataNodes == 0 {
		cfg.DataNodes = 3
	}
	if cfg.DataNodes < 0 {
		cfg.DataNodes = 0
	}
	if cfg.BlockSize == "" {
		cfg.BlockSize = "1MiB"
	}
	if cfg.Replication == 0 {
		cfg.Replication = 3
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 4 * time.Second
	}
	if cfg.LeaseLimit == 0 {
		cfg.LeaseLimit = time.Minute
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	c := &Cluster{t: t, cfg: cfg, bin: Binary(t), dir: cfg.Dir}
	t.Cleanup(c.stopAll)
	c.StartMaster("127.0.0.1:0")
	for i := 0; i < cfg.DataNodes; i++ {
		c.DataNodes = append(c.DataNodes, c.startDataNode(filepath.Join(c.dir, fmt.Sprintf("dn%d", i+1))))
	}
	c.WaitLive(cfg.DataNodes)
	return c
}

var readyAddr = regexp.MustCompile(`ready (?:rpc|data)=(\S+)`)

// start runs the binary with args and waits for its "ready" line.
func (c *Cluster) start(dir string, args ...string) *Proc {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p := &Proc{cmd: cmd, done: make(chan struct{}), Dir: dir, log: &bytes.Buffer{}}
	cmd.Stderr = &lockedWriter{w: p.log}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start godfs %v: %v", args, err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := readyAddr.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(p.done) }()
	select {
	case p.Addr = <-ready:
	case <-p.done:
		c.t.Fatalf("godfs %v exited before it was ready:\n%s", args, p.log.String())
	case <-time.After(30 * time.Second):
		c.t.Fatalf("godfs %v not ready after 30s:\n%s", args, p.log.String())
	}
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// StartMaster starts the master listening on addr.
func (c *Cluster) StartMaster(addr string) {
	c.t.Helper()
	dir := filepath.Join(c.dir, "master")
	args := []string{"master", "--dir", dir, "--listen", addr, "--block-size", c.cfg.BlockSize,
		"--replication", fmt.Sprint(c.cfg.Replication), "--dead-after", c.cfg.DeadAfter.String(),
		"--lease-limit", c.cfg.LeaseLimit.String()}
	if c.cfg.CheckpointEvery > 0 {
		args = append(args, "--checkpoint-every", fmt.Sprint(c.cfg.CheckpointEvery))
	}
	if c.cfg.MaxReportLeases > 0 {
		args = append(args, "--max-report-leases", fmt.Sprint(c.cfg.MaxReportLeases))
	}
	c.Master = c.start(dir, args...)
}

func (c *Cluster) startDataNode(dir string) *Proc {
	data := dir
	if c.cfg.Volumes > 1 {
		var vols []string
		for i := 1; i <= c.cfg.Volumes; i++ {
			vols = append(vols, filepath.Join(dir, fmt.Sprintf("v%d", i)))
		}
		data = strings.Join(vols, ",")
	}
	args := []string{"datanode", "--master", c.Master.Addr, "--data", data, "--listen", "127.0.0.1:0", "--heartbeat", "1s"}
	if c.cfg.ScanPeriod > 0 {
		args = append(args, "--scan-period", c.cfg.ScanPeriod.String(), "--scan-rate", "1GiB")
	}
	if c.cfg.BlockReportPart > 0 {
		args = append(args, "--block-report-part", fmt.Sprint(c.cfg.BlockReportPart))
	}
	return c.start(dir, args...)
}

// AddDataNode starts one more datanode.
func (c *Cluster) AddDataNode() {
	c.t.Helper()
	c.DataNodes = append(c.DataNodes, c.startDataNode(filepath.Join(c.dir, fmt.Sprintf("dn%d", len(c.DataNodes)+1))))
}

// KillMaster kills the master with SIGKILL.
func (c *Cluster) KillMaster() { c.kill(c.Master) }

// RestartMaster starts the master again on its old address.
func (c *Cluster) RestartMaster() {
	c.t.Helper()
	c.StartMaster(c.Master.Addr)
}

// KillDataNode kills datanode i with SIGKILL.
func (c *Cluster) KillDataNode(i int) { c.kill(c.DataNodes[i]) }

// RestartDataNode starts datanode i again on its old directory and waits
// until the master lists it live at its new address (not its old entry).
func (c *Cluster) RestartDataNode(i int) {
	c.t.Helper()
	c.DataNodes[i] = c.startDataNode(c.DataNodes[i].Dir)
	addr := c.DataNodes[i].Addr
	c.waitDatanodes(fmt.Sprintf("restarted datanode %d (%s) registered", i, addr), func(nodes []client.DatanodeInfo) bool {
		for _, d := range nodes {
			if d.Live && d.Addr == addr {
				return true
			}
		}
		return false
	})
}

func (c *Cluster) kill(p *Proc) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

// Stop stops a server with SIGTERM (a clean shutdown) and waits for it.
func (c *Cluster) Stop(p *Proc) error {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not stop within 20s of SIGINT")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("exited with code %d:\n%s", code, p.Log())
	}
	return nil
}

// Log returns what the process wrote to stderr.
func (p *Proc) Log() string { return p.log.String() }

// Wait waits up to timeout for the process to exit on its own and returns
// its exit code; ok is false if it is still running.
func (p *Proc) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

func (c *Cluster) stopAll() {
	for _, d := range c.DataNodes {
		c.kill(d)
	}
	c.kill(c.Master)
	if c.t.Failed() {
		c.t.Logf("master log:\n%s", tail(c.Master.Log(), 4000))
		for i, d := range c.DataNodes {
			c.t.Logf("datanode %d log:\n%s", i, tail(d.Log(), 2000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Client returns a client of the cluster, closed when the test ends.
func (c *Cluster) Client(opts ...client.Option) *client.Client {
	cl := client.New(c.Master.Addr, opts...)
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitLive waits until the master reports n live datanodes.
func (c *Cluster) WaitLive(n int) {
	c.t.Helper()
	c.waitDatanodes(fmt.Sprintf("%d live datanodes", n), func(nodes []client.DatanodeInfo) bool {
		live := 0
		for _, d := range nodes {
			if d.Live {
				live++
			}
		}
		return live == n
	})
}

// waitDatanodes polls the master's datanode report until ok holds, for
// at most 30s.
func (c *Cluster) waitDatanodes(what string, ok func([]client.DatanodeInfo) bool) {
	c.t.Helper()
	cl := client.New(c.Master.Addr)
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		nodes, err := cl.Datanodes(ctx)
		cancel()
		if err == nil && ok(nodes) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: not after 30s (last error %v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Result is the outcome of a CLI command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Command returns an unstarted `godfs ARGS...` against the cluster, for
// tests that need to kill a client mid-operation.
func (c *Cluster) Command(args ...string) *exec.Cmd {
	return exec.Command(c.bin, append([]string{"--master", c.Master.Addr}, args...)...)
}

// Run runs `godfs ARGS...` against the cluster with stdin.
func (c *Cluster) Run(stdin io.Reader, args ...string) Result {
	c.t.Helper()
	return RunBinary(c.t, c.bin, stdin, append([]string{"--master", c.Master.Addr}, args...)...)
}

// RunBinary runs the godfs binary with args.
func RunBinary(t testing.TB, bin string, stdin io.Reader, args ...string) Result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run godfs %v: %v", args, err)
	}
	return res
}

// BlockFiles lists the finalized files under a datanode directory that
// hold a block's bytes (not .meta files): one per replica.
func BlockFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "blk_") && !strings.HasSuffix(d.Name(), ".meta") &&
			strings.Contains(p, string(filepath.Separator)+"finalized"+string(filepath.Separator)) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// BlockData is the block's bytes in one of BlockFiles' files.
func BlockData(t testing.TB, path string) []byte {
	t.Helper()
	b, ok, err := blockFileData(path)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s holds no block of its %d bytes", path, len(b))
	}
	return b
}

// blockFileData is the block's bytes in a finalized replica's file; ok is
// false for a file of a size no replica has (then b is all of it).
func blockFileData(path string) (b []byte, ok bool, err error) {
	if b, err = os.ReadFile(path); err != nil {
		return nil, false, err
	}
	n, ok := datanode.BlockBytes(filepath.Base(path), int64(len(b)))
	if !ok {
		return b, false, nil
	}
	return b[:n], true, nil
}

// Replicas returns the data of every finalized replica a datanode
// directory holds: in files (see BlockFiles) and in packs.
func Replicas(t testing.TB, dir string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range BlockFiles(t, dir) {
		b, ok, err := blockFileData(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since it was listed
		} else if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, b)
		}
	}
	packed, err := datanode.ReadPacks(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range packed {
		out = append(out, r.Data)
	}
	return out
}

// ReplicaBytes is the size of the files under a datanode directory,
// packs excepted, plus the data of the replicas in its packs: what it
// holds, not counting the space a pack keeps zeroed for records to come.
func ReplicaBytes(t testing.TB, dir string) int64 {
	t.Helper()
	n := int64(0)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "packs" {
			return filepath.SkipDir
		}
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	packed, err := datanode.ReadPacks(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range packed {
		n += int64(len(r.Data))
	}
	return n
}
