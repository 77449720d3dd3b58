package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/godfstest"
)

// writingOn returns the index of a datanode that is receiving a block now
// (it has a replica in rbw/), or -1.
func writingOn(cl *godfstest.Cluster) int {
	for i, d := range cl.DataNodes {
		if ents, _ := os.ReadDir(filepath.Join(d.Dir, "current", "rbw")); len(ents) > 0 {
			return i
		}
	}
	return -1
}

// TestPutSurvivesDatanodeKill kills -9 a datanode of the pipeline in the
// middle of a 200 MiB put at replication 3: the put succeeds, the file
// ends fully replicated and reads back byte-exact.
func TestPutSurvivesDatanodeKill(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 4, BlockSize: "8MiB"})
	c := cl.Client()
	const size = 200 << 20
	src := make([]byte, size)
	rand.Read(src)
	w, err := c.Create(context.Background(), "/big")
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	progress := make(chan int64, 1)
	go func() {
		var n int64
		for n < size {
			k, err := w.Write(src[n:min(n+1<<20, size)])
			n += int64(k)
			if err != nil {
				written <- err
				return
			}
			select {
			case progress <- n:
			default:
			}
		}
		written <- w.Close()
	}()
	killed := -1
	for killed < 0 {
		select {
		case err := <-written:
			t.Fatalf("the put ended before a datanode could be killed: %v", err)
		case n := <-progress:
			if n >= size/2 {
				if i := writingOn(cl); i >= 0 {
					cl.KillDataNode(i)
					killed = i
				}
			}
		}
	}
	if err := <-written; err != nil {
		t.Fatalf("put with datanode %d killed mid-write: %v", killed, err)
	}
	if !strings.Contains(cl.Master.Log(), "pipeline recovered") {
		t.Fatal("the put succeeded without a pipeline recovery: the kill missed the pipeline")
	}
	// The recovered pipeline got a replacement datanode (a survivor copied
	// the block so far to it), so it went on with three.
	if !regexp.MustCompile(`pipeline recovered.*datanodes=3`).MatchString(cl.Master.Log()) {
		t.Fatalf("the pipeline was not brought back to 3 datanodes:\n%s", cl.Master.Log())
	}
	waitFor(t, 90*time.Second, "full replication after the put", func() bool { return healthy(cl) })
	r, err := c.Open(context.Background(), "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read back %d bytes (%v), differ from the %d written", len(got), err, size)
	}
}

// TestKilledWriterFileClosedWithPrefix kills a writing client with
// SIGKILL mid-block: after the lease limit the master closes the file with
// a prefix of what was written, and no replica that disagrees survives.
func TestKilledWriterFileClosedWithPrefix(t *testing.T) {
	// Blocks of 4 MiB: a writer sends 1 MiB packets, so the third block
	// has some of them on the datanodes when the writer dies.
	const blockSize = 4 << 20
	cl := godfstest.NewCluster(t, godfstest.Config{LeaseLimit: 2 * time.Second, BlockSize: "4MiB"})
	put := cl.Command("put", "-", "/dying")
	stdin, _ := put.StdinPipe()
	if err := put.Start(); err != nil {
		t.Fatal(err)
	}
	// Two full blocks, then the writer dies in the middle of the third.
	data := randomBytes(t, 2*blockSize+blockSize*5/8)
	stdin.Write(data)
	waitFor(t, 20*time.Second, "the write reaching the datanodes", func() bool {
		return len(godfstest.BlockFiles(t, cl.DataNodes[0].Dir)) >= 2 && writingOn(cl) >= 0
	})
	time.Sleep(300 * time.Millisecond)
	put.Process.Kill()
	put.Wait()
	c := cl.Client()
	var size int64
	waitFor(t, 30*time.Second, "lease recovery to close the file", func() bool {
		fi, err := c.Stat(context.Background(), "/dying")
		if err == nil {
			size = fi.Size()
		}
		return err == nil
	})
	if size < 2*blockSize || size > int64(len(data)) {
		t.Fatalf("recovered file has %d bytes, want at least the 2 full blocks (%d) and at most %d", size, 2*blockSize, len(data))
	}
	if got := get(t, c, "/dying"); !bytes.Equal(got, data[:size]) {
		t.Fatal("the recovered file is not a prefix of what was written")
	}
	// Every surviving replica agrees with the file; it ends fully replicated.
	waitFor(t, 30*time.Second, "full replication of the recovered file", func() bool { return healthy(cl) })
	wantFiles := 3 * int((size+blockSize-1)/blockSize)
	waitFor(t, 30*time.Second, "no stale replica", func() bool { return replicaCount(t, cl, 0, 1, 2) == wantFiles })
	// The partial last block was kept by cutting the replicas to the
	// agreed length under a new generation stamp, not by copying.
	recovered := 0
	for _, d := range cl.DataNodes {
		if strings.Contains(d.Log(), "block recovered") {
			recovered++
		}
	}
	if size%blockSize != 0 && recovered < 2 {
		t.Fatalf("%d datanodes recovered the last block, want at least 2", recovered)
	}
}

// TestFailedWriteLeavesNothing: a write that fails while the client is
// alive (every datanode of the pipeline died) returns an error from Close
// and leaves no file; its blocks are deleted.
func TestFailedWriteLeavesNothing(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 1, Replication: 1})
	c := cl.Client()
	w, err := c.Create(context.Background(), "/doomed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(t, 2*blockSize)); err != nil {
		t.Fatal(err)
	}
	cl.KillDataNode(0)
	w.Write(randomBytes(t, blockSize))
	if err := w.Close(); err == nil {
		t.Fatal("Close succeeded with the only datanode dead")
	}
	if _, err := c.Stat(context.Background(), "/doomed"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed write left a file: %v", err)
	}
	// The path is free again at once, and the abandoned blocks go once the
	// datanode is back.
	cl.RestartDataNode(0)
	cl.WaitLive(1)
	put(t, c, "/doomed", []byte("second try"))
	waitFor(t, 30*time.Second, "abandoned blocks deleted", func() bool { return replicaCount(t, cl, 0) == 1 })
}

// TestAppendAndSync appends to a file three times, and checks that Sync
// makes written bytes visible to new readers before Close, including bytes
// that end in the middle of a chunk.
func TestAppendAndSync(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	ctx := context.Background()
	want := randomBytes(t, blockSize+100)
	put(t, c, "/log", want)
	for i := 0; i < 3; i++ {
		w, err := c.Append(ctx, "/log")
		if err != nil {
			t.Fatal(err)
		}
		more := randomBytes(t, 1000+i*blockSize/3)
		w.Write(more)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		want = append(want, more...)
	}
	if got := get(t, c, "/log"); !bytes.Equal(got, want) {
		t.Fatalf("after 3 appends: %d bytes, want %d", len(got), len(want))
	}
	// Two writers: the second is refused while the first appends.
	w, err := c.Append(ctx, "/log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Client().Append(ctx, "/log"); !errors.Is(err, client.ErrLeaseHeld) {
		t.Fatalf("second appender: %v", err)
	}
	w.Close()

	// Sync: a new file becomes readable before Close, up to what was synced.
	s, err := c.Create(ctx, "/stream")
	if err != nil {
		t.Fatal(err)
	}
	var written []byte
	for i, n := range []int{700, blockSize - 700 + 300, 5000, 1} { // crosses a block, ends mid-chunk
		chunk := randomBytes(t, n)
		s.Write(chunk)
		written = append(written, chunk...)
		if err := s.Sync(); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		if got := get(t, cl.Client(), "/stream"); !bytes.Equal(got, written) {
			t.Fatalf("after sync %d a new reader sees %d bytes, want %d", i, len(got), len(written))
		}
	}
	tail := randomBytes(t, 3*blockSize/2)
	s.Write(tail)
	written = append(written, tail...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, "/stream"); !bytes.Equal(got, written) {
		t.Fatal("after close: bytes differ")
	}
	if !healthy(cl) {
		t.Fatal("fsck not healthy")
	}
	// And through the CLI.
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("tail"), 0o644)
	if r := cl.Run(nil, "append", local, "/log"); r.Code != 0 {
		t.Fatalf("godfs append: %+v", r)
	}
	if r := cl.Run(nil, "cat", "/log"); !strings.HasSuffix(r.Stdout, "tail") || len(r.Stdout) != len(want)+4 {
		t.Fatalf("after godfs append: %d bytes", len(r.Stdout))
	}
}
