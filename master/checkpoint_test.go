package master

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/godfs/godfs/master/namespace"
)

// TestCheckpointFromLog checks the checkpoint written in the background:
// built from the last checkpoint and the log, it is byte for byte the
// snapshot of the live tree at the same entry; the log segments it covers
// go; and a master started again from the directory without a clean
// shutdown has the live tree.
func TestCheckpointFromLog(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.CheckpointEvery = 100
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func(m *Master) []byte {
		var b bytes.Buffer
		if err := m.mu.tree.WriteSnapshot(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	m.mu.Lock()
	makeFiles(t, m, 300, nil)
	idx := m.mu.tree.LastIndex()
	live := snapshot(m)
	m.mu.Unlock()

	m.tick()
	m.ckpt.Wait()
	m.mu.Lock()
	if m.mu.checkpoint != idx || m.mu.checkpointing {
		t.Fatalf("checkpoint at %d (writing: %v), want %d", m.mu.checkpoint, m.mu.checkpointing, idx)
	}
	m.mu.Unlock()
	if disk, err := os.ReadFile(filepath.Join(cfg.Dir, "checkpoint")); err != nil || !bytes.Equal(disk, live) {
		t.Fatalf("checkpoint from the log (%d bytes, %v) differs from the live tree's snapshot (%d bytes)", len(disk), err, len(live))
	}
	ents, _ := os.ReadDir(cfg.Dir)
	for _, e := range ents {
		if first, ok := strings.CutPrefix(e.Name(), "log-"); ok {
			if n, _ := strconv.ParseUint(first, 10, 64); n <= idx {
				t.Errorf("log segment %s, covered by the checkpoint at %d, is still there", e.Name(), idx)
			}
		}
	}

	// More changes after it, then a start without a clean shutdown.
	m.mu.Lock()
	for i := range 50 {
		if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: "/after/" + strconv.Itoa(i),
			FileID: m.mu.tree.NextInodeID(), Parents: true}); err != nil {
			t.Fatal(err)
		}
	}
	last := m.mu.tree.LastIndex()
	live = snapshot(m)
	m.mu.Unlock()
	if err := m.oplog.Sync(last); err != nil {
		t.Fatal(err)
	}
	m.oplog.Close()
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := snapshot(m2); !bytes.Equal(got, live) {
		t.Fatalf("restarted from the background checkpoint and the log: %d bytes of snapshot, live tree %d", len(got), len(live))
	}
}
