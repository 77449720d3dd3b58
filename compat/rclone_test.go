package compat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godfs/godfs/godfstest"
)

// TestRclone copies a directory tree of mixed file sizes into godfs with
// rclone's hdfs backend and back, and has rclone check it.
func TestRclone(t *testing.T) {
	rclone := needTool(t, "rclone")
	cl := godfstest.NewCluster(t, godfstest.Config{})
	env := []string{"RCLONE_CONFIG_GODFS_TYPE=hdfs", "RCLONE_CONFIG_GODFS_NAMENODE=" + cl.Master.Addr,
		"RCLONE_CONFIG_GODFS_USERNAME=alice", "RCLONE_CONFIG=" + filepath.Join(t.TempDir(), "rclone.conf")}
	src := t.TempDir()
	files := map[string]int{"empty": 0, "one": 1, "small.txt": 700, "sub/chunk": 512, "sub/block": blockSize,
		"sub/deeper/multi": 2*blockSize + 77, "sub/deeper/odd name with spaces": 12345}
	for name, size := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, randomBytes(t, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rc := func(args ...string) string {
		t.Helper()
		out, errs, code := run(t, env, nil, rclone, args...)
		if code != 0 {
			t.Fatalf("rclone %v: exit %d: %s", args, code, errs)
		}
		return out + errs
	}
	rc("copy", src, "godfs:/backup")
	if out := rc("check", src, "godfs:/backup"); !strings.Contains(out, "0 differences found") ||
		!strings.Contains(out, fmt.Sprintf("%d matching files", len(files))) {
		t.Fatalf("rclone check: %s", out)
	}
	back := t.TempDir()
	rc("copy", "godfs:/backup", back)
	for name := range files {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(back, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s after a round trip through godfs: %v", name, err)
		}
	}
	// And godfs sees what rclone wrote.
	if r := cl.Run(nil, "ls", "/backup/sub/deeper"); r.Code != 0 || !strings.Contains(r.Stdout, "odd name with spaces") {
		t.Fatalf("godfs ls: %+v", r)
	}
}
