// Package e2e drives real godfs processes (a master and datanodes started
// from the built binary) through the real client and CLI.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/godfstest"
)

const blockSize = 1 << 20 // the test clusters' block size (1MiB)

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t testing.TB, c *client.Client, name string, data []byte, opts ...client.CreateOption) {
	t.Helper()
	w, err := c.Create(ctxT(t), name, opts...)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
}

func get(t testing.TB, c *client.Client, name string) []byte {
	t.Helper()
	r, err := c.Open(ctxT(t), name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func TestRoundTripSizes(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	for _, n := range []int{0, 1, 511, 512, 513, blockSize - 1, blockSize, blockSize + 1, 3*blockSize + 12345} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randomBytes(t, n)
			name := fmt.Sprintf("/sizes/f%d", n)
			put(t, c, name, data, client.CreateParents())
			if got := get(t, c, name); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(data))
			}
			fi, err := c.Stat(ctxT(t), name)
			if err != nil || fi.Size() != int64(n) || fi.Replication != 3 {
				t.Fatalf("stat: %+v, %v; want size %d, replication 3", fi, err, n)
			}
		})
	}
}

// io.Copy into a FileWriter reads straight into its packets (ReadFrom):
// reads of any size, across packets and blocks, after a Sync that left a
// partial chunk to send again, all arrive; io.Copy out of a FileReader
// (WriteTo) gives them back.
func TestCopyIntoWriter(t *testing.T) {
	var _ io.ReaderFrom = (*client.FileWriter)(nil)
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	ctx := ctxT(t)
	w, err := c.Create(ctx, "/copied")
	if err != nil {
		t.Fatal(err)
	}
	head := randomBytes(t, 700)
	if _, err := w.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	body := randomBytes(t, 5*blockSize/2+333)
	if n, err := io.Copy(w, iotest.HalfReader(bytes.NewReader(body))); err != nil || n != int64(len(body)) {
		t.Fatalf("copied %d of %d bytes: %v", n, len(body), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	all := append(head, body...)
	if got := get(t, c, "/copied"); !bytes.Equal(got, all) {
		t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(all))
	}
	// And io.Copy out of a reader (WriteTo), from mid-block to the end.
	r, err := c.Open(ctx, "/copied")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var _ io.WriterTo = r
	from := int64(blockSize + 777)
	if _, err := r.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if n, err := io.Copy(&out, r); err != nil || n != int64(len(all))-from || !bytes.Equal(out.Bytes(), all[from:]) {
		t.Fatalf("io.Copy from offset %d: %d bytes, %v; want the %d after it", from, n, err, int64(len(all))-from)
	}
}

func TestCLIPutGetStdinStdout(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	data := randomBytes(t, 2*blockSize+100)
	local := filepath.Join(t.TempDir(), "in")
	os.WriteFile(local, data, 0o644)
	if r := cl.Run(nil, "put", local, "/f"); r.Code != 0 {
		t.Fatalf("put: %+v", r)
	}
	if r := cl.Run(bytes.NewReader(data), "put", "-", "/g"); r.Code != 0 {
		t.Fatalf("put -: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "out")
	if r := cl.Run(nil, "get", "/f", out); r.Code != 0 {
		t.Fatalf("get: %+v", r)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("get: bytes differ")
	}
	if r := cl.Run(nil, "cat", "/g"); r.Code != 0 || r.Stdout != string(data) {
		t.Fatalf("cat: code %d, %d bytes, want %d", r.Code, len(r.Stdout), len(data))
	}
}

func TestRandomAccessRead(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	data := randomBytes(t, 3*blockSize+777)
	put(t, c, "/ra", data)
	r, err := c.Open(ctxT(t), "/ra")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, off := range []int64{0, 1, 511, 512, blockSize - 3, blockSize, 2*blockSize + 5, int64(len(data)) - 10} {
		buf := make([]byte, 4000)
		n, err := r.ReadAt(buf, off)
		want := data[off:min(off+4000, int64(len(data)))]
		if !bytes.Equal(buf[:n], want) || (n < len(buf) && !errors.Is(err, io.EOF)) {
			t.Fatalf("ReadAt(%d): %d bytes, err %v; mismatch", off, n, err)
		}
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		n, _ = io.ReadFull(r, buf)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("Seek(%d)+Read mismatch", off)
		}
	}
}

func TestNamespace(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	ctx := ctxT(t)
	if r := cl.Run(nil, "mkdir", "-p", "/a/b/c"); r.Code != 0 {
		t.Fatalf("mkdir -p: %+v", r)
	}
	put(t, c, "/a/b/c/f", []byte("hello"))
	put(t, c, "/a/top", []byte("x"))
	r := cl.Run(nil, "ls", "-l", "/a/b/c")
	fields := strings.Fields(r.Stdout)
	// mode, repl, owner, group, size, date, time, name
	if r.Code != 0 || len(fields) != 8 || fields[0] != "-rw-r--r--" || fields[1] != "3" || fields[4] != "5" || fields[7] != "f" {
		t.Fatalf("ls -l: %+v", r)
	}
	// mv of a directory is atomic and carries its subtree.
	if r := cl.Run(nil, "mv", "/a/b", "/moved"); r.Code != 0 {
		t.Fatalf("mv: %+v", r)
	}
	if got := get(t, c, "/moved/c/f"); string(got) != "hello" {
		t.Fatalf("after mv: %q", got)
	}
	if _, err := c.Stat(ctx, "/a/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old path after mv: %v", err)
	}
	// mv into an existing directory.
	if r := cl.Run(nil, "mv", "/a/top", "/moved"); r.Code != 0 {
		t.Fatalf("mv into dir: %+v", r)
	}
	if _, err := c.Stat(ctx, "/moved/top"); err != nil {
		t.Fatal(err)
	}
	r = cl.Run(nil, "du", "-s", "/moved")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "6\t18\t/moved") {
		t.Fatalf("du -s: %+v", r)
	}
	r = cl.Run(nil, "stat", "/moved/c/f")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Size: 5") || !strings.Contains(r.Stdout, "Repl: 3") {
		t.Fatalf("stat: %+v", r)
	}
	if r := cl.Run(nil, "rm", "/moved"); r.Code != 1 || !strings.Contains(r.Stderr, "is a directory") {
		t.Fatalf("rm of a directory without -r: %+v", r)
	}
	if r := cl.Run(nil, "rm", "-r", "/moved"); r.Code != 0 {
		t.Fatalf("rm -r: %+v", r)
	}
	ents, err := c.ReadDir(ctx, "/")
	if err != nil || len(ents) != 1 || ents[0].Name() != "a" {
		t.Fatalf("root after rm -r: %v %v", ents, err)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	put(t, c, "/file", []byte("data"))
	cl.Run(nil, "mkdir", "/dir")
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cat", "/missing"}, 1, "does not exist"},
		{[]string{"get", "/missing", local + ".out"}, 1, "does not exist"},
		{[]string{"mkdir", "/dir"}, 1, "exists"},
		{[]string{"put", local, "/file"}, 1, "exists"},
		{[]string{"mkdir", "/file/sub"}, 1, "not a directory"},
		{[]string{"put", local, "/file/sub"}, 1, "not a directory"},
		{[]string{"mv", "/missing", "/x"}, 1, "does not exist"},
		{[]string{"rm", "/missing"}, 1, "does not exist"},
		{[]string{"ls", "/missing"}, 1, "does not exist"},
		{[]string{"put", "/no/such/local", "/y"}, 1, "no such file"},
		{[]string{"put", local, "relative/path"}, 2, "must be absolute"},
		{[]string{"put", local, "/bad:name"}, 1, "invalid path"},
		{[]string{"put", local}, 2, "takes 2 argument"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"put", "--replication", "-1", local, "/z"}, 2, "negative"},
	} {
		r := cl.Run(nil, tc.args...)
		if r.Code != tc.code || !strings.Contains(strings.ToLower(r.Stderr), tc.want) ||
			strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.HasPrefix(r.Stderr, "godfs: ") {
			t.Errorf("godfs %v: code %d, stderr %q; want code %d, one line containing %q", tc.args, r.Code, r.Stderr, tc.code, tc.want)
		}
	}
	// Nothing was lost along the way.
	if got := get(t, c, "/file"); string(got) != "data" {
		t.Fatalf("/file changed: %q", got)
	}
	// Master unreachable.
	r := godfstest.RunBinary(t, godfstest.Binary(t), nil, "--master", "127.0.0.1:1", "ls", "/")
	if r.Code != 1 || !strings.Contains(r.Stderr, "master unreachable") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("unreachable master: %+v", r)
	}
}

func TestNoDatanodes(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: -1})
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, []byte("x"), 0o644)
	r := cl.Run(nil, "put", local, "/x")
	if r.Code != 1 || !strings.Contains(r.Stderr, "no live datanodes") {
		t.Fatalf("put with no datanodes: %+v", r)
	}
	if r := cl.Run(nil, "ls", "/"); r.Code != 0 || r.Stdout != "" {
		t.Fatalf("a failed put left something visible: %+v", r)
	}
}

func TestReplicationCapped(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 2})
	local := filepath.Join(t.TempDir(), "x")
	os.WriteFile(local, randomBytes(t, 1000), 0o644)
	r := cl.Run(nil, "put", local, "/x")
	if r.Code != 0 || !strings.Contains(r.Stderr, "replication 3 capped to 2") {
		t.Fatalf("put: %+v", r)
	}
	fi, err := cl.Client().Stat(ctxT(t), "/x")
	if err != nil || fi.Replication != 2 {
		t.Fatalf("stat: %+v %v", fi, err)
	}
}

func TestRemoveFreesDatanodeDisk(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	before := int64(0)
	for _, d := range cl.DataNodes {
		before += godfstest.ReplicaBytes(t, d.Dir)
	}
	put(t, c, "/big", randomBytes(t, 3*blockSize+5))
	mid := int64(0)
	for _, d := range cl.DataNodes {
		mid += godfstest.ReplicaBytes(t, d.Dir)
	}
	if mid < before+3*(3*blockSize+5) {
		t.Fatalf("datanodes hold %d bytes after a 3 MiB put at replication 3 (before: %d)", mid, before)
	}
	if r := cl.Run(nil, "rm", "/big"); r.Code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := int64(0)
		for _, d := range cl.DataNodes {
			now += godfstest.ReplicaBytes(t, d.Dir)
		}
		if now <= before+4096 { // identity files may have been written meanwhile
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("datanode disk usage %d bytes 30s after rm, was %d before the put", now, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestReadSurvivesDatanodeKill(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	data := randomBytes(t, 2*blockSize+99)
	put(t, c, "/f", data)
	cl.KillDataNode(0)
	if got := get(t, c, "/f"); !bytes.Equal(got, data) {
		t.Fatal("read after kill -9 of a datanode: bytes differ")
	}
	cl.KillDataNode(1)
	if got := get(t, c, "/f"); !bytes.Equal(got, data) {
		t.Fatal("read with one of three datanodes left: bytes differ")
	}
}

func TestCorruptReplicaDetectedAndReadSucceeds(t *testing.T) {
	// The scanner finds whichever corrupt replica the reads did not hit.
	cl := godfstest.NewCluster(t, godfstest.Config{ScanPeriod: 2 * time.Second})
	c := cl.Client()
	data := randomBytes(t, blockSize/2)
	put(t, c, "/f", data)
	// Flip a byte in every replica but one, so whichever replica the
	// reader picks first is likely bad and at least one good one remains.
	for _, d := range cl.DataNodes[:2] {
		files := godfstest.BlockFiles(t, d.Dir)
		if len(files) != 1 {
			t.Fatalf("datanode %s holds %d block files, want 1", d.Dir, len(files))
		}
		f, err := os.OpenFile(files[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, 1000)
		b[0] ^= 0xff
		f.WriteAt(b, 1000)
		f.Close()
	}
	for i := 0; i < 3; i++ {
		if got := get(t, c, "/f"); !bytes.Equal(got, data) {
			t.Fatal("read returned corrupt data")
		}
	}
	// The reader reported what it hit; the master has those replicas
	// deleted and copied again from the good one.
	deadline := time.Now().Add(30 * time.Second)
	for {
		good := 0
		for _, d := range cl.DataNodes {
			for _, r := range godfstest.Replicas(t, d.Dir) {
				if bytes.Equal(r, data) {
					good++
				}
			}
		}
		if good == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d good replicas 30s after reads hit corrupt ones, want 3", good)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestMasterKill9KeepsAcknowledgedFiles(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	want := map[string][]byte{}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("/d%d/f%d", i%3, i)
		data := randomBytes(t, i*50000)
		put(t, c, name, data, client.CreateParents())
		want[name] = data
	}
	cl.Run(nil, "mv", "/d0", "/renamed")
	for name, data := range want {
		if strings.HasPrefix(name, "/d0/") {
			delete(want, name)
			want["/renamed/"+strings.TrimPrefix(name, "/d0/")] = data
		}
	}
	cl.Run(nil, "rm", "/d1/f1")
	delete(want, "/d1/f1")
	cl.KillMaster()
	cl.RestartMaster()
	cl.WaitLive(3)
	c2 := cl.Client()
	for name, data := range want {
		if got := get(t, c2, name); !bytes.Equal(got, data) {
			t.Fatalf("%s after master kill -9 and restart: bytes differ", name)
		}
	}
	if _, err := c2.Stat(ctxT(t), "/d1/f1"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted file is back: %v", err)
	}
	// And a clean restart (checkpoint) keeps them too.
	if err := cl.Stop(cl.Master); err != nil {
		t.Fatalf("clean master stop: %v", err)
	}
	cl.RestartMaster()
	cl.WaitLive(3)
	for name, data := range want {
		if got := get(t, cl.Client(), name); !bytes.Equal(got, data) {
			t.Fatalf("%s after clean restart: bytes differ", name)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	const writers = 8
	datas := make([][]byte, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range datas {
		datas[i] = randomBytes(t, blockSize+i*10007)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w, err := c.Create(context.Background(), fmt.Sprintf("/c/f%d", i), client.CreateParents())
			if err == nil {
				_, err = w.Write(datas[i])
				if cerr := w.Close(); err == nil {
					err = cerr
				}
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range datas {
		if got := get(t, c, fmt.Sprintf("/c/f%d", i)); !bytes.Equal(got, d) {
			t.Fatalf("file %d differs", i)
		}
	}
}

// Readers at once of many small files (packed on the datanodes, read
// into pooled buffers at both ends) each get their own file's bytes.
func TestConcurrentSmallReads(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	datas := make([][]byte, 30)
	for i := range datas {
		datas[i] = randomBytes(t, 1+i*2311)
		put(t, c, fmt.Sprintf("/s/f%d", i), datas[i], client.CreateParents())
	}
	t.Run("readers", func(t *testing.T) {
		for g := range 8 {
			t.Run(fmt.Sprint(g), func(t *testing.T) {
				t.Parallel()
				for k := range 60 {
					i := (g*7 + k*11) % len(datas)
					if got := get(t, c, fmt.Sprintf("/s/f%d", i)); !bytes.Equal(got, datas[i]) {
						t.Fatalf("file %d: read another file's bytes", i)
					}
				}
			})
		}
	})
}

func TestFileInvisibleUntilClosed(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	w, err := c.Create(ctxT(t), "/pending")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(randomBytes(t, blockSize+10))
	if _, err := c.Stat(ctxT(t), "/pending"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file under construction is visible: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := c.Stat(ctxT(t), "/pending"); err != nil || fi.Size() != blockSize+10 {
		t.Fatalf("after close: %+v %v", fi, err)
	}
	// A second writer on a path being written gets the lease error.
	w1, err := c.Create(ctxT(t), "/contended")
	if err != nil {
		t.Fatal(err)
	}
	other := cl.Client()
	if _, err := other.Create(ctxT(t), "/contended"); !errors.Is(err, client.ErrLeaseHeld) {
		t.Fatalf("second writer: %v, want ErrLeaseHeld", err)
	}
	w1.Close()
}

// TestLargeDirectoryListing pages through a directory bigger than one
// getListing page.
func TestLargeDirectoryListing(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{DataNodes: 1, Replication: 1})
	c := cl.Client()
	const n = 2500
	for i := 0; i < n; i++ {
		if err := c.Mkdir(ctxT(t), fmt.Sprintf("/big/d%05d", i), 0o755, true); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := c.ReadDir(ctxT(t), "/big")
	if err != nil || len(ents) != n {
		t.Fatalf("ReadDir: %d entries, %v; want %d", len(ents), err, n)
	}
	for i, e := range ents {
		if e.Name() != fmt.Sprintf("d%05d", i) {
			t.Fatalf("entry %d is %s", i, e.Name())
		}
	}
}

// TestBlockIDsNotReusedAfterMasterKill: addBlock answers before its entry
// is durable, so a master killed while a file is being written may come
// back without the blocks it handed out, whose replicas the datanodes
// hold (a kill -9 keeps what the master wrote but did not sync, so this
// shows the entries lost on a power failure only if the log was not
// written yet, as here). It must not hand those ids out again: a file
// written after the restart gets blocks of its own and reads back.
func TestBlockIDsNotReusedAfterMasterKill(t *testing.T) {
	cl := godfstest.NewCluster(t, godfstest.Config{})
	c := cl.Client()
	put(t, c, "/before", randomBytes(t, 1000)) // past the first reservation
	w, err := c.Create(ctxT(t), "/dying")
	if err != nil {
		t.Fatal(err)
	}
	// Two full blocks reach every datanode (their addBlocks logged, not
	// synced: nothing since waited for the log), and a third begins.
	if _, err := w.Write(randomBytes(t, 2*blockSize+10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the blocks finalized on the datanodes", func() bool {
		return replicaCount(t, cl, 0, 1, 2) >= 6
	})
	cl.KillMaster()
	cl.RestartMaster()
	cl.WaitLive(3)
	waitFor(t, 30*time.Second, "safe mode to end", func() bool {
		return strings.Contains(cl.Run(nil, "report").Stdout, "Safe mode: off")
	})
	c2 := cl.Client()
	data := randomBytes(t, 3*blockSize+5)
	put(t, c2, "/after", data)
	if got := get(t, c2, "/after"); !bytes.Equal(got, data) {
		t.Fatal("file written after the restart: bytes differ")
	}
	if _, err := c2.Stat(ctxT(t), "/before"); err != nil {
		t.Fatalf("file completed before the kill: %v", err)
	}
	// A reused id shows as a datanode refusing the new block (the client
	// then gets another and goes on, so the write alone would not tell).
	for i, d := range cl.DataNodes {
		if strings.Contains(d.Log(), "replica already exists") {
			t.Fatalf("datanode %d was asked for a block id it held from before the kill", i)
		}
	}
}
