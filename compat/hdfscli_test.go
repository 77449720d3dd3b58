package compat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/godfstest"
)

// TestHDFSCLI drives Debian's hdfs command (colinmarc/hdfs's CLI) against
// godfs, pointed at it with HADOOP_NAMENODE as users would.
func TestHDFSCLI(t *testing.T) {
	hdfs := needTool(t, "hdfs")
	cl := godfstest.NewCluster(t, godfstest.Config{})
	env := []string{"HADOOP_NAMENODE=" + cl.Master.Addr, "HADOOP_USER_NAME=alice", "HADOOP_CONF_DIR=/nonexistent"}
	ok := func(args ...string) string {
		t.Helper()
		out, errs, code := run(t, env, nil, hdfs, args...)
		if code != 0 {
			t.Fatalf("hdfs %v: exit %d: %s", args, code, errs)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		_, errs, code := run(t, env, nil, hdfs, args...)
		if code == 0 || !strings.Contains(strings.ToLower(errs), want) {
			t.Fatalf("hdfs %v: exit %d, stderr %q; want failure mentioning %q", args, code, errs, want)
		}
	}
	dir := t.TempDir()
	data := randomBytes(t, 3*blockSize+4321)
	local := filepath.Join(dir, "local")
	os.WriteFile(local, data, 0o644)

	ok("mkdir", "-p", "/a/b/c")
	ok("put", local, "/a/b/big")
	ok("get", "/a/b/big", filepath.Join(dir, "back"))
	if got, _ := os.ReadFile(filepath.Join(dir, "back")); !bytes.Equal(got, data) {
		t.Fatal("hdfs put + get: bytes differ")
	}
	// Written by hdfs, read by godfs; written by godfs, read by hdfs.
	if r := cl.Run(nil, "cat", "/a/b/big"); r.Code != 0 || r.Stdout != string(data) {
		t.Fatalf("godfs cat of an hdfs-written file: code %d, %d bytes", r.Code, len(r.Stdout))
	}
	if r := cl.Run(nil, "put", local, "/a/godfs-written"); r.Code != 0 {
		t.Fatalf("godfs put: %+v", r)
	}
	if out := ok("cat", "/a/godfs-written"); out != string(data) {
		t.Fatal("hdfs cat of a godfs-written file: bytes differ")
	}
	// The file checksum is the one HDFS gives for the same bytes and
	// block size (godfs writes CRC32C, HDFS's default).
	if out := ok("checksum", "/a/godfs-written"); !strings.Contains(out, hdfsFileChecksum(data, blockSize)) {
		t.Fatalf("hdfs checksum: %q, want %s", out, hdfsFileChecksum(data, blockSize))
	}
	out := ok("ls", "-l", "/a/b")
	if !strings.Contains(out, "alice") || !strings.Contains(out, "big") || !strings.Contains(out, "-rw-r--r--") {
		t.Fatalf("hdfs ls -l: %q", out)
	}
	if out := ok("head", "-c", "100", "/a/b/big"); out != string(data[:100]) {
		t.Fatal("hdfs head -c: bytes differ")
	}
	if out := ok("tail", "-c", "100", "/a/b/big"); out != string(data[len(data)-100:]) {
		t.Fatal("hdfs tail -c: bytes differ")
	}
	ok("mv", "/a/b/big", "/a/b/c/moved")
	ok("chmod", "600", "/a/b/c/moved")
	ok("chown", "bob:staff", "/a/b/c/moved")
	out = ok("ls", "-l", "/a/b/c")
	if !strings.Contains(out, "-rw-------") || !strings.Contains(out, "bob") || !strings.Contains(out, "staff") {
		t.Fatalf("after chmod/chown: %q", out)
	}
	// /a holds the moved file and /a/godfs-written.
	out = ok("du", "-s", "/a")
	if f := strings.Fields(out); len(f) != 2 || f[0] != fmt.Sprint(2*len(data)) || f[1] != "/a" {
		t.Fatalf("du -s: %q, want %d /a", out, 2*len(data))
	}
	if out := ok("df"); !strings.Contains(out, cl.Master.Addr) {
		t.Fatalf("df: %q", out)
	}
	ok("touch", "/a/empty")
	if fi, err := cl.Client().Stat(t.Context(), "/a/empty"); err != nil || fi.Size() != 0 {
		t.Fatalf("touch: %v %v", fi, err)
	}
	ok("truncate", "1048576", "/a/b/c/moved")
	if out := ok("cat", "/a/b/c/moved"); out != string(data[:blockSize]) {
		t.Fatal("after truncate to a block boundary: bytes differ")
	}
	// Inside a block: the datanodes cut their replicas within a heartbeat.
	ok("truncate", "777777", "/a/b/c/moved")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, code := run(t, env, nil, hdfs, "cat", "/a/b/c/moved")
		if code == 0 && out == string(data[:777777]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after truncate inside a block: exit %d, %d bytes, want %d", code, len(out), 777777)
		}
		time.Sleep(200 * time.Millisecond)
	}

	fails("not exist", "cat", "/missing")
	fails("exists", "mkdir", "/a/b")
	fails("is a directory", "rm", "/a/b") // the CLI refuses a directory without -r
	ok("rm", "-r", "/a/b")
	fails("not exist", "ls", "/a/b")
}
