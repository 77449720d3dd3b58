package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godfs/godfs/godfstest"
)

// started is a godfs process started by a test, with its stderr kept.
type started struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// startUntil starts godfs with args and waits for a stdout line matching
// re; it returns the first submatch.
func startUntil(t *testing.T, re *regexp.Regexp, args ...string) (*started, string) {
	t.Helper()
	cmd := exec.Command(godfstest.Binary(t), args...)
	out, _ := cmd.StdoutPipe()
	p := &started{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case s := <-found:
		return p, s
	case err := <-p.done:
		t.Fatalf("godfs %v exited (%v) before it was ready: %s", args, err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("godfs %v not ready in 30s: %s", args, p.stderr)
	}
	return nil, ""
}

// stop sends sig and expects a clean exit.
func (p *started) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after %v: %v\n%s", sig, err, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after %v", sig)
	}
}

func cli(t *testing.T, master string, stdin []byte, args ...string) godfstest.Result {
	t.Helper()
	var in io.Reader // a nil []byte must stay a nil io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	return godfstest.RunBinary(t, godfstest.Binary(t), in, append([]string{"--master", master}, args...)...)
}

var (
	masterReady   = regexp.MustCompile(`ready rpc=(\S+)`)
	datanodeReady = regexp.MustCompile(`ready data=(\S+)`)
	devReady      = regexp.MustCompile(`^\s*master:\s+(\S+)`)
)

// TestServersFromYAMLConfigAndSignals starts master and datanode from
// YAML config files, stops them with SIGTERM and SIGINT, and restarts them
// from their directories.
func TestServersFromYAMLConfigAndSignals(t *testing.T) {
	dir := t.TempDir()
	mcfg := filepath.Join(dir, "master.yaml")
	os.WriteFile(mcfg, []byte("dir: "+filepath.Join(dir, "m")+"\nlisten: 127.0.0.1:0\nblock-size: 1MiB\nreplication: 1\n"), 0o644)
	m, addr := startUntil(t, masterReady, "master", "--config", mcfg)
	dcfg := filepath.Join(dir, "dn.yaml")
	os.WriteFile(dcfg, []byte("data: ["+filepath.Join(dir, "d1")+", "+filepath.Join(dir, "d2")+"]\nlisten: 127.0.0.1:0\nrack: /r1\nheartbeat: 1s\n"), 0o644)
	d, _ := startUntil(t, datanodeReady, "--master", addr, "datanode", "--config", dcfg)
	waitLive(t, addr, 1)
	data := randomBytes(t, 3*blockSize+1)
	if r := cli(t, addr, data, "put", "-", "/f"); r.Code != 0 {
		t.Fatalf("put: %+v", r)
	}
	if r := cli(t, addr, nil, "stat", "/f"); !strings.Contains(r.Stdout, "Block: 1048576") || !strings.Contains(r.Stdout, "Repl: 1") {
		t.Fatalf("the config's block size and replication are not in effect: %+v", r)
	}
	if r := cli(t, addr, nil, "report"); !strings.Contains(r.Stdout, "/r1") {
		t.Fatalf("report does not show the configured rack: %+v", r)
	}
	d.stop(t, syscall.SIGTERM)
	m.stop(t, syscall.SIGINT)
	if _, err := os.Stat(filepath.Join(dir, "m", "checkpoint")); err != nil {
		t.Fatalf("clean master shutdown wrote no checkpoint: %v", err)
	}
	// Restart both; the file is there and readable.
	startUntil(t, masterReady, "master", "--config", mcfg, "--listen", addr)
	startUntil(t, datanodeReady, "--master", addr, "datanode", "--config", dcfg)
	waitLive(t, addr, 1)
	if r := cli(t, addr, nil, "cat", "/f"); r.Code != 0 || r.Stdout != string(data) {
		t.Fatalf("after restart: code %d, %d bytes, stderr %s", r.Code, len(r.Stdout), r.Stderr)
	}
	// A bad config is a clear error.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("dir: x\nfrobnicate: 1\n"), 0o644)
	r := godfstest.RunBinary(t, godfstest.Binary(t), nil, "master", "--config", bad)
	if r.Code != 2 || !strings.Contains(r.Stderr, `unknown setting "frobnicate"`) {
		t.Fatalf("bad config: %+v", r)
	}
}

func waitLive(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := cli(t, addr, nil, "report")
		if strings.Contains(r.Stdout, fmt.Sprintf("%d live,", n)) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d datanodes not live in 20s", n)
}

// TestDevCluster runs `godfs dev` the way the README says, uses it, stops
// it with Ctrl-C and starts it again on the same directory.
func TestDevCluster(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "godfs-data")
	p, addr := startUntil(t, devReady, "dev", "--dir", dir, "--listen", "127.0.0.1:0")
	if !strings.Contains(addr, "127.0.0.1:") {
		t.Fatalf("dev printed master %q", addr)
	}
	if r := cli(t, addr, []byte("hello"), "put", "-", "/hello"); r.Code != 0 {
		t.Fatalf("put: %+v", r)
	}
	if r := cli(t, addr, nil, "report"); !strings.Contains(r.Stdout, "3 live, 0 stale, 0 dead") {
		t.Fatalf("report: %+v", r)
	}
	p.stop(t, os.Interrupt)
	_, addr = startUntil(t, devReady, "dev", "--dir", dir, "--listen", "127.0.0.1:0")
	if r := cli(t, addr, nil, "cat", "/hello"); r.Code != 0 || r.Stdout != "hello" {
		t.Fatalf("after restart: %+v", r)
	}
}
