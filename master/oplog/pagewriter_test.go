package oplog

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/godfs/godfs/internal/datasync"
)

// writeRecorder keeps the offsets and lengths of the writes to a file.
type writeRecorder struct {
	f      *os.File
	writes [][2]int64
}

func (r *writeRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, [2]int64{off, int64(len(p))})
	return r.f.WriteAt(p, off)
}

// Whatever the records' sizes and wherever the flushes fall (a sync's, or
// add's when the buffer is full), the file holds the records and zeros
// after them, every write is of whole pages (up to where the blocks are
// written), and a writer made again after a reopen goes on where the
// records end.
func TestPageWriterWritesWholePages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "segment")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const written = 4 << 20 // zeroed ahead, as a segment's blocks are
	if _, err := f.Write(make([]byte, written)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	for round := 0; round < 3; round++ {
		w, err := newPageWriter(f, int64(len(want)))
		if err != nil {
			t.Fatal(err)
		}
		rec := &writeRecorder{f: f}
		w.out = rec
		for i := 0; i < 300; i++ {
			p := make([]byte, 1+rng.IntN(3000))
			for j := range p {
				p[j] = byte(1 + rng.IntN(255))
			}
			w.add(written, p)
			want = append(want, p...)
			// Round 1 leaves the flushes to add, when its buffer fills.
			if round != 1 && rng.IntN(3) == 0 {
				if err := w.flush(written); err != nil {
					t.Fatal(err)
				}
				if w.end() != int64(len(want)) || w.Buffered() != 0 {
					t.Fatalf("after a flush: end %d, %d buffered; want end %d", w.end(), w.Buffered(), len(want))
				}
			}
		}
		if err := w.flush(written); err != nil {
			t.Fatal(err)
		}
		for _, wr := range rec.writes {
			if wr[0]%datasync.PageSize != 0 || (wr[1]%datasync.PageSize != 0 && wr[0]+wr[1] != written) {
				t.Fatalf("write of %d bytes at %d: not whole pages", wr[1], wr[0])
			}
		}
		got, err := io.ReadAll(io.NewSectionReader(f, 0, written))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(want)], want) {
			t.Fatalf("round %d: the file does not hold the records written", round)
		}
		if bytes.ContainsFunc(got[len(want):], func(r rune) bool { return r != 0 }) {
			t.Fatalf("round %d: not zeros after the records", round)
		}
	}
}

// Zeros go no further than the blocks written: past them a write would
// grow the file, which the sync after it would have to record.
func TestPageWriterPadsNoFurtherThanWritten(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "segment"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _ := newPageWriter(f, 0)
	w.add(1000, bytes.Repeat([]byte{7}, 100))
	if err := w.flush(1000); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 1000 {
		t.Fatalf("file of %d bytes, want 1000: zeros past the written blocks", fi.Size())
	}
	w.add(1000, bytes.Repeat([]byte{8}, 2000))
	if err := w.flush(1000); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 2100 {
		t.Fatalf("file of %d bytes, want 2100: records past the written blocks, nothing after", fi.Size())
	}
}
