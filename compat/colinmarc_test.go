package compat

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	hdfs "github.com/colinmarc/hdfs/v2"

	"github.com/godfs/godfs/godfstest"
)

func newHDFSClient(t *testing.T, addr string) *hdfs.Client {
	t.Helper()
	c, err := hdfs.NewClient(hdfs.ClientOptions{Addresses: []string{addr}, User: "alice"})
	if err != nil {
		t.Fatalf("colinmarc/hdfs NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hdfsPut(t *testing.T, c *hdfs.Client, name string, data []byte) {
	t.Helper()
	w, err := c.Create(name)
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write %s: %v", name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close %s: %v", name, err)
	}
}

func hdfsGet(t *testing.T, c *hdfs.Client, name string) []byte {
	t.Helper()
	b, err := c.ReadFile(name)
	if err != nil {
		t.Fatalf("ReadFile %s: %v", name, err)
	}
	return b
}

// TestColinmarcHDFS exercises github.com/colinmarc/hdfs/v2 against godfs.
func TestColinmarcHDFS(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := newHDFSClient(t, cl.Master.Addr)

	if err := c.MkdirAll("/lib/dir", 0o755); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 2*blockSize+3333)
	hdfsPut(t, c, "/lib/dir/f", data) // a 3-datanode pipeline, 3 blocks
	if got := hdfsGet(t, c, "/lib/dir/f"); !bytes.Equal(got, data) {
		t.Fatal("round trip: bytes differ")
	}

	// Append, three times.
	want := append([]byte{}, data...)
	for i := 0; i < 3; i++ {
		w, err := c.Append("/lib/dir/f")
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		more := randomBytes(t, 1000+i*blockSize/2)
		w.Write(more)
		if err := w.Close(); err != nil {
			t.Fatalf("Append %d Close: %v", i, err)
		}
		want = append(want, more...)
	}
	if got := hdfsGet(t, c, "/lib/dir/f"); !bytes.Equal(got, want) {
		t.Fatalf("after appends: %d bytes, want %d", len(got), len(want))
	}

	// Open, ReadAt, Seek.
	f, err := c.Open("/lib/dir/f")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5000)
	if _, err := f.ReadAt(buf, blockSize-100); err != nil || !bytes.Equal(buf, want[blockSize-100:blockSize+4900]) {
		t.Fatalf("ReadAt across a block boundary: %v", err)
	}
	if _, err := f.Seek(2*blockSize+17, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, want[2*blockSize+17:2*blockSize+5017]) {
		t.Fatalf("Seek + Read: %v", err)
	}
	f.Close()

	// Stat, ReadDir, Chmod, Chown, Chtimes.
	fi, err := c.Stat("/lib/dir/f")
	if err != nil || fi.Size() != int64(len(want)) || fi.IsDir() {
		t.Fatalf("Stat: %v %v", fi, err)
	}
	if err := c.Chmod("/lib/dir/f", 0o640); err != nil {
		t.Fatal(err)
	}
	if err := c.Chown("/lib/dir/f", "bob", "staff"); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := c.Chtimes("/lib/dir/f", mtime, mtime); err != nil {
		t.Fatal(err)
	}
	ents, err := c.ReadDir("/lib/dir")
	if err != nil || len(ents) != 1 {
		t.Fatalf("ReadDir: %v %v", ents, err)
	}
	st := ents[0].Sys().(*hdfs.FileStatus)
	if ents[0].Mode().Perm() != 0o640 || st.GetOwner() != "bob" || st.GetGroup() != "staff" || !ents[0].ModTime().Equal(mtime) {
		t.Fatalf("after Chmod/Chown/Chtimes: mode %v owner %s group %s mtime %v", ents[0].Mode(), st.GetOwner(), st.GetGroup(), ents[0].ModTime())
	}

	// Rename and errors that map to os errors.
	if err := c.Rename("/lib/dir/f", "/lib/g"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat("/lib/dir/f"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat of a renamed-away path: %v", err)
	}
	if _, err := c.Open("/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open missing: %v", err)
	}
	if _, err := c.Create("/lib/g"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create existing: %v", err)
	}
	if err := c.Mkdir("/lib/g/sub", 0o755); err == nil {
		t.Fatal("Mkdir under a file succeeded")
	}
	if err := c.Remove("/lib"); err == nil {
		t.Fatal("Remove of a non-empty directory succeeded")
	}
	if err := c.RemoveAll("/lib"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat("/lib"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after RemoveAll: %v", err)
	}
	// Content summary and file system stats.
	if err := c.Mkdir("/s", 0o755); err != nil {
		t.Fatal(err)
	}
	hdfsPut(t, c, "/s/x", data)
	cs, err := c.GetContentSummary("/s")
	if err != nil || cs.Size() != int64(len(data)) || cs.FileCount() != 1 || cs.DirectoryCount() != 1 {
		t.Fatalf("GetContentSummary: %+v %v", cs, err)
	}
	fsi, err := c.StatFs()
	if err != nil || fsi.Capacity == 0 {
		t.Fatalf("StatFs: %+v %v", fsi, err)
	}
}

// TestColinmarcReadFailsOver kills datanodes after a write; the library's
// reader must fail over to a live replica.
func TestColinmarcReadFailsOver(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DeadAfter: time.Hour}) // the master keeps listing dead nodes
	c := newHDFSClient(t, cl.Master.Addr)
	data := randomBytes(t, 3*blockSize+1)
	hdfsPut(t, c, "/f", data)
	cl.KillDataNode(0)
	cl.KillDataNode(2)
	for i := 0; i < 3; i++ {
		if got := hdfsGet(t, c, "/f"); !bytes.Equal(got, data) {
			t.Fatal("read with two of three datanodes dead: bytes differ")
		}
	}
}
