package datanode

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/godfs/godfs/protocol"
	"github.com/godfs/godfs/protocol/pb"
	"github.com/godfs/godfs/protocol/xfer"
)

// A big replica written through the stage reads back the same while it is
// being written (from the stage, from the piece being written and from the
// file), after rewinds to before what the stage holds and after finishing,
// whether or not the file system takes O_DIRECT.
func TestBigReplicaThroughStage(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := map[bool]string{true: "direct", false: "page cache"}[direct]
		t.Run(name, func(t *testing.T) {
			s, err := testStore(t, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			s.vols[0].noDirect.Store(!direct)
			data := make([]byte, 3*stageSize+inlineMax+12345)
			rand.Read(data)
			w, err := s.create(7, 1001, pb.ChecksumTypeProto_CHECKSUM_CRC32C)
			if err != nil {
				t.Fatal(err)
			}
			write := func(b []byte) {
				t.Helper()
				if err := w.write(b, xfer.ChunkSums(xfer.CRC32C, nil, b)); err != nil {
					t.Fatal(err)
				}
			}
			// Packets of odd whole-chunk sizes, so that stages fill in the
			// middle of a packet; a reader looks after each.
			const packet = 61 * protocol.BytesPerChecksum
			off := 0
			for off+packet <= inlineMax+stageSize+1000 {
				write(data[off : off+packet])
				off += packet
				if off%(7*packet) == 0 {
					if got := readAll(t, s, 7); !bytes.Equal(got, data[:off]) {
						t.Fatalf("read of %d bytes being written differs", off)
					}
				}
			}
			if direct && w.stage == nil {
				t.Fatal("no stage: O_DIRECT refused by the test's file system?")
			}
			// A partial chunk, then the chunk resent whole (an hflush), with
			// the stage just written out behind it.
			write(data[off : off+100])
			if err := w.rewind(int64(off)); err != nil {
				t.Fatal(err)
			}
			// Cut back across the piece just written (as recovery does).
			back := off - stageSize/2
			back -= back % protocol.BytesPerChecksum
			if err := w.truncate(int64(back)); err != nil {
				t.Fatal(err)
			}
			w.visible.Store(int64(back))
			if got := readAll(t, s, 7); !bytes.Equal(got, data[:back]) {
				t.Fatal("read after cutting back differs")
			}
			// finishFrom writes the rest from off, finishes and reads back.
			// Before finishing, a packet's worth of data goes into the
			// stage unrecorded, as when it fails its checksums: it must
			// not end up in the replica.
			finishFrom := func(off int, what string) {
				t.Helper()
				for ; off < len(data); off += packet {
					write(data[off:min(off+packet, len(data))])
				}
				if w.stage != nil {
					if err := w.stage.add(data[:stageSize]); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.finish(); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, s, 7); !bytes.Equal(got, data) {
					t.Fatalf("%s replica differs", what)
				}
				fi, err := os.Stat(filepath.Join(s.vols[0].finalizedDir(7), blockFileName(7)))
				if err != nil || fi.Size() != int64(len(data)) {
					t.Fatalf("%s replica's data file: %v, %v bytes, want %d", what, err, fi.Size(), len(data))
				}
			}
			finishFrom(back, "finished")
			// Recovery reopens it, cuts it and writes on through a new stage.
			acked := len(data) - stageSize
			acked -= acked % protocol.BytesPerChecksum
			w, err = s.reopen(7, 1001, 1002, int64(acked))
			if err != nil {
				t.Fatal(err)
			}
			finishFrom(acked, "recovered")
		})
	}
}
