package datanode

import (
	"bytes"
	"crypto/rand"
	"errors"
	"github.com/godfs/godfs/internal/datasync"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godfs/godfs/internal/smalldisk"
	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

func writeReplica(t *testing.T, s *store, id uint64, data []byte) {
	t.Helper()
	w, err := s.create(id, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += protocol.MaxPacketData {
		chunk := data[off:min(off+protocol.MaxPacketData, len(data))]
		if err := w.write(chunk, xfer.ChunkSums(xfer.CRC32C, nil, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
}

func TestStoreWriteReadRemove(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 200000)
	rand.Read(data)
	writeReplica(t, s, 42, data)
	if _, err := s.create(42, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C); !errors.Is(err, ErrReplicaExists) {
		t.Fatalf("second create: %v", err)
	}
	rr, err := s.open(42)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1024)
	sums := make([]byte, 8)
	if err := rr.readChunks(1024, got, sums); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[1024:2048]) || xfer.VerifyChunks(rr.tab, got, sums, 2) != nil {
		t.Fatal("read back differs or fails its checksums")
	}
	rr.Close()

	// Reopening indexes the finalized replica; an unfinished one is gone.
	w, _ := s.create(43, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	w.write(data[:512], xfer.ChunkSums(xfer.CRC32C, nil, data[:512]))
	s2, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := s2.get(42); !ok || r.length != int64(len(data)) {
		t.Fatalf("replica 42 after reopen: %+v %v", r, ok)
	}
	if _, ok := s2.get(43); ok {
		t.Fatal("unfinished replica survived a restart")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "current", "rbw")); len(ents) != 0 {
		t.Fatalf("rbw not cleared: %v", ents)
	}
	// A newer generation stamp is not deleted by an old request.
	if removed, _ := s2.remove(42, 1000); removed {
		t.Fatal("removed a replica newer than the request")
	}
	if removed, err := s2.remove(42, 1001); !removed || err != nil {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if used, n := s2.usage(); used != 0 || n != 0 {
		t.Fatalf("usage after remove: %d bytes, %d replicas", used, n)
	}
}

// TestStoreOpenWhileMoving opens a replica for reading while it is being
// finalized and reopened for recovery, moving its files between rbw/ and
// finalized/: every open finds them (a pipeline recovery's TRANSFER_BLOCK
// once failed this way).
func TestStoreOpenWhileMoving(t *testing.T) {
	s, err := testStore(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4096)
	rand.Read(data)
	sums := xfer.ChunkSums(xfer.CRC32C, nil, data)
	w, err := s.create(7, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(data, sums); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(failed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			rr, err := s.open(7)
			if err != nil {
				failed <- err
				return
			}
			rr.Close()
		}
	}()
	gs := uint64(1001)
	for i := 0; i < 200; i++ {
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		if w, err = s.reopen(7, gs, gs+1, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		gs++
	}
	close(stop)
	if err := <-failed; err != nil {
		t.Fatalf("open while the replica moved: %v", err)
	}
}

// TestStoreOpenIndexesWhatIsOnDisk checks the start-up scan: replicas in
// nested directories are found in both layouts, the newest generation
// stamp of a block wins, and a meta file without its data, a one-file
// replica of a size no replica has, or a stray file is no replica.
func TestStoreOpenIndexesWhatIsOnDisk(t *testing.T) {
	dir := t.TempDir()
	fin := filepath.Join(dir, "current", "finalized")
	put := func(rel string, size int) {
		t.Helper()
		p := filepath.Join(fin, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("subdir1/blk_7", 100)
	put("subdir1/blk_7_1001.meta", 15)
	put("subdir1/blk_7_1003.meta", 15)
	put("subdir2/subdir9/blk_8", 300)
	put("subdir2/subdir9/blk_8_1002.meta", 15)
	put("subdir3/blk_9_1001.meta", 15) // no data
	put("subdir3/blk_x_1.meta", 15)
	put("subdir3/notes.txt", 5)
	put("subdir4/blk_10_1001.block", int(inlineSize(1000)))
	// Two full chunks and their sums, then 2 bytes: less than a chunk and its sum.
	put("subdir4/blk_11_1001.block", metaHeaderSize+2*(protocol.BytesPerChecksum+protocol.ChecksumSize)+2)
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if used, n := s.usage(); n != 3 || used != 1400 {
		t.Fatalf("indexed %d replicas of %d bytes, want 3 of 1400", n, used)
	}
	if r, ok := s.get(10); !ok || !r.inline || r.length != 1000 {
		t.Fatalf("block 10: %+v %v, want one file of 1000 bytes", r, ok)
	}
	if r, ok := s.get(7); !ok || r.genStamp != 1003 || r.length != 100 {
		t.Fatalf("block 7: %+v %v, want stamp 1003, 100 bytes", r, ok)
	}
	if r, ok := s.get(8); !ok || r.genStamp != 1002 || r.length != 300 {
		t.Fatalf("block 8: %+v %v, want stamp 1002, 300 bytes", r, ok)
	}
}

// testStore opens a store on dirs that is closed when the test ends,
// before its directories are removed.
func testStore(t testing.TB, dirs ...string) (*store, error) {
	return reservingStore(t, 0, dirs...)
}

// reservingStore is testStore leaving reserved bytes of each volume free.
func reservingStore(t testing.TB, reserved int64, dirs ...string) (*store, error) {
	s, err := openStore(dirs, reserved)
	if err == nil {
		t.Cleanup(func() { s.close() })
	}
	return s, err
}

// A volume whose disk is full takes no new replicas while another has
// room; with every volume full, create says so at once (ENOSPC, with each
// volume's free space), and takes replicas again once space is freed.
func TestFullVolumesArePassedBy(t *testing.T) {
	roomy, full := t.TempDir(), smalldisk.New(t, 40<<20)
	s, err := testStore(t, full, roomy)
	if err != nil {
		t.Fatal(err)
	}
	filler := smalldisk.Fill(t, full)
	for _, v := range s.vols {
		v.statfs() // what the next creates see, without waiting for spaceAge
	}
	data := make([]byte, 100<<10) // not packed: a file of its own
	for id := uint64(1); id <= 4; id++ {
		writeReplica(t, s, id, data)
		if r, _ := s.get(id); filepath.Dir(r.dir.root) != roomy {
			t.Fatalf("replica %d went to %s, a full volume", id, r.dir.root)
		}
	}
	if _, free := s.capacity(); free == 0 {
		t.Fatal("no free space reported with one volume roomy")
	}

	full = smalldisk.New(t, 40<<20)
	only, err := testStore(t, full)
	if err != nil {
		t.Fatal(err)
	}
	filler = smalldisk.Fill(t, full)
	if _, free := only.capacity(); free != 0 {
		t.Errorf("a full volume reported %d bytes free for replicas", free)
	}
	_, err = only.create(9, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), full) {
		t.Fatalf("create on a full volume: %v, want ENOSPC naming it", err)
	}
	os.Remove(filler)
	only.vols[0].statfs()
	writeReplica(t, only, 9, data)
}

// A volume whose directory is gone fails its check: its replicas leave the
// index (returned, to be reported), and new ones go to the others.
func TestFailedVolumeIsTakenOutOfService(t *testing.T) {
	good, bad := t.TempDir(), t.TempDir()
	s, err := testStore(t, good, bad)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 100<<10)
	for id := uint64(1); id <= 4; id++ {
		writeReplica(t, s, id, data)
	}
	if lost, failed := s.checkVolumes(); len(lost)+len(failed) != 0 {
		t.Fatalf("working volumes: lost %v, failed %v", lost, failed)
	}
	// One replica on each volume is being written when the disk goes.
	var writing []*replicaWriter
	for id := uint64(100); id <= 101; id++ {
		w, err := s.create(id, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		if err == nil {
			err = w.write(data, xfer.ChunkSums(xfer.CRC32C, nil, data))
		}
		if err != nil {
			t.Fatal(err)
		}
		writing = append(writing, w)
	}
	if err := os.RemoveAll(filepath.Join(bad, "current")); err != nil {
		t.Fatal(err)
	}
	for _, w := range writing {
		err := w.finish()
		if onBad := filepath.Dir(w.v.root) == bad; onBad == (err == nil) {
			t.Fatalf("finishing replica %d (on the vanished volume: %v): %v", w.id, onBad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(bad, "current")); err == nil {
		t.Fatal("finishing a replica made the vanished volume's directories again")
	}
	lost, failed := s.checkVolumes()
	if len(lost) != 2 || failed[bad] == nil || len(failed) != 1 {
		t.Fatalf("lost %v, failed %v; want the 2 finished replicas on %s", lost, failed, bad)
	}
	for _, b := range lost {
		if _, ok := s.get(b.ID); ok {
			t.Errorf("replica %d of the failed volume is still indexed", b.ID)
		}
	}
	if lost, failed := s.checkVolumes(); len(lost)+len(failed) != 0 {
		t.Fatalf("a failed volume checked again: lost %v, failed %v", lost, failed)
	}
	for id := uint64(5); id <= 8; id++ {
		writeReplica(t, s, id, data) // to the good volume only
		if r, _ := s.get(id); filepath.Dir(r.dir.root) != good {
			t.Fatalf("replica %d went to %s", id, r.dir.root)
		}
	}
}

// Reserved space is not offered to the master nor taken by replicas.
func TestReservedSpaceIsLeftFree(t *testing.T) {
	dir := smalldisk.New(t, 64<<20)
	s, err := reservingStore(t, 32<<20, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, free, err := s.vols[0].statfs()
	if err != nil {
		t.Fatal(err)
	}
	if _, offered := s.capacity(); offered != free-(32<<20)-fullBelow {
		t.Fatalf("offered %d of %d free bytes, want all but the 32 MiB reserved and the %d kept for a pack", offered, free, fullBelow)
	}
	data := make([]byte, 1<<20)
	id := uint64(1)
	for ; id < 64; id++ {
		s.vols[0].statfs() // what the next create sees
		w, err := s.create(id, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write(data, xfer.ChunkSums(xfer.CRC32C, nil, data)); err != nil {
			t.Fatalf("replica %d: %v", id, err)
		}
		if err := w.finish(); err != nil {
			t.Fatalf("replica %d: %v", id, err)
		}
	}
	if _, free, _ = s.vols[0].statfs(); free < 32<<20+fullBelow-1<<20 {
		t.Fatalf("%d replicas of 1 MiB left %d bytes free, under the reserve", id-1, free)
	}
	if id == 64 {
		t.Fatal("the reserve never stopped a replica")
	}
}

// A volume whose check hangs (a disk that stops answering) counts as
// failed after checkTimeout; the others go on.
func TestHungVolumeFails(t *testing.T) {
	good, hung := t.TempDir(), t.TempDir()
	s, err := testStore(t, good, hung)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	s.check = func(v *volume) error {
		if filepath.Dir(v.root) == hung {
			<-release
		}
		return v.check()
	}
	defer func(d time.Duration) { checkTimeout = d }(checkTimeout)
	checkTimeout = 50 * time.Millisecond
	_, failed := s.checkVolumes()
	if len(failed) != 1 || failed[hung] == nil {
		t.Fatalf("failed %v; want %s, whose check hangs", failed, hung)
	}
	if _, free := s.capacity(); free == 0 {
		t.Fatal("the working volume's space is not offered any more")
	}
}

// A deleted replica's block file leaves the block's place at once (a new
// replica of the block can be written right away) and the disk in the
// background, a step at a time; what a stop or a crash left in the trash
// goes after the next start, and is no replica.
func TestRemoveThroughTrash(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.deletePause = time.Hour // one step, then held until the store closes
	data := make([]byte, 2*datasync.RemoveStep+1<<20)
	rand.Read(data)
	writeReplica(t, s, 42, data)
	r, _ := s.get(42)
	fin := r.dir.finalizedDir(42)
	if removed, err := s.remove(42, 1001); !removed || err != nil {
		t.Fatalf("remove: %v %v", removed, err)
	}
	for _, name := range []string{blockFileName(42), metaFileName(42, 1001)} {
		if _, err := os.Stat(filepath.Join(fin, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after remove: %v", name, err)
		}
	}
	writeReplica(t, s, 42, data[:1000])
	if r, ok := s.get(42); !ok || r.length != 1000 {
		t.Fatalf("the new replica: %+v %v", r, ok)
	}
	trash := filepath.Join(dir, "current", "trash")
	// The deleter shrinks the old block file by a step, then waits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(trash)
		if len(ents) == 1 {
			if fi, err := ents[0].Info(); err == nil && fi.Size() == int64(len(data))-datasync.RemoveStep {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trash holds %v, want the old block file less a step", ents)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Used space counts the file until it is gone, as HDFS's DfsUsed does.
	if used, n := s.usage(); used != 1000+int64(len(data)) || n != 1 {
		t.Fatalf("usage with the old block file in the trash: %d bytes, %d replicas", used, n)
	}
	s.close()
	if ents, _ := os.ReadDir(trash); len(ents) != 1 {
		t.Fatalf("after a stop the trash holds %v, want the file left", ents)
	}

	// Reopened: not a replica, and removed.
	s2, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := s2.get(42); !ok || r.length != 1000 {
		t.Fatalf("the new replica after a restart: %+v %v", r, ok)
	}
	waitEmpty(t, trash)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		used, _ := s2.usage()
		if used == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage with the trash empty: %d bytes, want 1000", used)
		}
	}
}

// waitEmpty waits up to 10 s for dir to have no entries.
func waitEmpty(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %v", dir, ents)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
