package datanode

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

func TestInlineLengthInvertsSize(t *testing.T) {
	valid := map[int64]bool{}
	for n := int64(0); n <= 3*protocol.BytesPerChecksum+1; n++ {
		size := inlineSize(n)
		valid[size] = true
		if got, ok := inlineLength(size); !ok || got != n {
			t.Fatalf("inlineLength(inlineSize(%d) = %d) = %d, %v", n, size, got, ok)
		}
	}
	if got, ok := inlineLength(inlineSize(inlineMax)); !ok || got != inlineMax {
		t.Fatalf("inlineMax: %d %v", got, ok)
	}
	if _, ok := inlineLength(inlineSize(inlineMax + 1)); ok {
		t.Fatal("a size beyond inlineMax taken")
	}
	// Sizes no replica has (a file cut or grown by damage) are refused.
	for size := int64(-1); size < inlineSize(3*protocol.BytesPerChecksum); size++ {
		if _, ok := inlineLength(size); ok != valid[size] {
			t.Fatalf("inlineLength(%d) ok = %v, want %v", size, ok, valid[size])
		}
	}
}

func TestParseReplicaName(t *testing.T) {
	for _, c := range []struct {
		name   string
		id, gs uint64
		inline bool
		ok     bool
	}{
		{"blk_7_1001.meta", 7, 1001, false, true},
		{"blk_7_1001.block", 7, 1001, true, true},
		{"blk_7", 0, 0, false, false},
		{"blk_7_x.block", 0, 0, false, false},
		{"blk_7_1001.blockx", 0, 0, false, false},
		{"notes.txt", 0, 0, false, false},
	} {
		id, gs, inline, ok := parseReplicaName(c.name)
		if ok != c.ok || ok && (id != c.id || gs != c.gs || inline != c.inline) {
			t.Errorf("%s: %d %d %v %v", c.name, id, gs, inline, ok)
		}
	}
}

// finalizedFiles lists the names of the files in finalized/ of dir.
func finalizedFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	filepath.WalkDir(filepath.Join(dir, "current", "finalized"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := d.Info()
			out[d.Name()] = fi.Size()
		}
		return nil
	})
	return out
}

// readAll reads a replica back through its reader, verifying checksums.
func readAll(t *testing.T, s *store, id uint64) []byte {
	t.Helper()
	rr, err := s.open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	var got []byte
	if err := rr.eachPacket(func(_ int64, data, _ []byte) error {
		got = append(got, data...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestSmallReplicaIsOneFile: a replica of more than packMax and at most
// inlineMax bytes is one file holding its data, checksums and header,
// read back, indexed at start, and deleted whole; a bigger one is HDFS's
// two files.
func TestSmallReplicaIsOneFile(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	small := make([]byte, packMax+4096+100)
	big := make([]byte, inlineMax+protocol.BytesPerChecksum)
	rand.Read(small)
	rand.Read(big)
	writeReplica(t, s, 1, small)
	writeReplica(t, s, 2, big)
	want := map[string]int64{
		"blk_1_1001.block": inlineSize(int64(len(small))),
		"blk_2":            int64(len(big)),
		"blk_2_1001.meta":  metaHeaderSize + xfer.NumChunks(int64(len(big)))*protocol.ChecksumSize,
	}
	got := finalizedFiles(t, dir)
	if len(got) != len(want) {
		t.Fatalf("finalized files %v, want %v", got, want)
	}
	for name, size := range want {
		if got[name] != size {
			t.Fatalf("finalized files %v, want %v", got, want)
		}
	}
	s2, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	for id, data := range map[uint64][]byte{1: small, 2: big} {
		if r, ok := s2.get(id); !ok || r.length != int64(len(data)) || r.inline != (id != 2) {
			t.Fatalf("block %d after restart: %+v %v", id, r, ok)
		}
		if got := readAll(t, s2, id); !bytes.Equal(got, data) {
			t.Fatalf("block %d read back differs", id)
		}
	}
	for id := range uint64(2) {
		if removed, err := s2.remove(id+1, 1001); !removed || err != nil {
			t.Fatalf("remove %d: %v %v", id+1, removed, err)
		}
	}
	if got := finalizedFiles(t, dir); len(got) != 0 {
		t.Fatalf("files left after removing every replica: %v", got)
	}
}

// TestReadSmallReplicaBeingWritten reads a one-file replica before it is
// finished, its checksums still in the writer's memory, and after it grew
// into two files.
func TestReadSmallReplicaBeingWritten(t *testing.T) {
	s, err := testStore(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, inlineMax+2*protocol.BytesPerChecksum)
	rand.Read(data)
	w, err := s.create(5, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
	if err != nil {
		t.Fatal(err)
	}
	first := data[:inlineMax]
	if err := w.write(first, xfer.ChunkSums(xfer.CRC32C, nil, first)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 5); !bytes.Equal(got, first) {
		t.Fatalf("read %d bytes of the replica being written, want %d", len(got), len(first))
	}
	rest := data[inlineMax:]
	if err := w.write(rest, xfer.ChunkSums(xfer.CRC32C, nil, rest)); err != nil {
		t.Fatal(err)
	}
	if w.meta == nil {
		t.Fatal("a replica beyond inlineMax still keeps its checksums in memory")
	}
	if got := readAll(t, s, 5); !bytes.Equal(got, data) {
		t.Fatal("replica being written read back wrong after it grew")
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 5); !bytes.Equal(got, data) {
		t.Fatal("finished replica read back wrong")
	}
}

// TestReopenSmallReplica: pipeline recovery reopens a one-file replica,
// cuts it to what was acknowledged, and the writer goes on from there.
func TestReopenSmallReplica(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, packMax+3000)
	rand.Read(data)
	writeReplica(t, s, 9, data)
	w, err := s.reopen(9, 1001, 1002, packMax+1024)
	if err != nil {
		t.Fatal(err)
	}
	more := make([]byte, 700)
	rand.Read(more)
	if err := w.write(more, xfer.ChunkSums(xfer.CRC32C, nil, more)); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data[:packMax+1024]...), more...)
	if got := readAll(t, s, 9); !bytes.Equal(got, want) {
		t.Fatal("reopened replica read back wrong")
	}
	if got := finalizedFiles(t, dir); len(got) != 1 || got["blk_9_1002.block"] != inlineSize(int64(len(want))) {
		t.Fatalf("finalized files after recovery: %v", got)
	}
}

// TestCheckSizeFindsDamagedSmallReplica: a one-file replica that lost or
// gained bytes is corrupt, for the scanner.
func TestCheckSizeFindsDamagedSmallReplica(t *testing.T) {
	dir := t.TempDir()
	s, err := testStore(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	writeReplica(t, s, 4, make([]byte, packMax+2000))
	rr, err := s.open(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := rr.checkSize(); err != nil {
		t.Fatalf("intact replica: %v", err)
	}
	rr.Close()
	p := filepath.Join(s.vols[0].finalizedDir(4), inlineFileName(4, 1001))
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{1})
	f.Close()
	rr, err = s.open(4)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	if err := rr.checkSize(); !errors.Is(err, protocol.ErrCorruption) {
		t.Fatalf("grown replica: %v, want corruption", err)
	}
}
