package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"testing"

	"github.com/godfs/godfs/devcluster"
)

// TestReadsReuseDatanodeConnections reads a small file again and again
// through one client: each read goes over the connection the one before
// left, so one connection is kept, not one a read; a kept connection
// that went bad is replaced without the reader noticing.
func TestReadsReuseDatanodeConnections(t *testing.T) {
	cl, err := devcluster.Start(devcluster.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", DataNodes: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	c := New(cl.Addr())
	defer c.Close()
	data := make([]byte, 5000)
	rand.Read(data)
	w, err := c.Create(ctx, "/small", Replication(1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	kept := c.peers.Idle
	read := func() {
		t.Helper()
		r, err := c.Open(ctx, "/small")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
		}
	}
	for i := 0; i < 20; i++ {
		read()
		if n := kept(); n != 1 {
			t.Fatalf("after read %d, %d datanode connections kept, want 1 (reused)", i+1, n)
		}
	}
	// The kept connection breaks: the next read dials again and succeeds.
	addr := cl.DataNodes[0].Addr()
	broken, _ := c.peers.Get(addr)
	broken.Close()
	c.peers.Put(addr, broken)
	read()
	if n := kept(); n != 1 {
		t.Fatalf("after a read that replaced a broken connection, %d kept, want 1", n)
	}
}
