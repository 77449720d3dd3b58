package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

