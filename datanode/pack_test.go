package datanode

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/godfs/godfs/internal/datasync"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "current", "packs", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// spareMade waits until the spare pack each volume is making, if any, is
// on disk: it is made in the background, and a count of pack files taken
// before its goroutine ran found one too few.
func spareMade(s *store) {
	for _, v := range s.vols {
		l := v.packs
		if l == nil {
			continue
		}
		l.mu.Lock()
		if l.spare != nil {
			res := <-l.spare
			l.spare = make(chan spareResult, 1)
			l.spare <- res // left for the next pack switch as it was
		}
		l.mu.Unlock()
	}
}

func randomData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// reopenStore closes s and opens its directory again, as a restart does.
func reopenStore(t *testing.T, s *store, dir string) *store {
	t.Helper()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s2, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

// TestPackedReplicas: replicas of at most packMax bytes are records in a
// pack, not files; they are read back, indexed at start, deleted, and a
// pack no record is written to any more goes once its records are gone.
func TestPackedReplicas(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{1: {}, 2: randomData(1), 3: randomData(4096 + 100), 4: randomData(packMax)}
	for id, data := range want {
		writeReplica(t, s, id, data)
	}
	if got := finalizedFiles(t, dir); len(got) != 0 {
		t.Fatalf("small replicas made files: %v", got)
	}
	spareMade(s)
	if n := len(packFiles(t, dir)); n != 2 {
		t.Fatalf("%d pack files, want the one in use and its spare", n)
	}
	for id, data := range want {
		if got := readAll(t, s, id); !bytes.Equal(got, data) {
			t.Fatalf("block %d read back differs", id)
		}
	}
	if removed, err := s.remove(2, 1001); !removed || err != nil {
		t.Fatalf("remove: %v %v", removed, err)
	}
	delete(want, 2)

	s = reopenStore(t, s, dir)
	if _, n := s.usage(); n != len(want) {
		t.Fatalf("%d replicas indexed after restart, want %d", n, len(want))
	}
	if _, ok := s.get(2); ok {
		t.Fatal("a deleted packed replica is back after restart")
	}
	for id, data := range want {
		r, ok := s.get(id)
		if !ok || r.pack == nil || r.length != int64(len(data)) {
			t.Fatalf("block %d after restart: %+v %v", id, r, ok)
		}
		if got := readAll(t, s, id); !bytes.Equal(got, data) {
			t.Fatalf("block %d read back differs after restart", id)
		}
	}
	if n := len(packFiles(t, dir)); n != 1 {
		t.Fatalf("%d pack files after restart, want 1 (the empty spare removed)", n)
	}
	for id := range want {
		if removed, err := s.remove(id, 1001); !removed || err != nil {
			t.Fatalf("remove %d: %v %v", id, removed, err)
		}
	}
	if names := packFiles(t, dir); len(names) != 0 {
		t.Fatalf("packs left once every record in them was deleted: %v", names)
	}
}

// TestPackTornRecord: a record whose data did not reach the disk before
// a crash (never acknowledged) is dropped at start, with what follows it,
// and cut from the pack; the records before it stay.
// Packed replicas are read into pooled buffers: readers at once each get
// their own replica's bytes, and a reader closed twice gives its buffer
// back once (twice, two later readers would share it).
func TestPackedReadersAtOnce(t *testing.T) {
	s, err := testStore(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{}
	for id := uint64(1); id <= 40; id++ {
		want[id] = randomData(int(id) * 300)
		writeReplica(t, s, id, want[id])
	}
	rr, err := s.open(7)
	if err != nil {
		t.Fatal(err)
	}
	rr.Close()
	rr.Close()
	t.Run("readers", func(t *testing.T) {
		for g := range 8 {
			t.Run(fmt.Sprint(g), func(t *testing.T) {
				t.Parallel()
				for i := range 200 {
					id := uint64((g*31+i*7)%40 + 1)
					rr, err := s.open(id)
					if err != nil {
						t.Fatal(err)
					}
					got := make([]byte, rr.length)
					sums := make([]byte, xfer.NumChunks(rr.length)*protocol.ChecksumSize)
					err = rr.readChunks(0, got, sums)
					rr.Close()
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want[id]) || !bytes.Equal(sums, xfer.ChunkSums(xfer.CRC32C, nil, want[id])) {
						t.Fatalf("block %d: read another replica's bytes", id)
					}
				}
			})
		}
	})
}

func TestPackTornRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := randomData(3000), randomData(5000), randomData(700)
	writeReplica(t, s, 1, a)
	writeReplica(t, s, 2, b)
	writeReplica(t, s, 3, c)
	torn, _ := s.get(2)
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(torn.pack.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 512), torn.off+recordSize(torn.length)-512) // its last 512 bytes never written
	f.Close()

	s, err = testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 1); !bytes.Equal(got, a) {
		t.Fatal("the record before the torn one was lost")
	}
	for _, id := range []uint64{2, 3} {
		if _, ok := s.get(id); ok {
			t.Fatalf("block %d, torn or after the torn record, was indexed", id)
		}
	}
	if fi, err := os.Stat(torn.pack.path); err != nil || fi.Size() != torn.off {
		t.Fatalf("pack not cut at the torn record (%d): %v %v", torn.off, fi.Size(), err)
	}
	// Later starts, with a newer pack in use, find the same.
	writeReplica(t, s, 4, c)
	s = reopenStore(t, s, dir)
	if _, ok := s.get(2); ok {
		t.Fatal("the torn record came back")
	}
	if got := readAll(t, s, 4); !bytes.Equal(got, c) {
		t.Fatal("record in the newer pack lost")
	}
}

// TestPackRecordsAtOnce: writers finishing at once share fdatasyncs and
// fill more than one pack; every replica is read back, then after a
// restart, and the packs go once all are deleted.
func TestPackRecordsAtOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40 // 320 replicas of 64 KiB: 20 MiB, two packs
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint64(g*each + i + 1)
				data := bytes.Repeat([]byte{byte(id)}, packMax)
				w, err := s.create(id, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
				if err == nil {
					err = w.write(data, xfer.ChunkSums(xfer.CRC32C, nil, data))
				}
				if err == nil {
					err = w.finish()
				}
				if err != nil {
					errs <- fmt.Errorf("block %d: %w", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(s *store) {
		t.Helper()
		for id := uint64(1); id <= writers*each; id++ {
			if got := readAll(t, s, id); !bytes.Equal(got, bytes.Repeat([]byte{byte(id)}, packMax)) {
				t.Fatalf("block %d read back differs", id)
			}
		}
	}
	check(s)
	spareMade(s)
	if n := len(packFiles(t, dir)); n < 3 {
		t.Fatalf("%d pack files for 20 MiB of records, want at least two and a spare", n)
	}
	s = reopenStore(t, s, dir)
	check(s)
	for id := uint64(1); id <= writers*each; id++ {
		if removed, err := s.remove(id, 0); !removed || err != nil {
			t.Fatalf("remove %d: %v %v", id, removed, err)
		}
	}
	if names := packFiles(t, dir); len(names) != 0 {
		t.Fatalf("packs left: %v", names)
	}
}

// TestPackedReplicaBeingWritten: a small replica being written is read
// from the writer's memory, and again once it outgrew packMax and went
// to a file.
func TestPackedReplicaBeingWritten(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	data := randomData(packMax + 4096)
	w, err := s.create(7, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 7); len(got) != 0 {
		t.Fatalf("read %d bytes of a replica with none", len(got))
	}
	first := data[:1536]
	if err := w.write(first, xfer.ChunkSums(xfer.CRC32C, nil, first)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 7); !bytes.Equal(got, first) {
		t.Fatalf("read %d bytes of the replica in memory, want %d", len(got), len(first))
	}
	if w.data != nil {
		t.Fatal("a replica of 1536 bytes went to a file")
	}
	rest := data[1536:]
	if err := w.write(rest, xfer.ChunkSums(xfer.CRC32C, nil, rest)); err != nil {
		t.Fatal(err)
	}
	if w.data == nil {
		t.Fatal("a replica beyond packMax is still in memory")
	}
	if got := readAll(t, s, 7); !bytes.Equal(got, data) {
		t.Fatal("replica read back wrong after it went to a file")
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.get(7); r.pack != nil || !r.inline {
		t.Fatalf("finished replica of %d bytes: %+v, want a one-file replica", len(data), r)
	}
}

// TestReopenPackedReplica: pipeline recovery takes a packed replica back
// into memory, cut to what was acknowledged; the finished replica is a new
// record under the new generation stamp, and the old one is gone, also
// after a restart.
func TestReopenPackedReplica(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	data := randomData(3000)
	writeReplica(t, s, 9, data)
	w, err := s.reopen(9, 1001, 1002, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 9); !bytes.Equal(got, data[:1024]) {
		t.Fatal("reopened replica read wrong before more was written")
	}
	more := randomData(700)
	if err := w.write(more, xfer.ChunkSums(xfer.CRC32C, nil, more)); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data[:1024]...), more...)
	for range 2 {
		r, ok := s.get(9)
		if !ok || r.genStamp != 1002 || r.pack == nil {
			t.Fatalf("recovered replica: %+v %v", r, ok)
		}
		if got := readAll(t, s, 9); !bytes.Equal(got, want) {
			t.Fatal("reopened replica read back wrong")
		}
		s = reopenStore(t, s, dir)
	}
}

// TestQuarantinePackedReplica: a corrupt packed replica leaves the index
// and is kept in corrupt/ as a one-file replica.
func TestQuarantinePackedReplica(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	data := randomData(2500)
	writeReplica(t, s, 5, data)
	if ok, err := s.quarantine(5, 1001); !ok || err != nil {
		t.Fatalf("quarantine: %v %v", ok, err)
	}
	if _, ok := s.get(5); ok {
		t.Fatal("quarantined replica still indexed")
	}
	name := inlineFileName(5, 1001)
	b, err := os.ReadFile(filepath.Join(dir, "current", "corrupt", name))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := BlockBytes(name, int64(len(b))); !ok || !bytes.Equal(b[:n], data) {
		t.Fatal("the quarantined copy does not hold the replica")
	}
	s = reopenStore(t, s, dir)
	if _, ok := s.get(5); ok {
		t.Fatal("quarantined replica back after restart")
	}
}

// TestScannerFindsDamagedRecord: a packed replica whose data or header
// changed on disk is corrupt to the scanner.
func TestScannerFindsDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	d := &DataNode{store: s}
	for i, at := range []int64{recordHeaderSize + 4 + 100, 9} { // a data byte (one chunk's sum first), the block id
		id := uint64(20 + i)
		writeReplica(t, s, id, randomData(300))
		if _, err := d.verifyReplica(id, 1001); err != nil {
			t.Fatalf("intact record: %v", err)
		}
		r, _ := s.get(id)
		f, err := os.OpenFile(r.pack.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, r.off+at)
		b[0] ^= 0x40
		f.WriteAt(b, r.off+at)
		f.Close()
		if _, err := d.verifyReplica(id, 1001); !errors.Is(err, protocol.ErrCorruption) {
			t.Fatalf("record damaged at %d: %v, want corruption", at, err)
		}
	}
}

// TestPackCompaction: once most records of a pack no record goes to any
// more are deleted, the rest are copied to the pack in use and the old
// pack is removed; every replica left reads back, also after a restart.
func TestPackCompaction(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.vols[0].packs.compactDelay = 0
	content := func(id uint64) []byte { return bytes.Repeat([]byte{byte(id), byte(id >> 8)}, packMax/2) }
	const n = 300 // 64 KiB each: the first pack fills, the rest go to a second
	for id := uint64(1); id <= n; id++ {
		writeReplica(t, s, id, content(id))
	}
	first, _ := s.get(1)
	kept := map[uint64]bool{}
	for id := uint64(1); id <= n; id++ {
		if r, _ := s.get(id); r.pack != first.pack || id%10 == 0 { // a tenth of the first pack stays
			kept[id] = true
		}
	}
	// Readers of records that stay go on while the records move.
	stop := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(failed)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := uint64(10 * (1 + i%20))
			rr, err := s.open(id)
			if err != nil {
				failed <- fmt.Errorf("open %d while records moved: %w", id, err)
				return
			}
			rr.Close()
		}
	}()
	for id := uint64(1); id <= n; id++ {
		if kept[id] {
			continue
		}
		if removed, err := s.remove(id, 0); !removed || err != nil {
			t.Fatalf("remove %d: %v %v", id, removed, err)
		}
	}
	s.bg.Wait() // the compaction
	close(stop)
	if err := <-failed; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.pack.path); !os.IsNotExist(err) {
		t.Fatalf("the sparse pack is still there: %v", err)
	}
	for range 2 {
		if _, n := s.usage(); n != len(kept) {
			t.Fatalf("%d replicas indexed, want %d", n, len(kept))
		}
		for id := range kept {
			r, _ := s.get(id)
			if r.pack == first.pack {
				t.Fatalf("block %d still in the compacted pack", id)
			}
			if got := readAll(t, s, id); !bytes.Equal(got, content(id)) {
				t.Fatalf("block %d read back differs", id)
			}
		}
		s = reopenStore(t, s, dir)
	}
}

// A record is written with zeros to the end of its last page, so that the
// write covers that page whole, but never past the pack's end; built in a
// used pooled buffer too.
func TestRecordIsWrittenToItsPageEnd(t *testing.T) {
	dirty := bytes.Repeat([]byte{0xFF}, int(recordSize(packMax))+datasync.PageSize)
	for _, c := range []struct {
		length  int
		off     int64
		wantEnd int64
	}{
		{4096, 0, 2 * datasync.PageSize},                     // header, sums and data pass one page
		{100, 10, datasync.PageSize},                         // within a page
		{4096, datasync.PageSize - 5, 3 * datasync.PageSize}, // from a page's end
		{4096, packSize - recordSize(4096), packSize},
	} {
		for _, buf := range [][]byte{nil, dirty} {
			rec := record(buf, 1, 2, 0, make([]byte, 32), bytes.Repeat([]byte{9}, c.length))
			out := padToPage(rec, c.off)
			if got := c.off + int64(len(out)); got != c.wantEnd {
				t.Errorf("record of %d bytes at %d written to %d, want %d", len(rec), c.off, got, c.wantEnd)
			}
			if !bytes.Equal(out[:len(rec)], rec) || bytes.ContainsFunc(out[len(rec):], func(r rune) bool { return r != 0 }) {
				t.Errorf("record at %d (in a used buffer: %v): not the record then zeros", c.off, buf != nil)
			}
		}
	}
}
