package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/godfstest"
	"github.com/godfs/godfs/internal/smalldisk"
)

// A master whose disk fills refuses changes with a one-line error before
// its op log runs out of room, goes on serving reads, takes changes again
// as soon as space is freed (no restart), and loses none it acknowledged.
func TestMasterDiskFull(t *testing.T) {
	disk := smalldisk.New(t, 24<<20)
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: -1, Dir: disk})
	c := cl.Client()
	ctx := ctxT(t)
	// Paths of ~1 KiB, so that the log's few MiB of room go in seconds.
	parent := "/" + strings.Repeat("p", 250) + "/" + strings.Repeat("q", 250) + "/" + strings.Repeat("r", 250)
	if err := c.Mkdir(ctx, parent, 0o755, true); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("%s/%s-%d", parent, strings.Repeat("d", 240), i) }
	filler := smalldisk.Fill(t, disk)

	acked := 0
	var refused error
	for ; refused == nil; acked++ {
		if acked > 40000 { // 40 MiB of entries: more than the disk holds
			t.Fatalf("the master took %d mkdirs on a full disk", acked)
		}
		refused = c.Mkdir(ctx, name(acked), 0o755, false)
	}
	acked--
	t.Logf("%d mkdirs taken after the disk filled; then: %v", acked, refused)
	if !strings.Contains(refused.Error(), "out of disk space") {
		t.Fatalf("refusal %q does not say the master is out of disk space", refused)
	}
	r := cl.Run(nil, "mkdir", "/another")
	if r.Code != 1 || !strings.Contains(r.Stderr, "out of disk space") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("godfs mkdir on a full master: code %d, stderr %q; want 1 and one line saying so", r.Code, r.Stderr)
	}
	// Reads go on, after a restart on the full disk too.
	if _, err := c.Stat(ctx, name(acked-1)); err != nil {
		t.Fatalf("stat on a full master: %v", err)
	}
	cl.KillMaster()
	cl.RestartMaster()
	c = cl.Client()
	if _, err := c.Stat(ctx, name(acked-1)); err != nil {
		t.Fatalf("stat on a master restarted on a full disk: %v", err)
	}
	if err := c.Mkdir(ctx, "/another", 0o755, false); err == nil || !strings.Contains(err.Error(), "out of disk space") {
		t.Fatalf("mkdir on a master restarted on a full disk: %v, want a refusal", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir(ctx, name(acked), 0o755, false); err != nil {
		t.Fatalf("mkdir once space is freed: %v", err)
	}
	acked++

	cl.KillMaster()
	cl.RestartMaster()
	c = cl.Client()
	entries, err := c.ReadDir(ctx, parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != acked {
		t.Fatalf("after kill -9 and restart: %d directories, want the %d acknowledged", len(entries), acked)
	}
	if left, _ := filepath.Glob(filepath.Join(disk, "master", "*.tmp")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Datanodes whose disks fill: writes fail with a clear error once no
// datanode has room, every file written before reads back, and writes
// succeed again once files are deleted.
func TestDatanodeDisksFull(t *testing.T) {
	dir := t.TempDir()
	for i := 1; i <= 3; i++ {
		smalldisk.Mount(t, filepath.Join(dir, fmt.Sprintf("dn%d", i)), 40<<20)
	}
	cl := godfstest.NewCluster(t, godfstest.Config{Dir: dir})
	c := cl.Client()
	ctx := ctxT(t)
	data := randomBytes(t, 4<<20)
	var written []string
	var failed error
	for i := 0; failed == nil; i++ {
		if i > 30 { // 120 MiB a datanode: three times what one holds
			t.Fatalf("%d files of 4 MiB written to datanodes of 40 MiB", i)
		}
		name := fmt.Sprintf("/f%d", i)
		w, err := c.Create(ctx, name)
		if err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			} else {
				w.Close()
			}
		}
		if err != nil {
			failed = err
			break
		}
		written = append(written, name)
	}
	t.Logf("%d files written; then: %v", len(written), failed)
	if len(written) < 5 {
		t.Fatalf("only %d files of 4 MiB went to datanodes of 40 MiB", len(written))
	}
	// Refused as it started, by a datanode or the master, saying why.
	if msg := failed.Error(); !strings.Contains(msg, "no space left on device") && !strings.Contains(msg, "free a block needs") {
		t.Fatalf("the write that found the datanodes full failed with %q, which does not say so", msg)
	}
	for _, name := range written {
		if got := get(t, c, name); string(got) != string(data) {
			t.Fatalf("%s reads back wrong", name)
		}
	}
	// Once the datanodes' heartbeats say how full they are, the master
	// says it at once.
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, data, 0o644)
	var r godfstest.Result
	waitFor(t, 10*time.Second, "the master to refuse blocks on full datanodes", func() bool {
		r = cl.Run(nil, "put", local, "/late")
		return strings.Contains(r.Stderr, "free a block needs")
	})
	if r.Code != 1 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("put to full datanodes: code %d, stderr %q; want 1 and one line", r.Code, r.Stderr)
	}
	// Deleting files makes room again.
	for _, name := range written[:len(written)/2] {
		if err := c.Remove(ctx, name, false); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "a put to succeed after deletes", func() bool {
		r = cl.Run(nil, "put", local, "/late")
		return r.Code == 0
	})
	if got := get(t, c, "/late"); string(got) != string(data) {
		t.Fatal("/late reads back wrong")
	}
	for _, name := range written[len(written)/2:] {
		if got := get(t, c, name); string(got) != string(data) {
			t.Fatalf("%s reads back wrong after the deletes", name)
		}
	}
}
