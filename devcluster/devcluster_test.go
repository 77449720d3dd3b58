package devcluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/godfs/godfs/client"
	"github.com/godfs/godfs/devcluster"
)

// TestBlockReportInParts restarts a cluster whose datanodes report their
// replicas three per call: the master must learn every replica from the
// parts and keep those of the earlier parts when the last one comes, so
// every file is readable after the restart.
func TestBlockReportInParts(t *testing.T) {
	cfg := devcluster.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Replication: 1, BlockReportPart: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c, err := devcluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl := client.New(c.Addr())
	const files = 20 // about 7 replicas per datanode: three parts each
	for i := range files {
		w, err := cl.Create(ctx, fmt.Sprintf("/f%d", i))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "file %d", i)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = devcluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl = client.New(c.Addr())
	defer cl.Close()
	for i := range files {
		r, err := cl.Open(ctx, fmt.Sprintf("/f%d", i))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if want := fmt.Sprintf("file %d", i); err != nil || !bytes.Equal(got, []byte(want)) {
			t.Fatalf("/f%d after the restart: %q, %v; want %q", i, got, err, want)
		}
	}
}
