package oplog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/internal/smalldisk"
	"github.com/godfs/godfs/master/namespace"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func appendN(t *testing.T, l *Log, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := l.Append(&namespace.Entry{Index: i, Type: namespace.OpMkdir, Path: "/d"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(to); err != nil {
		t.Fatal(err)
	}
}

func replayAll(t *testing.T, dir string, after uint64) ([]uint64, *Log, error) {
	t.Helper()
	l, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	// Closed before the test's directory goes: it makes its spare segment
	// in the background.
	t.Cleanup(func() { l.Close() })
	var got []uint64
	err = l.Replay(after, func(e *namespace.Entry) error { got = append(got, e.Index); return nil })
	return got, l, err
}

// twoSegments opens a new log in dir with entries 1-5 in its first
// segment and 6-8 in the second, the one being appended to.
func twoSegments(t *testing.T, dir string) *Log {
	t.Helper()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 5)
	if err := l.Roll(6); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 6, 8)
	return l
}

func TestAppendReplay(t *testing.T) {
	dir := t.TempDir()
	_, l, err := replayAll(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, 10)
	l.Close()
	got, l, err := replayAll(t, dir, 4)
	if err != nil || len(got) != 6 || got[0] != 5 || got[5] != 10 {
		t.Fatalf("replay after 4: %v %v", got, err)
	}
	// Appending continues the same log.
	appendN(t, l, 11, 12)
	l.Close()
	if got, _, err := replayAll(t, dir, 0); err != nil || len(got) != 12 {
		t.Fatalf("replay: %v %v", got, err)
	}
}

func TestTornTailIsCutOff(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 5)
	end := l.mu.w.end()
	l.Close()
	seg := filepath.Join(dir, segmentName(1))
	// A crash in the middle of writing record 5: its last bytes are still
	// the preallocated zeros.
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	f.WriteAt(make([]byte, 3), end-3)
	f.Close()
	got, l, err := replayAll(t, dir, 0)
	if err != nil || len(got) != 4 {
		t.Fatalf("replay of a torn log: %v %v", got, err)
	}
	appendN(t, l, 5, 6) // the torn bytes are gone; new records follow the good ones
	l.Close()
	if got, _, err := replayAll(t, dir, 0); err != nil || len(got) != 6 {
		t.Fatalf("replay after appending past a torn tail: %v %v", got, err)
	}
}

func TestCorruptionInOlderSegmentRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	twoSegments(t, dir).Close()
	seg := filepath.Join(dir, segmentName(1))
	b, _ := os.ReadFile(seg)
	b[20] ^= 0xff
	os.WriteFile(seg, b, 0o644)
	if _, _, err := replayAll(t, dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay over a corrupt segment: %v, want ErrCorrupt", err)
	}
}

func TestCheckpointAndCompact(t *testing.T) {
	dir := t.TempDir()
	tree := namespace.New("u", "g", 1)
	for i := uint64(1); i <= 3; i++ {
		e := &namespace.Entry{Index: i, Type: namespace.OpMkdir, Path: "/d" + string(rune('0'+i)), FileID: tree.NextInodeID()}
		if _, err := tree.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 3)
	if err := l.Roll(4); err != nil {
		t.Fatal(err)
	}
	if err := SaveCheckpoint(dir, tree, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(3); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, segmentName(1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("segment covered by the checkpoint was not removed")
	}
	t2, err := LoadCheckpoint(dir, nil)
	if err != nil || t2 == nil || t2.LastIndex() != 3 {
		t.Fatalf("load checkpoint: %v %v", t2, err)
	}
	if _, err := t2.Lookup("/d2"); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointKeepsTheOneItReplaces checks that a checkpoint replaced
// stays, as the file it was, until RemoveOldCheckpoint frees it, and that
// a second replacement drops what a removal cut short left.
func TestCheckpointKeepsTheOneItReplaces(t *testing.T) {
	dir := t.TempDir()
	tree := namespace.New("u", "g", 1)
	if err := SaveCheckpoint(dir, tree, nil); err != nil {
		t.Fatal(err)
	}
	if HasOldCheckpoint(dir) {
		t.Fatal("an old checkpoint after the first")
	}
	first, _ := os.ReadFile(filepath.Join(dir, checkpointName))
	if _, err := tree.Apply(&namespace.Entry{Index: 1, Type: namespace.OpMkdir, Path: "/d", FileID: tree.NextInodeID()}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second over an old one not removed
		if err := SaveCheckpoint(dir, tree, nil); err != nil {
			t.Fatal(err)
		}
		if old, err := os.ReadFile(filepath.Join(dir, oldCheckpointName)); err != nil || !HasOldCheckpoint(dir) {
			t.Fatalf("old checkpoint: %v", err)
		} else if len(first) > 0 && !bytes.Equal(old, first) {
			t.Fatal("the old checkpoint is not the one replaced")
		}
		first = nil
	}
	if err := RemoveOldCheckpoint(dir, nil); err != nil || HasOldCheckpoint(dir) {
		t.Fatalf("remove old checkpoint: %v, still there: %v", err, HasOldCheckpoint(dir))
	}
	t2, err := LoadCheckpoint(dir, nil)
	if err != nil || t2 == nil || t2.LastIndex() != 1 {
		t.Fatalf("load checkpoint after the old one went: %v %v", t2, err)
	}
	// A crash between the link and the rename leaves the old name on the
	// current checkpoint: its removal must not touch that (one of more
	// than a removal's step).
	for i := uint64(2); i < 300000; i++ {
		if _, err := tree.Apply(&namespace.Entry{Index: i, Type: namespace.OpMkdir, Path: fmt.Sprintf("/d/%d", i), FileID: tree.NextInodeID(), Parents: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := SaveCheckpoint(dir, tree, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, checkpointName)); err != nil || fi.Size() <= datasync.RemoveStep {
		t.Fatalf("checkpoint of %v bytes (%v), want more than %d", fi.Size(), err, datasync.RemoveStep)
	}
	if err := os.Remove(filepath.Join(dir, oldCheckpointName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, checkpointName), filepath.Join(dir, oldCheckpointName)); err != nil {
		t.Fatal(err)
	}
	if err := RemoveOldCheckpoint(dir, nil); err != nil || HasOldCheckpoint(dir) {
		t.Fatalf("remove old checkpoint, a second name of the current one: %v, still there: %v", err, HasOldCheckpoint(dir))
	}
	if t2, err := LoadCheckpoint(dir, nil); err != nil || t2 == nil || t2.LastIndex() != 299999 {
		t.Fatalf("load checkpoint after its second name went: %v %v", t2, err)
	}
}

func TestCorruptionMidLastSegmentRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 6)
	l.Close()
	seg := filepath.Join(dir, segmentName(1))
	b, _ := os.ReadFile(seg)
	b[30] ^= 0xff // inside record 1 or 2, with good records after it
	os.WriteFile(seg, b, 0o644)
	_, _, err := replayAll(t, dir, 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay with a bad record mid-log: %v, want ErrCorrupt", err)
	}
	if after, _ := os.ReadFile(seg); len(after) != len(b) {
		t.Fatal("a refused replay changed the log")
	}
}

// fillSegment appends n bytes of 64 KiB entries and syncs, rounds times,
// and returns the next index. n = preallocate-switchAt fills a new
// segment until a sync finds less than switchAt zeroed past the records.
func fillSegment(t testing.TB, l *Log, idx uint64, rounds, n int) uint64 {
	t.Helper()
	long := strings.Repeat("x", 64<<10)
	for range rounds {
		for range n / len(long) {
			if err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/" + long}); err != nil {
				t.Fatal(err)
			}
			idx++
		}
		if err := l.Sync(idx - 1); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

// waitSpare waits until the spare segment is made; with take, it then
// takes it away, as if it were not ready yet.
func waitSpare(l *Log, take bool) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	<-l.spare.ready
	if take {
		l.spare.f.Close()
		l.spare = nil
	}
}

// A sync that finds the segment's zeros running low goes on in the spare
// segment (zeroed in the background) from the next index, leaving the
// segment it filled as it was, not grown.
func TestSyncGoesOnInTheSpare(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 5)
	if err := l.Roll(6); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, segmentName(6))
	if fi, err := os.Stat(seg); err != nil || fi.Size() != preallocate {
		t.Fatalf("new segment: %v %v, want %d zeroed bytes", fi, err, preallocate)
	}
	waitSpare(l, false)
	next := fillSegment(t, l, 6, 1, preallocate-switchAt)
	if fi, err := os.Stat(seg); err != nil || fi.Size() != preallocate {
		t.Fatalf("the filled segment: %v %v, want it left at %d bytes", fi, err, preallocate)
	}
	if fi, err := os.Stat(filepath.Join(dir, segmentName(next))); err != nil || fi.Size() != preallocate || l.mu.first != next {
		t.Fatalf("segment from %d: %v %v, live segment from %d; want the spare, %d zeroed bytes", next, fi, err, l.mu.first, preallocate)
	}
	appendN(t, l, next, next+2)
	// A checkpoint's Roll to where the sync went on already has nothing
	// left to do; one further on takes the next spare.
	waitSpare(l, false)
	if err := l.Roll(next + 3); err != nil {
		t.Fatal(err)
	}
	if err := l.Roll(next + 3); err != nil || l.mu.first != next+3 {
		t.Fatalf("second Roll to %d: %v, live segment from %d", next+3, err, l.mu.first)
	}
	appendN(t, l, next+3, next+3)
	// As after kill -9: what was synced is there, read by a new Log.
	got, crashed, err := replayAll(t, dir, 0)
	if err != nil || uint64(len(got)) != next+3 || got[len(got)-1] != next+3 {
		t.Fatalf("replay across the segments without a close: %d entries, %v; want %d", len(got), err, next+3)
	}
	crashed.Close()
	l.Close()
	got, _, err = replayAll(t, dir, 0)
	if err != nil || uint64(len(got)) != next+3 || got[len(got)-1] != next+3 {
		t.Fatalf("replay across the segments: %d entries, %v; want %d", len(got), err, next+3)
	}
}

// With no spare ready, a sync grows the segment instead: the zeros land
// after the records, never over them, also when records were flushed
// past the zeros before the sync.
func TestSegmentGrownWithoutASpare(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	waitSpare(l, true)
	next := fillSegment(t, l, 1, 3, preallocate+1<<20) // past the zeros by 1 MiB of records, flushed on the way
	seg := filepath.Join(dir, segmentName(1))
	if fi, _ := os.Stat(seg); fi.Size() < l.mu.w.end()+preallocate/2 || l.mu.first != 1 {
		t.Fatalf("segment of %d bytes with records to %d, live segment from %d: not grown ahead", fi.Size(), l.mu.w.end(), l.mu.first)
	}
	l.Close()
	got, _, err := replayAll(t, dir, 0)
	if err != nil || uint64(len(got)) != next-1 || got[len(got)-1] != next-1 {
		t.Fatalf("replay of a grown segment: %d entries, %v; want %d", len(got), err, next-1)
	}
}

func TestZerosBeforeGoodRecordsAreCorruption(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 1)
	second := l.mu.w.end()
	appendN(t, l, 2, 2)
	third := l.mu.w.end()
	appendN(t, l, 3, 4)
	l.Close()
	// Record 2 wiped to zeros: it looks like the end of the records, but
	// acknowledged records follow it.
	f, _ := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_RDWR, 0)
	f.WriteAt(make([]byte, third-second), second)
	f.Close()
	if got, _, err := replayAll(t, dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay over zeros followed by records: %v %v, want ErrCorrupt", got, err)
	}
}

// emptyLog opens a new log, ready for appends.
func emptyLog(b *testing.B) *Log {
	l, err := Open(b.TempDir(), quiet())
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Replay(0, func(*namespace.Entry) error { return nil }); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkAppendSync is one namespace change made durable at a time, as a
// lone client's mkdirs are: the op log's cost per acknowledged change.
func BenchmarkAppendSync(b *testing.B) {
	l := emptyLog(b)
	defer l.Close()
	b.ResetTimer()
	for i := range b.N {
		idx := uint64(i + 1)
		if err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/bench/dir-" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
		if err := l.Sync(idx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
}

// BenchmarkSyncAcrossSegments is BenchmarkAppendSync with 1 KiB entries,
// 16 MiB of them, so that the log goes on in ~5 spare segments: new ones
// (zeroed and synced in the background while the syncs go on, as in a
// master's first checkpoint interval) or reused ones (as after that).
// Both first write 16 MiB of segments, as a checkpoint interval would;
// only reused frees them. It reports the syncs' p99 and slowest latency
// beside the rate.
func BenchmarkSyncAcrossSegments(b *testing.B) {
	long := strings.Repeat("x", 1<<10)
	const total = 16 << 20
	for _, reuse := range []bool{false, true} {
		b.Run(map[bool]string{false: "new", true: "reused"}[reuse], func(b *testing.B) {
			var lat []time.Duration
			for range b.N {
				b.StopTimer()
				l := emptyLog(b)
				idx := fillSegment(b, l, 1, total/(preallocate-switchAt)+1, preallocate-switchAt)
				if err := l.Roll(idx); err != nil {
					b.Fatal(err)
				}
				if reuse {
					if err := l.Compact(idx - 1); err != nil {
						b.Fatal(err)
					}
				}
				waitSpare(l, false)
				b.StartTimer()
				for n := 0; n < total; n += len(long) {
					if err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/" + long}); err != nil {
						b.Fatal(err)
					}
					t := time.Now()
					if err := l.Sync(idx); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t))
					idx++
				}
				b.StopTimer()
				l.Close()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "syncs/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
		})
	}
}

// BenchmarkScanForOwnRecords is the look, at a restart, for records of a
// last segment's own past where its records end: over a reused segment
// that is 3.5 MiB of older records, each offset a candidate.
func BenchmarkScanForOwnRecords(b *testing.B) {
	l := emptyLog(b)
	i := uint64(1)
	for l.mu.w.end()+int64(l.mu.w.Buffered()) < preallocate-switchAt-1024 {
		e := &namespace.Entry{Index: i, Type: namespace.OpCreate, Path: "/.bench/meta/f" + strconv.Itoa(int(i)), FileID: 16384 + i,
			Time: 1764000000000 + int64(i), Overwrite: true, Block: &namespace.Block{ID: i, GenStamp: 1000 + i}}
		if err := l.Append(e); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	name := filepath.Join(l.dir, segmentName(1))
	b.SetBytes(l.mu.w.end())
	b.ResetTimer()
	for range b.N {
		if recordAfter(name, 1, i) {
			b.Fatal("found a record at or after the last index + 1")
		}
	}
}

// Concurrent Syncs each return once their entry is in the log's file, and
// when the log's file fails, every waiting Sync gets the error instead of
// hanging for a sync that never comes.
func TestConcurrentSyncs(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	var mu sync.Mutex // the master's lock: Append is called under it
	var next uint64
	change := func() (uint64, error) {
		mu.Lock()
		next++
		idx := next
		err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/d" + strconv.Itoa(int(idx))})
		mu.Unlock()
		if err != nil {
			return idx, err
		}
		if err := l.Sync(idx); err != nil {
			return idx, err
		}
		l.wait.Lock()
		defer l.wait.Unlock()
		if l.wait.synced < idx {
			return idx, fmt.Errorf("Sync(%d) returned with %d synced", idx, l.wait.synced)
		}
		return idx, nil
	}
	inParallel := func(n int) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if _, errs[i] = change(); errs[i] != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		return errs
	}
	for _, err := range inParallel(16) {
		if err != nil {
			t.Fatal(err)
		}
	}
	// What the Syncs made durable is in the segment file itself: a copy
	// of the directory replays all of it.
	cp := t.TempDir()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(cp, e.Name()), b, 0o644)
	}
	if got, _, err := replayAll(t, cp, 0); err != nil || len(got) != 16*50 {
		t.Fatalf("replayed %d entries of %d synced: %v", len(got), 16*50, err)
	}

	l.mu.Lock()
	l.mu.w.f.Close() // the next flush fails
	l.mu.Unlock()
	for i, err := range inParallel(8) {
		if err == nil {
			t.Fatalf("writer %d: changes made durable in a closed file", i)
		}
	}
	if _, err := change(); err == nil {
		t.Fatal("a change after a failed sync was made durable")
	}
}

// BenchmarkGroupCommit is 16 writers each making one change durable at a
// time, as 16 clients' mkdirs are: the changes a second that shared syncs
// make durable.
func BenchmarkGroupCommit(b *testing.B) {
	l := emptyLog(b)
	defer l.Close()
	var mu sync.Mutex // the master's lock: Append is called under it
	var next uint64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < b.N; i += 16 {
				mu.Lock()
				next++
				idx := next
				err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/bench/dir-" + strconv.Itoa(i)})
				mu.Unlock()
				if err == nil {
					err = l.Sync(idx)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}

func TestReplayClosedLeavesTheLiveLog(t *testing.T) {
	dir := t.TempDir()
	l := twoSegments(t, dir)
	if err := l.Roll(9); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 9, 10)
	var got []uint64
	err := l.ReplayClosed(2, 8, func(e *namespace.Entry) error { got = append(got, e.Index); return nil })
	if err != nil || !slices.Equal(got, []uint64{3, 4, 5, 6, 7, 8}) {
		t.Fatalf("replay of the closed segments after 2 up to 8: %v %v", got, err)
	}
	got = nil
	if err := l.ReplayClosed(5, 8, func(e *namespace.Entry) error { got = append(got, e.Index); return nil }); err != nil || !slices.Equal(got, []uint64{6, 7, 8}) {
		t.Fatalf("replay of the closed segments after 5 up to 8: %v %v", got, err)
	}
	appendN(t, l, 11, 11) // the live log goes on
	l.Close()
	if got, _, err := replayAll(t, dir, 0); err != nil || len(got) != 11 {
		t.Fatalf("replay of the whole log: %v %v", got, err)
	}
}

// A log written before entries had a binary form holds JSON ones: they
// replay, and the binary ones appended after them too.
func TestJSONEntriesOfOlderLogsReplay(t *testing.T) {
	dir := t.TempDir()
	var seg []byte
	for i := uint64(1); i <= 3; i++ {
		payload, err := json.Marshal(&namespace.Entry{Index: i, Type: namespace.OpCreate, Path: "/f" + strconv.Itoa(int(i)),
			FileID: 16384 + i, Block: &namespace.Block{ID: i, GenStamp: 1000}, Time: -1, Overwrite: true})
		if err != nil {
			t.Fatal(err)
		}
		seg = binary.BigEndian.AppendUint32(seg, uint32(len(payload)))
		seg = binary.BigEndian.AppendUint32(seg, crc32.Checksum(payload, castagnoli))
		seg = append(seg, payload...)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg, 0o644); err != nil {
		t.Fatal(err)
	}
	_, l, err := replayAll(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 4, 5)
	l.Close()
	l, err = Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []namespace.Entry
	if err := l.Replay(0, func(e *namespace.Entry) error { got = append(got, *e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("replayed %d entries, want 5: %+v", len(got), got)
	}
	for i, e := range got[:3] {
		if want := uint64(i + 1); e.Index != want || e.Path != "/f"+strconv.Itoa(i+1) || e.FileID != 16384+want ||
			e.Block == nil || e.Block.ID != want || e.Time != -1 || !e.Overwrite {
			t.Fatalf("JSON entry %d replayed as %+v", i+1, e)
		}
	}
	if got[3].Index != 4 || got[3].Path != "/d" || got[4].Index != 5 {
		t.Fatalf("binary entries after JSON ones: %+v %+v", got[3], got[4])
	}
}

// A Roll takes the segment made ready in the background and starts the
// next; a spare left by a crash is never replayed as part of the log.
func TestRollTakesTheSpareSegment(t *testing.T) {
	dir := t.TempDir()
	// A leftover spare with a record in it, as if the log had been
	// appended to it: it must not be read as entries.
	var rec []byte
	payload, _ := (&namespace.Entry{Index: 99, Type: namespace.OpMkdir, Path: "/ghost"}).AppendBinary(nil)
	rec = binary.BigEndian.AppendUint32(rec, uint32(len(payload)))
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(payload, castagnoli))
	if err := os.WriteFile(filepath.Join(dir, spareName), append(rec, payload...), 0o644); err != nil {
		t.Fatal(err)
	}
	got, l, err := replayAll(t, dir, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("replay with a leftover spare: %v %v", got, err)
	}
	for round := uint64(0); round < 3; round++ {
		first := 1 + round*5
		appendN(t, l, first, first+4)
		if err := l.Roll(first + 5); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(dir, segmentName(first+5))); err != nil || fi.Size() != preallocate {
			t.Fatalf("rolled-to segment: %v %v, want %d zeroed bytes", fi, err, preallocate)
		}
	}
	appendN(t, l, 16, 17)
	l.Close()
	got, l, err = replayAll(t, dir, 0)
	if err != nil || len(got) != 17 || got[16] != 17 {
		t.Fatalf("replay after rolls: %v %v", got, err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, spareName)); err != nil {
		t.Fatalf("no spare segment made ready after the last roll: %v", err)
	}
}

// reusedSegment opens a new log in dir whose live segment, from 302, is
// the reused file of the one that held 200-299 (freed by a checkpoint),
// with entries 302-306 in it and the old records after them: record
// 205 starts where 306 ends.
func reusedSegment(t *testing.T, dir string) *Log {
	t.Helper()
	_, l, _ := replayAll(t, dir, 0)
	appendN(t, l, 1, 199)
	roll := func(next uint64) {
		t.Helper()
		if err := l.Roll(next); err != nil {
			t.Fatal(err)
		}
	}
	roll(200)
	appendN(t, l, 200, 299) // indices as long as 302's, so old records line up with new ones
	roll(300)
	old, err := os.Stat(filepath.Join(dir, segmentName(200)))
	if err != nil {
		t.Fatal(err)
	}
	oldRecords, err := os.ReadFile(filepath.Join(dir, segmentName(200)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(299); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 300, 300)
	roll(301) // takes the spare made before the compaction; the next is a free one
	appendN(t, l, 301, 301)
	roll(302)
	if now, err := os.Stat(filepath.Join(dir, segmentName(302))); err != nil || !os.SameFile(old, now) {
		t.Fatalf("segment from 302 (%v) is not the file that held 200-299", err)
	}
	appendN(t, l, 302, 306)
	// The sync wrote zeros after 306 to the end of its page (see
	// pageWriter); one that ends on a page boundary leaves the old
	// records right after the new ones: put them back as such a sync
	// leaves them.
	end := l.mu.w.end()
	pageEnd := (end + datasync.PageSize - 1) &^ (datasync.PageSize - 1)
	f, err := os.OpenFile(filepath.Join(dir, segmentName(302)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(oldRecords[end:pageEnd], end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, _ := os.ReadFile(filepath.Join(dir, segmentName(302)))
	var e namespace.Entry
	if size := binary.BigEndian.Uint32(b[l.mu.w.end():]); decodeEntry(b[l.mu.w.end()+8:][:size], &e) != nil || e.Index != 205 {
		t.Fatalf("after the new records: entry %d, want the old 205", e.Index)
	}
	return l
}

// wantReplay replays the log in dir after index after, wants entries
// from to to and returns the log, open for appending.
func wantReplay(t *testing.T, dir string, after, from, to uint64, what string) *Log {
	t.Helper()
	got, l, err := replayAll(t, dir, after)
	var want []uint64
	for i := from; i <= to; i++ {
		want = append(want, i)
	}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("replay %s: %v %v, want %d-%d", what, got, err, from, to)
	}
	return l
}

// A checkpoint's covered segments are reused; replay reads a reused
// one's new records and stops at its old ones, in the last segment and
// in one before it, after a crash and after a close.
func TestCompactedSegmentsAreReused(t *testing.T) {
	dir := t.TempDir()
	l := reusedSegment(t, dir)
	wantReplay(t, dir, 299, 300, 306, "without a close").Close()
	if err := l.Roll(307); err != nil { // the reused segment is now one before the last
		t.Fatal(err)
	}
	appendN(t, l, 307, 308)
	l.Close()
	l = wantReplay(t, dir, 299, 300, 308, "after a close")
	appendN(t, l, 309, 310)
	l.Close()
	wantReplay(t, dir, 299, 300, 310, "after appending to the replayed log")
}

// A torn last record in a reused segment is cut off like one in a new
// segment: the old records after it are not the segment's own.
func TestTornRecordInAReusedSegmentIsCutOff(t *testing.T) {
	dir := t.TempDir()
	l := reusedSegment(t, dir)
	end := l.mu.w.end()
	l.Close()
	f, _ := os.OpenFile(filepath.Join(dir, segmentName(302)), os.O_RDWR, 0)
	f.WriteAt([]byte{0xde, 0xad, 0xbe}, end-3)
	f.Close()
	l = wantReplay(t, dir, 299, 300, 305, "of a torn reused segment")
	appendN(t, l, 306, 307)
	l.Close()
	wantReplay(t, dir, 299, 300, 307, "after appending past the torn record")
}

// A bad record in a reused segment with the segment's own records after
// it is damage, not the end of its records.
func TestDamageInAReusedSegmentRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	reusedSegment(t, dir).Close()
	seg := filepath.Join(dir, segmentName(302))
	b, _ := os.ReadFile(seg)
	b[30] ^= 0xff // inside record 302 or 303
	os.WriteFile(seg, b, 0o644)
	if got, _, err := replayAll(t, dir, 299); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay over a damaged reused segment: %v %v, want ErrCorrupt", got, err)
	}
}

// Compact keeps at most maxFree freed segments and removes the others;
// the kept ones outlast a restart and are reused after it.
func TestCompactKeepsAtMostMaxFree(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	l.maxFree = 2
	for first := uint64(1); first <= 7; first += 2 {
		appendN(t, l, first, first+1)
		if err := l.Roll(first + 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Compact(8); err != nil { // covers the segments from 1, 3, 5 and 7
		t.Fatal(err)
	}
	l.Close()
	free, _ := filepath.Glob(filepath.Join(dir, freePrefix+"*"))
	segs, _ := filepath.Glob(filepath.Join(dir, "log-*"))
	if len(free) != 2 || len(segs) != 1 || filepath.Base(segs[0]) != segmentName(9) {
		t.Fatalf("after compacting 4 of 5 segments with room for 2: free %v, segments %v", free, segs)
	}
	var kept []os.FileInfo
	for _, name := range free {
		fi, _ := os.Stat(name)
		kept = append(kept, fi)
	}
	l = wantReplay(t, dir, 8, 9, 8, "after the compaction")
	appendN(t, l, 9, 10)
	if err := l.Roll(11); err != nil {
		t.Fatal(err)
	}
	live, _ := os.Stat(filepath.Join(dir, segmentName(11)))
	if !slices.ContainsFunc(kept, func(fi os.FileInfo) bool { return os.SameFile(fi, live) }) {
		t.Fatal("the first roll after a restart did not take a kept free segment")
	}
	appendN(t, l, 11, 12)
	l.Close()
	wantReplay(t, dir, 8, 9, 12, "through the reused segment")
}

// A segment that ends before the next one starts, or a log that starts
// after the checkpoint's next entry, has lost entries.
func TestGapInTheLogRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	l := twoSegments(t, dir) // 1-5, 6-8
	l.Close()
	seg := filepath.Join(dir, segmentName(1))
	b, _ := os.ReadFile(seg)
	var off int64
	for range 4 {
		off += 8 + int64(binary.BigEndian.Uint32(b[off:]))
	}
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	f.WriteAt(make([]byte, len(b)-int(off)), off) // record 5 gone, zeros in its place
	f.Close()
	if got, _, err := replayAll(t, dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay of a segment ending at 4 before one from 6: %v %v, want ErrCorrupt", got, err)
	}
	os.Remove(seg)
	if got, _, err := replayAll(t, dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay of a log from 6 after a checkpoint at 0: %v %v, want ErrCorrupt", got, err)
	}
}

// A spare left by a crash may hold records appended to it, with indices
// above where the log starts again: it is never reused as it is.
func TestLeftoverSpareIsNotReused(t *testing.T) {
	dir := t.TempDir()
	reusedSegment(t, dir).Close()
	payload, _ := (&namespace.Entry{Index: 5000, Type: namespace.OpMkdir, Path: "/ghost"}).AppendBinary(nil)
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(payload, castagnoli))
	f, err := os.OpenFile(filepath.Join(dir, spareName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(append(rec, payload...), 1<<20)
	f.Close()
	_, l, err := replayAll(t, dir, 299)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Roll(307); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 307, 310)
	l.Close()
	wantReplay(t, dir, 299, 300, 310, "after a roll to the spare")
}

// On a full disk the log refuses changes (Ready) before the room its
// segment has runs out, loses none it took, and takes changes again once
// space is freed, without a restart.
func TestFullDiskRefusesChangesThenRecovers(t *testing.T) {
	dir := smalldisk.New(t, 24<<20)
	_, l, err := replayAll(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitSpare(l, false)
	filler := smalldisk.Fill(t, dir)
	long := strings.Repeat("x", 1000)
	idx := uint64(1)
	for ; ; idx++ {
		err := l.Ready()
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("entry %d: %v", idx, err)
		}
		if idx > 20<<10 { // 20 MiB of entries: more than the disk holds
			t.Fatalf("entry %d: the log never refused a change", idx)
		}
		if err := l.Append(&namespace.Entry{Index: idx, Type: namespace.OpMkdir, Path: "/" + long}); err != nil {
			t.Fatalf("append %d: %v", idx, err)
		}
		if err := l.Sync(idx); err != nil {
			t.Fatalf("sync %d: %v", idx, err)
		}
	}
	// It went on in the spare made before the disk filled, then in what
	// that one had zeroed ahead, about 7.5 MiB of entries.
	t.Logf("refused at entry %d", idx)
	if idx < 7000 {
		t.Errorf("refused at entry %d, want it to have used the room it had", idx)
	}
	if err := l.Ready(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Ready on a full disk again: %v, want ErrNoSpace", err)
	}
	// It opens on the full disk, with what it had.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, l, err := replayAll(t, dir, 0)
	if err != nil || len(got) != int(idx-1) {
		t.Fatalf("reopened on a full disk: %d entries, %v; want %d", len(got), err, idx-1)
	}
	if err := l.Ready(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Ready after opening on a full disk: %v, want ErrNoSpace", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := l.Ready(); err != nil {
		t.Fatalf("Ready once space is freed: %v", err)
	}
	appendN(t, l, idx, idx+99)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _, err = replayAll(t, dir, 0); err != nil {
		t.Fatal(err)
	}
	if want := idx + 99; len(got) != int(want) || got[len(got)-1] != want {
		t.Fatalf("replayed %d entries ending at %v, want 1-%d", len(got), got[len(got)-1:], want)
	}
}

// A checkpoint that finds the disk full leaves no half-written file to
// hold the space the next try needs.
func TestCheckpointOnAFullDiskLeavesNothing(t *testing.T) {
	dir := smalldisk.New(t, 4<<20)
	tree := namespace.New("root", "supergroup", 0)
	for i := uint64(1); i <= 2000; i++ {
		if _, err := tree.Apply(&namespace.Entry{Index: i, Type: namespace.OpMkdir, Path: "/" + strings.Repeat("d", 200) + strconv.Itoa(int(i))}); err != nil {
			t.Fatal(err)
		}
	}
	filler := smalldisk.Fill(t, dir)
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-64<<10); err != nil { // room for some of it
		t.Fatal(err)
	}
	if err := SaveCheckpoint(dir, tree, nil); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("checkpoint on a full disk: %v, want ENOSPC", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*checkpoint*")); len(names) > 0 {
		t.Fatalf("left %v", names)
	}
	os.Remove(filler)
	if err := SaveCheckpoint(dir, tree, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDropFreeGivesTheirSpaceBack(t *testing.T) {
	dir := t.TempDir()
	_, l, _ := replayAll(t, dir, 0)
	for i := uint64(1); i <= 3; i++ {
		appendN(t, l, i, i)
		if err := l.Roll(i + 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Compact(3); err != nil {
		t.Fatal(err)
	}
	free, _ := filepath.Glob(filepath.Join(dir, freePrefix+"*"))
	if len(free) != 3 {
		t.Fatalf("free segments %v, want 3", free)
	}
	if n := l.DropFree(); n < 3*preallocate {
		t.Fatalf("DropFree freed %d bytes, want at least %d", n, 3*preallocate)
	}
	if free, _ = filepath.Glob(filepath.Join(dir, freePrefix+"*")); len(free) != 0 {
		t.Fatalf("left %v", free)
	}
	appendN(t, l, 4, 4) // the log goes on
}
