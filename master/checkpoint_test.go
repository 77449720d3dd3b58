package master

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godfs/godfs/internal/smalldisk"
	"github.com/godfs/godfs/master/namespace"
	"github.com/godfs/godfs/master/oplog"
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
	if _, err := os.Stat(filepath.Join(cfg.Dir, "checkpoint.old")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the checkpoint replaced is still there (%v)", err)
	}
	ents, _ := os.ReadDir(cfg.Dir)
	for _, e := range ents {
		if first, ok := strings.CutPrefix(e.Name(), "log-"); ok {
			if n, _ := strconv.ParseUint(first, 10, 64); n <= idx {
				t.Errorf("log segment %s, covered by the checkpoint at %d, is still there", e.Name(), idx)
			}
		}
	}

	// The covered segments are kept to be reused: two checkpoints on, the
	// log goes on in one of them.
	frees, _ := filepath.Glob(filepath.Join(cfg.Dir, "free-*"))
	if len(frees) == 0 {
		t.Fatal("no covered segment kept for reuse")
	}
	freed, _ := os.Stat(frees[len(frees)-1]) // the next one reused
	mkdirs := func(prefix string, n int) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i := range n {
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: prefix + strconv.Itoa(i),
				FileID: m.mu.tree.NextInodeID(), Parents: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := range 2 {
		mkdirs("/round"+strconv.Itoa(round)+"/", 150)
		m.tick()
		m.ckpt.Wait()
	}
	m.mu.Lock()
	live0 := segmentNamed(t, cfg.Dir, m.mu.tree.LastIndex()+1)
	m.mu.Unlock()
	if !os.SameFile(freed, live0) {
		t.Fatal("the log did not go on in a segment an earlier checkpoint freed")
	}

	// More changes after it, then a start without a clean shutdown.
	mkdirs("/after/", 50)
	m.mu.Lock()
	last := m.mu.tree.LastIndex()
	live = snapshot(m)
	m.mu.Unlock()
	if err := m.oplog.Sync(last); err != nil {
		t.Fatal(err)
	}
	m.oplog.Close()
	// As a crash in the middle of removing the checkpoint before leaves it.
	old := filepath.Join(cfg.Dir, "checkpoint.old")
	if err := os.WriteFile(old, make([]byte, 9<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := snapshot(m2); !bytes.Equal(got, live) {
		t.Fatalf("restarted from the background checkpoint and the log: %d bytes of snapshot, live tree %d", len(got), len(live))
	}
	m2.ckpt.Wait()
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the checkpoint a crash left is still there after the start (%v)", err)
	}
}

// segmentNamed stats the op-log segment whose first entry is first.
func segmentNamed(t *testing.T, dir string, first uint64) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("log-%020d", first)))
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// The pacer pauses after each paceEvery or more of work, never after
// less, for as long as holds the work to its share of the time since the
// job started (a pause that ran long makes the next one shorter, down to
// minPause); once its done channel is closed it does not wait.
func TestPacerKeepsItsShare(t *testing.T) {
	var clock time.Time
	var slept []time.Duration
	overslept := time.Duration(0) // added to the next pause the pacer takes
	p := &pacer{share: 0.25, start: clock, since: clock, now: func() time.Time { return clock },
		sleep: func(d time.Duration, _ <-chan struct{}) {
			slept = append(slept, d)
			clock = clock.Add(d + overslept)
			overslept = 0
		}}
	work := func(d time.Duration) { clock = clock.Add(d); p.step() }
	for range 10 {
		work(paceEvery / 4) // short steps: a pause after every four
	}
	if len(slept) != 2 || slept[0] != 3*paceEvery || slept[1] != 3*paceEvery {
		t.Fatalf("pauses %v after 10 steps of a quarter burst; want two of %v", slept, 3*paceEvery)
	}
	work(2 * paceEvery) // the two short steps before and this one
	if got, want := clock.Sub(time.Time{}), time.Duration(float64(p.worked)/0.25); got != want {
		t.Fatalf("after %v of work %v had passed, want %v", p.worked, got, want)
	}
	overslept = 10 * paceEvery
	work(paceEvery)
	work(paceEvery)
	if last := slept[len(slept)-1]; last != minPause {
		t.Fatalf("the pause after one that ran %v long was %v, want %v", 10*paceEvery, last, minPause)
	}
	if share := float64(p.worked) / float64(clock.Sub(time.Time{})); share > 0.25 {
		t.Fatalf("share of the time worked %.2f, want at most 0.25", share)
	}

	done := make(chan struct{})
	close(done)
	start := time.Now()
	sleepUnless(time.Hour, done)
	if time.Since(start) > time.Minute {
		t.Fatal("sleepUnless waited with done closed")
	}
}

// A checkpoint that finds the disk full gives the op log's free segments
// back and is written in their room.
func TestCheckpointOnAFullDiskDropsFreeSegments(t *testing.T) {
	dir := smalldisk.New(t, 48<<20)
	cfg := DefaultConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	long := strings.Repeat("x", 200)
	// Directories made and removed: a long log, a small namespace.
	mkdirs := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			name := fmt.Sprintf("/%s-%d", long, i)
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: name, FileID: m.mu.tree.NextInodeID()}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.applyLocked(&namespace.Entry{Type: namespace.OpDelete, Path: name}); err != nil {
				t.Fatal(err)
			}
			if i%1000 == 999 {
				if err := m.oplog.Sync(m.mu.tree.LastIndex()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mkdirs(0, 20000) // ~10 MiB of entries: segments to free
	if err := m.checkpointLocked(); err != nil {
		t.Fatal(err)
	}
	freed, _ := filepath.Glob(filepath.Join(dir, "free-*"))
	if len(freed) < 2 {
		t.Fatalf("free segments after a checkpoint: %v", freed)
	}
	mkdirs(20000, 21000)
	waitSpare(t, dir)
	smalldisk.Fill(t, dir)
	if err := m.checkpointLocked(); err != nil {
		t.Fatalf("checkpoint on a full disk with %d free segments to give back: %v", len(freed), err)
	}
	// The checkpoint's roll took one free segment to be the next spare,
	// renamed in the background: not one kept.
	waitSpare(t, dir)
	for _, name := range freed {
		if _, err := os.Stat(name); err == nil {
			t.Errorf("free segment %s kept on a full disk", name)
		}
	}
	tree, err := oplog.LoadCheckpoint(dir, nil)
	if err != nil || tree.LastIndex() != m.mu.tree.LastIndex() {
		t.Fatalf("checkpoint read back: %v, want it at entry %d", err, m.mu.tree.LastIndex())
	}
}

// On a full disk lease recovery waits, as clients' changes do, for room in
// the op log: its entries would go past the blocks the log has written
// ahead, and a failed append stops the master.
func TestLeaseRecoveryWaitsForRoomInTheLog(t *testing.T) {
	dir := smalldisk.New(t, 24<<20)
	cfg := DefaultConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.TickInterval = time.Hour // ticked here
	now := time.Now()
	cfg.Now = func() time.Time { return now }
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.mu.Lock()
	_, err = m.applyLocked(&namespace.Entry{Type: namespace.OpCreate, Path: "/writing", FileID: m.mu.tree.NextInodeID(),
		Client: "c", Replication: 3, BlockSize: 64 << 20})
	m.mu.leases["c"] = now
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitSpare(t, dir)
	filler := smalldisk.Fill(t, dir)
	long := strings.Repeat("x/", 120) // ~1 KiB entries with their parents made
	for i := 0; m.oplog.Ready() == nil; i++ {
		if i > 40000 { // 40 MiB of entries: more than the disk holds
			t.Fatal("the op log never ran out of room")
		}
		m.mu.Lock()
		_, err := m.applyLocked(&namespace.Entry{Type: namespace.OpMkdir, Path: fmt.Sprintf("/%s%d", long, i), FileID: m.mu.tree.NextInodeID(), Parents: true})
		last := m.mu.tree.LastIndex()
		m.mu.Unlock()
		if err == nil {
			err = m.oplog.Sync(last)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(cfg.LeaseLimit + time.Minute)
	m.mu.Lock()
	before := m.mu.tree.LastIndex()
	m.mu.Unlock()
	m.tick()
	m.tick()
	m.mu.Lock()
	after, writing := m.mu.tree.LastIndex(), m.mu.tree.WritingAt("/writing") != nil
	m.mu.Unlock()
	if after != before || !writing {
		t.Fatalf("lease recovery on a full disk: entries %d -> %d, file still being written %v; want it to wait", before, after, writing)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	m.tick()
	m.mu.Lock()
	writing = m.mu.tree.WritingAt("/writing") != nil
	failed := m.mu.failed
	m.mu.Unlock()
	if writing || failed != nil {
		t.Fatalf("after space came back: file still being written %v, master failed: %v", writing, failed)
	}
}

// waitSpare waits until the op log in dir has its spare segment zeroed:
// one still being made when the disk fills is removed, which frees space.
func waitSpare(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if fi, err := os.Stat(filepath.Join(dir, "spare-segment")); err == nil && fi.Size() >= 4<<20 {
			return
		}
	}
	t.Fatal("no spare segment made in 10 s")
}
